"""Images per second of the one-step model, the unified LoRA at 1, 2, 4 and 8 steps and the teacher
at 50 guided DDIM steps, at batch 1 and batch 16, measured in one run (issue 14, item 5).

LoRAs are fused into the UNet for the timing (`fuse_lora`, as a deployment would), so every row
runs the same network. Each cell: one warm-up call, then the median over --repeats timed calls;
the speed-up is the ratio of medians to the teacher's at the same batch.

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

from hypersd.assets import ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE, UNIFIED_LORA
from hypersd.inference.sample import generate
from hypersd.inference.settings import SampleSettings
from hypersd.inference.unet_file import is_unet_file
from hypersd.models.pipelines import load_pipeline, load_unet_file
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts


def rows(one_step: Path, unified: Path) -> list[tuple[str, SampleSettings, Path | None]]:
    teacher = SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE)
    out = [("teacher DDIM @50, guidance 5", teacher, None),
           ("one-step model @1 (LCM t 800)", SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800]),
            one_step)]
    out += [(f"unified @{s} (TCD eta 0.3)", SampleSettings(steps=s, scheduler="tcd", guidance=0.0, eta=0.3), unified)
            for s in (1, 2, 4, 8)]
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


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one-step", type=Path, default=ONE_STEP_MODEL)
    parser.add_argument("--unified", type=Path, default=UNIFIED_LORA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--out", default="speed")
    args = parser.parse_args()
    for path in (args.one_step, args.unified):
        if not path.is_file():
            raise SystemExit(f"model file not found: {path}")
    results = []
    for label, settings, lora in rows(args.one_step, args.unified):
        pipe = load_pipeline(TEACHER)
        if lora is not None and is_unet_file(lora):  # a full one-step UNet replaces the base's
            load_unet_file(pipe, lora)
        elif lora is not None:
            pipe.load_lora_weights(str(lora))
            pipe.fuse_lora()
            pipe.unload_lora_weights()  # the fused weights stay; no adapter layers left to run
        for batch in args.batches:
            rate = time_row(pipe, settings, batch, args.repeats)
            results.append({"label": label, "batch": batch, "images_per_s": rate})
            print(f"{label} batch {batch}: {rate:.2f} images/s")
    for r in results:
        teacher = next(x for x in results if x["batch"] == r["batch"] and x["label"].startswith("teacher"))
        r["speedup_vs_teacher"] = r["images_per_s"] / teacher["images_per_s"]
    summary = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                          f"{torch.__version__}, threads {torch.get_num_threads()}",
               "repeats": args.repeats, "rows": results}
    lines = ["# Sampling speed: one-step model, unified LoRA, teacher", "",
             f"{summary['machine']}; 32x32 images; median of {args.repeats} timed calls after one warm-up; LoRAs "
             "fused. Speed-up: ratio of medians to the teacher's 50 guided steps at the same batch, same run.", "",
             "| model | batch | images/s | speed-up vs teacher @50 |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['batch']} | {r['images_per_s']:.2f} | {r['speedup_vs_teacher']:.1f}x |"
              for r in results]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / args.out}.md")


if __name__ == "__main__":
    main()
