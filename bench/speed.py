"""Images per second of the one-step model, the unified LoRA at 1, 2, 4 and 8 steps and the teacher
at 50 guided DDIM steps, at batch 1 and batch 16, measured in one run (issue 14, item 5).

LoRAs are fused into the UNet for the timing (`fuse_lora`, as a deployment would), so every row
runs the same network; the one-step model is a full UNet file (or a LoRA). With a tiny VAE (the shipped
`assets/tiny-vae`, or --tiny-vae), the one-step model is timed a second time decoding with it. Each cell:
one warm-up call, then the median over --repeats timed calls; the speed-up is the ratio of medians to the
teacher's at the same batch. The one-step call at the largest batch is also split into its parts (text
encoder, UNet, VAE decoder, the rest), each the median of --repeats timed calls of that part alone.

    python bench/speed.py                    # the shipped models in assets/; bench/results/speed.{json,md}
    python bench/speed.py --one-step A --unified B --repeats 3
Quote it only from a run that had the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import RESULTS  # bench/common.py

from hypersd.assets import ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE, TINY_VAE, UNIFIED_LORA
from hypersd.inference.sample import generate
from hypersd.inference.settings import SampleSettings
from hypersd.inference.unet_file import is_unet_file
from hypersd.models.pipelines import load_pipeline, load_unet_file
from hypersd.models.tiny_vae import with_tiny_vae
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts


def rows(one_step: Path, unified: Path, tiny_vae: Path | None) -> list[tuple[str, SampleSettings, Path | None,
                                                                           Path | None]]:
    """(label, settings, the model file (LoRA or one-step UNet) or None for the teacher, tiny VAE or None)."""
    teacher = SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE)
    one = SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800])
    out = [("teacher DDIM @50, guidance 5", teacher, None, None), ("one-step model @1 (LCM t 800)", one, one_step, None)]
    if tiny_vae is not None:
        out.append(("one-step model @1, tiny VAE decoder", one, one_step, tiny_vae))
    out += [(f"unified @{s} (TCD eta 0.3)", SampleSettings(steps=s, scheduler="tcd", guidance=0.0, eta=0.3), unified,
             None) for s in (1, 2, 4, 8)]
    return out


def time_row(pipe, settings: SampleSettings, batch: int, repeats: int) -> float:
    """Median images per second over `repeats` calls of one batch (after one warm-up call)."""
    prompts = standard_prompts()[:batch]
    settings = replace(settings, batch_size=batch)
    generate(pipe, prompts, settings, list(range(batch)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(pipe, prompts, settings, list(range(batch)))
        rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.no_grad()
def breakdown(pipe, settings: SampleSettings, batch: int, repeats: int) -> dict:
    """Milliseconds of one call of `batch` images, and of its text encoding, UNet forward and decoding alone."""
    prompts = standard_prompts()[:batch]
    size = pipe.unet.config.sample_size
    latents = torch.randn(batch, pipe.unet.config.in_channels, size, size)
    embeds = pipe.encode_prompt(prompts, "cpu", 1, False)[0]
    t = torch.full((batch,), 800)
    parts = {"call": median_ms(lambda: generate(pipe, prompts, replace(settings, batch_size=batch),
                                                 list(range(batch))), repeats),
             "text encoder": median_ms(lambda: pipe.encode_prompt(prompts, "cpu", 1, False), repeats),
             "UNet": median_ms(lambda: pipe.unet(latents, t, encoder_hidden_states=embeds), repeats),
             "VAE decoder": median_ms(lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor), repeats)}
    parts["rest"] = parts["call"] - parts["text encoder"] - parts["UNet"] - parts["VAE decoder"]
    return {k: round(v, 1) for k, v in parts.items()}


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one-step", type=Path, default=ONE_STEP_MODEL)
    parser.add_argument("--unified", type=Path, default=UNIFIED_LORA)
    parser.add_argument("--tiny-vae", type=Path, default=TINY_VAE if TINY_VAE.is_dir() else None,
                        help="a tiny VAE folder: adds the one-step model decoding with it (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--out", default="speed")
    args = parser.parse_args()
    for path in (args.one_step, args.unified):
        if not path.is_file():
            raise SystemExit(f"model file not found: {path}")
    results, parts = [], {}
    for label, settings, lora, tiny_vae in rows(args.one_step, args.unified, args.tiny_vae):
        pipe = load_pipeline(TEACHER)
        if lora is not None and is_unet_file(lora):  # a full one-step UNet replaces the base's
            load_unet_file(pipe, lora)
        elif lora is not None:
            pipe.load_lora_weights(str(lora))
            pipe.fuse_lora()
            pipe.unload_lora_weights()  # the fused weights stay; no adapter layers left to run
        if tiny_vae is not None:
            pipe = with_tiny_vae(pipe, tiny_vae)
        for batch in args.batches:
            rate = time_row(pipe, settings, batch, args.repeats)
            results.append({"label": label, "batch": batch, "images_per_s": rate})
            print(f"{label} batch {batch}: {rate:.2f} images/s")
        if label.startswith("one-step"):
            parts[label] = breakdown(pipe, settings, max(args.batches), args.repeats)
            print(f"{label}: {parts[label]} ms")
    for r in results:
        teacher = next(x for x in results if x["batch"] == r["batch"] and x["label"].startswith("teacher"))
        r["speedup_vs_teacher"] = r["images_per_s"] / teacher["images_per_s"]
    summary = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                          f"{torch.__version__}, threads {torch.get_num_threads()}",
               "repeats": args.repeats, "rows": results, "one_step_call_ms": parts,
               "tiny_vae": str(args.tiny_vae) if args.tiny_vae else None}
    lines = ["# Sampling speed: one-step model, unified LoRA, teacher", "",
             f"{summary['machine']}; 32x32 images; median of {args.repeats} timed calls after one warm-up; LoRAs "
             "fused. Speed-up: ratio of medians to the teacher's 50 guided steps at the same batch, same run.", "",
             "| model | batch | images/s | speed-up vs teacher @50 |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['batch']} | {r['images_per_s']:.2f} | {r['speedup_vs_teacher']:.1f}x |"
              for r in results]
    if parts:
        names = list(next(iter(parts.values())))
        lines += ["", f"One-step call at batch {max(args.batches)}, milliseconds (median of {args.repeats}; each part "
                  "timed alone; rest = call minus the parts: scheduler, latents, image conversion; with few repeats the parts' "
                  "medians are noisy, and a negative rest means they add up to more than the call's):", "",
                  "| decoder | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {'tiny VAE' if 'tiny' in label else 'VAE'} | " + " | ".join(f"{p[n]:.1f}" for n in names) + " |"
                  for label, p in parts.items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / args.out}.md")


if __name__ == "__main__":
    main()
