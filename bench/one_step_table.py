"""The dedicated one-step model and the unified LoRA (issue 14): every recipe tried, on the full
evaluator in one run, so that every pair of rows is a paired comparison (same prompts, same seeds):

- DMD2 alone (configs/dmd2-one-step.yaml from the base model) against TSCD + DMD2 (from TSCD's k1
  LoRA): the Table 5 analogue at one step;
- DMD's regression loss on teacher pairs alone (configs/one-step-regression.yaml), and DMD2 with it
  (configs/one-step-dmd-regression.yaml, from the regression LoRA);
- the same regression alone with a full-UNet generator (dmd.generator: unet): the shipped one-step
  model (its fp16 file), also decoded by a tiny VAE when assets/tiny-vae holds one; further full-UNet
  rows (--unet-row: a UNet file, a full-UNet checkpoint's generator.safetensors or a pipeline folder);
- the unified LoRA at 1, 2, 4 and 8 steps: the one shipped until fa96fb9 (read from git) against it continued with the regression
  loss at its one-step jump (configs/unified-regression.yaml), and against a second training seed of its
  recipe (bench/runs/long/unified-demo-s1, when trained);
- the teacher at 50 guided steps; ratios to it against the issue's targets (one-step model: ShapesEval
  >= 0.85x, FD <= 1.1x; unified @1 >= 0.6x, @2 >= 0.9x); quick ShapesEval (120 prompts) against
  training hours from every run's log.

    python bench/one_step_table.py
    python bench/one_step_table.py --row "NAME=RUN/snapshots/FILE.safetensors" ...   # other LoRA rows
    python bench/one_step_table.py --unet-row "NAME=RUN/checkpoints/s00-0000400/generator.safetensors"
Writes bench/results/one_step_table.{json,md,png} and one_step_curves.png.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import (  # bench/common.py
    RESULTS,
    RUNS,
    compare_rows,
    comparison_table,
    previous_unified_lora,
    write_results,
)
from dmd2 import plot_curves  # bench/dmd2.py

from hypersd.assets import EVALUATOR, ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE, TINY_VAE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.curves import progress_series, read_log

LONG = RUNS / "long"
TEACHER_ROW = "teacher DDIM @50"
ROWS = {  # label -> (run, snapshot step)
    "DMD2 alone (from the base), 700 it": ("dmd2-one-step-base-s0", 700),
    "TSCD + DMD2, 300 it (LoRA shipped before)": ("dmd2-one-step-tscd-s0", 300),
    "regression alone, 500 it": ("one-step-regression-s0", 500),
    "DMD2 + regression, 150 it": ("one-step-dmd-regression-s0", 150),
}
UNET_ROW = "DMD2 + regression from the regression UNet, 350 it (shipped, fp16)"
TINY_ROW = "the shipped one-step model, tiny VAE decoder"
FULL_UNET = {  # the full-UNet runs before the shipped one (pipeline folders and checkpoint generators)
    "regression alone, full UNet, 1500 it": LONG / "one-step-regression-unet-s0" / "one-step-t800-unet",
    "regression continued on 12,000 pairs, 800 it":
        LONG / "one-step-regression-unet-12k-s0" / "checkpoints" / "s00-0000800" / "generator.safetensors",
    "regression alone, full UNet, 1500 it, seed 1": LONG / "one-step-regression-unet-s1" / "one-step-t800-unet",
    "DMD2 + regression from the regression UNet, 350 it, seed 1":
        LONG / "one-step-dmd-regression-unet-s1" / "checkpoints" / "s00-0000350" / "generator.safetensors",
}
SEED_PAIRS = [  # the headline one-step comparison (DMD2 + regression over the regression UNet it starts from) per seed
    (UNET_ROW, "regression alone, full UNet, 1500 it"),
    ("DMD2 + regression from the regression UNet, 350 it, seed 1", "regression alone, full UNet, 1500 it, seed 1"),
]
UNIFIED_SEED_1 = "unified, make demo's recipe, seed 1"  # configs/demo-hyper.yaml, training.seed=1, stages.5.iterations=150
UNIFIED = {"unified (shipped)": previous_unified_lora(),
           "unified + regression, 400 it": LONG / "unified-regression-s0" / "loras" / "dmd-unified.safetensors",
           UNIFIED_SEED_1: LONG / "unified-demo-s1" / "loras" / "dmd-unified.safetensors"}
CURVES = ["dmd2-one-step-base-s0", "dmd2-one-step-tscd-s0", "one-step-regression-s0", "one-step-regression-unet-s0",
          "one-step-dmd-regression-s0", "unified-regression-s0", "one-step-dmd-regression-unet-s0",
          "one-step-regression-unet-12k-s0", "one-step-regression-unet-s1", "one-step-dmd-regression-unet-s1"]
TARGETS = {"shapes_eval": 0.85, "fd": 1.1}


def shipped_timesteps(steps: int) -> list[int] | None:
    """The timesteps the shipped unified LoRA's metadata names at `steps`: every unified row samples there,
    so that the unified rows compare at the same schedule (bench/unified_schedule.py chose it)."""
    return metadata_settings(previous_unified_lora(), steps).timesteps


def snapshot(run: str, step: int) -> Path:
    return LONG / run / "snapshots" / f"one-step-t800-{step:07d}.safetensors"


def ratios(summary: dict) -> list[str]:
    teacher = next(r for r in summary["rows"] if r["label"] == TEACHER_ROW)
    acc, fd = teacher["shapes_eval"]["overall"], teacher["fd"]
    lines = ["Targets: one-step model ShapesEval >= 0.85x and FD <= 1.1x the teacher's; unified @1 >= 0.6x, @2 >= 0.9x, "
             "@4 and @8 no worse than 0.427 / 0.485 within the interval. The bracket is the row's 95% interval "
             "divided by the teacher's value.", "",
             "| model | ShapesEval / teacher | FD / teacher |", "|---|---|---|"]
    for r in summary["rows"]:
        if r["label"] != TEACHER_ROW:
            lo, hi = r["shapes_eval_ci95"]
            lines.append(f"| {r['label']} | {r['shapes_eval']['overall'] / acc:.2f}x [{lo / acc:.2f}, {hi / acc:.2f}] | "
                         f"{r['fd'] / fd:.2f}x |")
    return lines


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", default=[], help="LABEL=LORA_FILE, an extra row")
    parser.add_argument("--unet-row", action="append", default=[], help="LABEL=UNET (file, checkpoint generator "
                        "file or pipeline folder), an extra one-step row")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    files = {label: snapshot(*where) for label, where in ROWS.items()}
    files.update(dict(item.split("=", 1) for item in args.row))
    missing = [f"{label}: {path}" for label, path in files.items() if not Path(path).is_file()]
    if missing:
        raise SystemExit("missing snapshots (bench/checkpoint_snapshot.py makes one from a checkpoint): "
                         + "; ".join(missing))
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    rows += [Row(label, metadata_settings(Path(path))) for label, path in files.items()]
    one_step = SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800])
    unets = {**{k: v for k, v in FULL_UNET.items() if Path(v).exists()}, UNET_ROW: ONE_STEP_MODEL,
             **dict(item.split("=", 1) for item in args.unet_row)}
    rows += [Row(label, one_step, unet=Path(path)) for label, path in unets.items()]
    if TINY_VAE.is_dir():
        rows.append(Row(TINY_ROW, one_step, unet=ONE_STEP_MODEL, vae=TINY_VAE))
    for label, lora in UNIFIED.items():
        if Path(lora).is_file():
            rows += [Row(f"{label} @{n}", replace(metadata_settings(Path(lora), n), timesteps=shipped_timesteps(n)))
                     for n in (1, 2, 4, 8)]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "one-step-table", n_real=args.n_real)
    summary["files"] = {k: str(v) for k, v in {**files, **unets}.items()}
    labels = [*files, *unets]
    pairs = [("TSCD + DMD2, 300 it (LoRA shipped before)", "DMD2 alone (from the base), 700 it")]
    pairs += [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:] if (a, b) != pairs[0] and (b, a) != pairs[0]]
    pairs += [(TINY_ROW, UNET_ROW)] if TINY_VAE.is_dir() else []
    shipped, *others = [name for name, lora in UNIFIED.items() if Path(lora).is_file()]
    pairs += [(f"{other} @{n}", f"{shipped} @{n}") for other in others if other != UNIFIED_SEED_1 for n in (1, 2, 4, 8)]
    summary["comparisons"] = compare_rows(summary, prompts, pairs)
    seed_pairs = SEED_PAIRS + [(f"{UNIFIED_SEED_1} @{n}", f"{shipped} @{n}") for n in (1, 2, 4, 8)
                               if UNIFIED_SEED_1 in others]
    summary["seed_comparisons"] = compare_rows(summary, prompts, seed_pairs)
    summary["curves"] = {f"{run} {label.split(' ', 1)[1]}": points for run in CURVES if (LONG / run).is_dir()
                         for label, points in progress_series(read_log(LONG / run))[1].items()}
    lines = ["# The dedicated one-step model: every recipe tried (issue 14)", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval over prompts), FD against "
             f"{args.n_real} real renders (± sd over 5 bootstrap resamples of the generated set); every row is the "
             "model named at its metadata's settings (one-step rows: LCM at timestep 800; unified rows: TCD, eta 0.3, "
             "at the steps named and the timesteps the shipped unified LoRA names for them: "
             "bench/results/unified_schedule.md).", "",
             markdown_table(summary), *ratios(summary), "",
             "Two training seeds of the shipped one-step model's two runs (seed 0 is the shipped file; seed 1 "
             "repeats both runs with `training.seed=1` from the same TSCD LoRA and teacher pairs), and of the "
             "unified LoRA (seed 1: `hypersd distill --recipe configs/demo-hyper.yaml --set training.seed=1 "
             "--set stages.5.iterations=150`, "
             "sampled at the shipped LoRA's timesteps):", "",
             *comparison_table(summary["seed_comparisons"])[2:], "", *comparison_table(summary["comparisons"]), "",
             "Quick ShapesEval (120 prompts) against training hours on the 2-core CPU: `one_step_curves.png`.", "",
             "Command: `python bench/one_step_table.py`"]
    write_results("one_step_table", summary, "\n".join(lines) + "\n")
    plot_curves(summary["curves"], RESULTS / "one_step_curves.png")


if __name__ == "__main__":
    main()
