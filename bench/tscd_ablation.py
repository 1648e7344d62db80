"""The TSCD ablation table (the analogue of Hyper-SD's Table 3, without feedback), on the shipped teacher.

Trains (resumes, or reuses finished runs of) three recipes with the same budget of teacher evaluations,
then scores every row on the ShapesEval prompt set: ShapesEval accuracy, FD and PSNR against the
teacher's 50-step sample, at 1, 2, 4 and 8 steps.

    python bench/tscd_ablation.py                   # configs/{tscd,lcm,tcd}.yaml, seeds 0 and 1, 600 prompts
    python bench/tscd_ablation.py --seeds 0         # one training seed
    python bench/tscd_ablation.py --quick           # tiny budgets, to check the script end to end
    python bench/tscd_ablation.py --train-only --methods lcm --seeds 0 1   # train a share only (run two
                                                    # such shares side by side with OMP_NUM_THREADS=1)

Rows: teacher DDIM at the same step counts (CFG on) and at 50 steps; LCM-style (LCM scheduler),
TCD-style (TCD scheduler, gamma 0.3), TSCD's final LoRA (DDIM trailing) at 1/2/4/8 steps and each
TSCD stage's LoRA at its own step count. Distilled rows sample without guidance.
Each method is trained with every seed (training.seed: LoRA initialisation, batches, noise); rows are
labelled with the seed, and TSCD is compared with TCD-style and LCM-style at 2 and 4 steps by a paired
bootstrap over prompts per seed and, with several seeds, over the seeds' per-prompt mean (an interval
holding 0 is a tie).
Writes bench/results/tscd_ablation.{json,md,png}; training runs go to bench/runs/long/<name>-s<seed>
(shared with bench/dmd2.py; not committed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import (  # bench/common.py
    ROOT,
    RUNS,
    across_seeds,
    compare_rows,
    comparison_table,
    train_or_reuse,
    write_results,
)

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate
from hypersd.embedded.rows import distilled_rows
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.recipe import load_recipe

STEPS = (1, 2, 4, 8)
METHODS = {  # recipe, scheduler and eta each method's LoRA is sampled with
    "LCM-style": ("lcm", "lcm", None),
    "TCD-style": ("tcd", "tcd", 0.3),
    "TSCD": ("tscd", "ddim-trailing", None),
}
RECIPES = tuple(recipe for recipe, _, _ in METHODS.values())
QUICK = ["stages.0.iterations=4", "data.pool_size=256", "training.batch_size=8"]


def train(name: str, seed: int, model: Path, quick: bool) -> tuple[Path, dict]:
    """Train configs/<name>.yaml with `seed` into bench/runs/long/<name>-s<seed> unless a finished run is there."""
    overrides = QUICK + [f"stages.{i}.iterations=4" for i in range(1, 4)] if quick else []
    overrides += [f"training.seed={seed}"] if seed else []
    recipe = load_recipe(ROOT / "configs" / f"{name}.yaml", [o for o in overrides if _fits(o, name)])
    out = RUNS / ("long-quick" if quick else "long") / f"{name}-s{seed}"
    return out, train_or_reuse(recipe, model, out)


def _fits(override: str, name: str) -> bool:
    """Quick overrides of stages 1-3 apply to the four-stage TSCD recipe only."""
    return name == "tscd" or not override.startswith(("stages.1", "stages.2", "stages.3"))


def rows_for(runs: dict[tuple[str, int], Path], seeds: list[int]) -> list[Row]:
    rows = [Row(f"teacher DDIM @{s}", SampleSettings(steps=s, scheduler="ddim", guidance=TEACHER_GUIDANCE))
            for s in (*STEPS, 50)]
    for seed in seeds:
        for label, (name, scheduler, eta) in METHODS.items():
            rows += distilled_rows(runs[name, seed], f"{label} s{seed}", STEPS, scheduler, eta,
                                   per_stage=name == "tscd")
    return rows


def pairs(seeds: list[int]) -> list[tuple]:
    """TSCD against TCD-style and LCM-style at 2 and 4 steps, per seed and, with several seeds, averaged
    over them per prompt (the two-seed headline)."""
    out = [(f"TSCD s{seed} @{steps}", f"{other} s{seed} @{steps}")
           for seed in seeds for steps in (2, 4) for other in ("TCD-style", "LCM-style")]
    if len(seeds) > 1:
        tag = "+".join(f"s{seed}" for seed in seeds)
        for steps in (2, 4):
            for other in ("TCD-style", "LCM-style"):
                per_seed = [(f"TSCD s{seed} @{steps}", f"{other} s{seed} @{steps}") for seed in seeds]
                out.append(across_seeds(per_seed, f"TSCD {tag} @{steps}", f"{other} {tag} @{steps}"))
    return out


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TEACHER)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    parser.add_argument("--methods", nargs="+", choices=RECIPES, default=list(RECIPES),
                        help="recipes to train (evaluation needs all three)")
    parser.add_argument("--train-only", action="store_true", help="train (or resume) the runs and stop")
    parser.add_argument("--quick", action="store_true", help="tiny budgets; results go to *-quick files")
    args = parser.parse_args()
    if set(args.methods) != set(RECIPES) and not args.train_only:
        parser.error("the evaluation needs all three methods; pass --train-only to train a share")
    if args.quick:
        args.prompts, args.n_real = min(args.prompts, 24), min(args.n_real, 100)
    runs, train_metrics = {}, {}
    for seed in args.seeds:
        for name in args.methods:
            runs[name, seed], train_metrics[f"{name}-s{seed}"] = train(name, seed, args.model, args.quick)
    if args.train_only:
        return
    suffix = "-quick" if args.quick else ""
    out = RUNS / f"ablation-eval{suffix}"
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(args.model, rows_for(runs, args.seeds), prompts, EVALUATOR, out, n_real=args.n_real)
    summary["training"] = train_metrics
    summary["comparisons"] = compare_rows(summary, prompts, pairs(args.seeds))
    write_results(f"tscd_ablation{suffix}", summary, markdown(summary))


def markdown(summary: dict) -> str:
    from hypersd.embedded.evaluator.evaluate import markdown_table

    lines = ["# TSCD ablation (analogue of Hyper-SD Table 3, without feedback)", "",
             f"Teacher `{summary['model']}`, {summary['prompts']} ShapesEval prompts, FD against "
             f"{summary['real_images']} real renders, PSNR against the teacher's 50-step DDIM sample "
             f"(guidance {TEACHER_GUIDANCE:g}). Distilled rows: no guidance.", "",
             markdown_table(summary), "", "Training (same teacher-evaluation budget for every method):", ""]
    for name, metrics in summary["training"].items():
        lines.append(f"- {name}: {metrics['train_seconds'] / 60:.1f} min")
    lines += ["", "The minutes are wall time as each run went (threads, other jobs and pauses differ between runs): "
              "the budgets are equal in iterations and teacher evaluations, and these minutes are not a speed "
              "comparison (bench/tscd_step_cost.md is)."]
    lines += ["", *comparison_table(summary.get("comparisons", []))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
