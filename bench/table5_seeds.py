"""The Table 5 analogue at one step with a second training seed (issue 14): TSCD + DMD2 against DMD2
alone, seed 1, beside seed 0's rows of bench/results/one_step_table.json, with a per-seed and a
two-seed paired verdict.

Seed 0's rows are the snapshots of bench/one_step_table.py: DMD2 from TSCD's k1 LoRA (tscd-s0) at 300
iterations, and DMD2 from the base model at 700 (configs/dmd2-one-step.yaml, constant learning rate:
a run stopped at N iterations ends where a longer run's snapshot at N is; checked on 2026-11-29, a
100-iteration run against the 300-iteration run's snapshot at 100: largest weight difference 5e-6,
the two ran with different thread counts).
Seed 1 trains the same two runs to those budgets with `training.seed=1`, the first from tscd-s1's k1
LoRA (bench/tscd_ablation.py trains it), and scores them on the same prompts and sampling seeds, so each
prompt's pass/fail of seed 0 (read from one_step_table.json) pairs with seed 1's.

    python bench/table5_seeds.py                      # trains what is missing, then evaluates
    python bench/table5_seeds.py --train-only --run base   # one run only (two one-thread shares side by side)
Writes bench/results/table5_seeds.{json,md,png}; runs go to bench/runs/long/dmd2-one-step-{base,tscd}-s1-*.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import (  # bench/common.py
    RESULTS,
    ROOT,
    RUNS,
    across_seeds,
    compare_rows,
    comparison_table,
    shapes_eval_bars,
    train_or_reuse,
    write_results,
)

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.outputs import phase_lora
from hypersd.train.recipe import load_recipe

LONG = RUNS / "long"
SEED = 1
TSCD_LORA = LONG / f"tscd-s{SEED}" / "loras" / "tscd-k1.safetensors"
RUNS_BY_NAME = {  # name -> (label, iterations, init LoRA); the labels of seed 0 in one_step_table.json
    "tscd": ("TSCD + DMD2, 300 it", 300, TSCD_LORA),
    "base": ("DMD2 alone (from the base), 700 it", 700, None),
}
SEED_0_LABELS = {"tscd": "TSCD + DMD2, 300 it (LoRA shipped before)", "base": "DMD2 alone (from the base), 700 it"}
TEACHER_ROW = "teacher DDIM @50"


def run_dir(name: str) -> Path:
    return LONG / f"dmd2-one-step-{name}-s{SEED}-{RUNS_BY_NAME[name][1]}"


def train(name: str) -> dict:
    _, iterations, init = RUNS_BY_NAME[name]
    if init is not None and not init.is_file():
        raise SystemExit(f"missing {init}: train it first (python bench/tscd_ablation.py --train-only "
                         f"--methods tscd --seeds {SEED})")
    recipe = load_recipe(ROOT / "configs" / "dmd2-one-step.yaml",
                         [f"stages.0.iterations={iterations}", f"training.seed={SEED}"])
    return train_or_reuse(recipe, TEACHER, run_dir(name), init_lora=init)


def seed_0_rows(summary_file: Path) -> list[dict]:
    """Seed 0's two rows as one_step_table.json stores them (same prompts and sampling seeds), relabelled."""
    rows = {r["label"]: r for r in json.loads(summary_file.read_text())["rows"]}
    missing = [label for label in SEED_0_LABELS.values() if label not in rows]
    if missing:
        raise SystemExit(f"{summary_file} has no row {missing[0]!r}")
    return [{**rows[SEED_0_LABELS[name]], "label": f"{RUNS_BY_NAME[name][0]}, seed 0"} for name in RUNS_BY_NAME]


def pairs() -> list[tuple]:
    tscd, base = (RUNS_BY_NAME[n][0] for n in ("tscd", "base"))
    per_seed = [(f"{tscd}, seed {s}", f"{base}, seed {s}") for s in (0, SEED)]
    return [*per_seed, across_seeds(per_seed, f"{tscd}, seeds 0+{SEED}", f"{base}, seeds 0+{SEED}")]


def plot_bars(summary: dict, path: Path) -> None:
    """ShapesEval of each one-step row with its 95% interval, grouped by seed, the teacher's 50 steps as a line."""
    rows = [r for r in summary["rows"] if r["label"] != TEACHER_ROW]
    teacher = next(r for r in summary["rows"] if r["label"] == TEACHER_ROW)["shapes_eval"]["overall"]
    rows.sort(key=lambda r: (r["label"].split("seed ")[-1], r["label"]))
    colors = ["tab:orange" if r["label"].startswith("TSCD") else "tab:gray" for r in rows]
    labels = [r["label"].replace(" (from the base)", "").replace(", seed", "\nseed") for r in rows]
    shapes_eval_bars(rows, labels, colors, teacher, "One step: TSCD + DMD2 vs DMD2 alone, two training seeds", path,
                     figsize=(7, 4))


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=list(RUNS_BY_NAME), help="train (or resume) this run only")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--seed-0", type=Path, default=RESULTS / "one_step_table.json",
                        help="the summary holding seed 0's rows")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    training = {name: train(name) for name in ([args.run] if args.run else RUNS_BY_NAME)}
    if args.train_only:
        return
    prompts = standard_prompts()[: args.prompts]
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    rows += [Row(f"{label}, seed {SEED}", metadata_settings(phase_lora(run_dir(name), "one-step-t800")))
             for name, (label, _, _) in RUNS_BY_NAME.items()]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "table5-seeds", n_real=args.n_real)
    summary["rows"] += seed_0_rows(args.seed_0)
    summary["training"] = {name: {"run": str(run_dir(name)), "train_seconds": m["train_seconds"]}
                           for name, m in training.items()}
    summary["comparisons"] = compare_rows(summary, prompts, pairs())
    lines = ["# Table 5 analogue at one step, two training seeds", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval), FD against "
             f"{args.n_real} real renders (± sd over 5 resamples). Every distilled row: one LCM step at t = 800, "
             f"its LoRA's metadata. Seed 0's rows are read from `{args.seed_0.relative_to(ROOT)}` (same prompts and "
             "sampling seeds); seed 1's are trained and sampled here.", "", markdown_table(summary), "",
             "Training of seed 1 (wall time as it went; not a speed comparison):", ""]
    lines += [f"- {Path(t['run']).name}: {t['train_seconds'] / 60:.1f} min" for t in summary["training"].values()]
    lines += ["", *comparison_table(summary["comparisons"]), "",
              "The two-seed row averages each prompt's passes over the two seeds before the bootstrap "
              "(hypersd.core.intervals.seed_mean).", "", "Command: `python bench/table5_seeds.py`"]
    write_results("table5_seeds", summary, "\n".join(lines) + "\n", plot=plot_bars)


if __name__ == "__main__":
    main()
