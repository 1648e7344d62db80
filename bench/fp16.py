"""Does storing a LoRA (or a full one-step UNet) in fp16 lose anything measurable? The same weights in fp32 and cast to fp16,
sampled at its recommended settings (its metadata) on the same prompts and seeds: ShapesEval with the
paired difference and its 95% interval, FD, and the per-pixel difference between the two image sets.

    python bench/fp16.py --lora assets/hypersd-one-step/dmd-one-step-t800.safetensors --name one-step
    python bench/fp16.py --lora L --steps 1 2 4 8 --name unified     # the unified LoRA at each step count
    python bench/fp16.py --unet RUN/one-step-t800-unet --name one-step-unet   # a full-UNet one-step model
Writes bench/results/fp16-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, RUNS, compare_rows, comparison_table  # bench/common.py

from hypersd.assets import EVALUATOR, TEACHER
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings, one_step_row
from hypersd.inference.unet_file import export_unet
from hypersd.lora.files import LoraSpec, cast_lora
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--lora", type=Path)
    which.add_argument("--unet", type=Path, help="a full-UNet model: pipeline or UNet folder, or a weight file")
    parser.add_argument("--settings-from", type=Path, help="with --unet: the folder whose sampling settings apply")
    parser.add_argument("--name", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="step counts (default: its metadata's)")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    out = RUNS / f"fp16-{args.name}"
    with tempfile.TemporaryDirectory() as tmp:
        if args.unet is not None:  # both exported from the folder: fp32 keeps its weights exactly
            full, half = (export_unet(args.unet, Path(tmp) / f"{d}.safetensors", d, settings_from=args.settings_from)
                          for d in ("fp32", "fp16"))
            base = one_step_row("", full).settings
            rows = [Row("fp32 @1", base, unet=full), Row("fp16 @1", base, unet=half)]
            args.steps, source = [base.steps], full
        else:
            base = metadata_settings(args.lora)
            half, source = cast_lora(args.lora, Path(tmp) / "fp16.safetensors", "fp16"), args.lora
            rows = []
            for steps in args.steps or [base.steps]:
                settings = metadata_settings(args.lora, steps)
                rows += [Row(f"fp32 @{steps}", replace(settings, loras=[LoraSpec(args.lora)])),
                         Row(f"fp16 @{steps}", replace(settings, loras=[LoraSpec(half)]))]
        size = source.stat().st_size / 1e6
        prompts = standard_prompts()[: args.prompts]
        summary = evaluate(TEACHER, rows, prompts, EVALUATOR, out, n_real=args.n_real)
    steps_list = args.steps or [base.steps]
    summary["comparisons"] = compare_rows(summary, prompts, [(f"fp16 @{s}", f"fp32 @{s}") for s in steps_list])
    pixel = {}
    for s in steps_list:
        a, b = (np.stack([np.asarray(_image(out, r["samples"], i)) for i in range(len(prompts))])
                for r in summary["rows"] if r["label"] in (f"fp32 @{s}", f"fp16 @{s}"))
        diff = np.abs(a.astype(int) - b.astype(int))
        pixel[s] = {"mean_abs_diff_uint8": float(diff.mean()), "max_abs_diff_uint8": int(diff.max()),
                    "identical_images": float((diff.reshape(len(a), -1).max(1) == 0).mean())}
    summary["pixels"] = pixel
    lines = [f"# fp16 storage of `{args.unet or args.lora}`", "",
             f"{len(prompts)} prompts, same seeds; sizes: fp32 {size:.2f} MB.", "",
             markdown_table(summary), "", *comparison_table(summary["comparisons"]), "",
             "| steps | mean abs pixel difference (0-255) | max | images identical |", "|---|---|---|---|"]
    lines += [f"| {s} | {p['mean_abs_diff_uint8']:.3f} | {p['max_abs_diff_uint8']} | {p['identical_images']:.2f} |"
              for s, p in pixel.items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fp16-{args.name}.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / f"fp16-{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / f'fp16-{args.name}.md'}")


def _image(out: Path, samples: str, i: int):
    from PIL import Image

    folder = out / samples
    record = json.loads((folder / "samples.jsonl").read_text().splitlines()[i])
    return Image.open(folder / record["file"]).convert("RGB")


if __name__ == "__main__":
    main()
