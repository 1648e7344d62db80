"""The unified LoRA trained with DMD2 and backward simulation (issue 14; DMD2 sec. 4.5): the run of
configs/dmd2-unified.yaml from TSCD's k1 LoRA, scored at 1, 2, 4 and 8 steps on the full evaluator
against the LoRA it starts from and against the unified LoRA shipped until commit fa96fb9 (make demo's
recipe, read from git by common.previous_unified_lora; the "unified (shipped)" rows), paired.

The run's generator reads pure noise at t = 999 for one step, or the point its own 2- or 4-step
sampler reaches from noise (no gradient), so it learns 1, 2 and 4 steps from its own trajectories; the
TSCD consistency MSE stays on. Its snapshots (every 100 iterations) are scored at their own metadata's
settings (TCD, trailing spacing) and, at 1, 2 and 4 steps, also at the timesteps the shipped unified
LoRA names (bench/results/unified_schedule.md), so that neither side has a schedule the other lacks.

    hypersd distill --recipe configs/dmd2-unified.yaml \
        --init-lora bench/runs/long/tscd-s0/loras/tscd-k1.safetensors --out bench/runs/long/dmd2-unified-tscd-s0
    python bench/unified_dmd2.py --steps 500 900   # the run's snapshots at 500 and 900 iterations
    hypersd distill --recipe configs/dmd2-unified.yaml --set training.seed=1 --set stages.0.iterations=500 \
        --init-lora bench/runs/long/tscd-s1/loras/tscd-k1.safetensors --out bench/runs/long/dmd2-unified-tscd-s1
    python bench/unified_dmd2.py --steps 500 900 --seed-1 500   # and seed 1 at 500, pooled with seed 0's
Writes bench/results/unified_dmd2.{json,md,png}.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import (  # bench/common.py
    RESULTS,
    ROOT,
    RUNS,
    across_seeds,
    compare_rows,
    comparison_table,
    previous_unified_lora,
    require_trained,
    teacher_ratio_lines,
    write_results,
)
from dmd2 import plot_curves  # bench/dmd2.py

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.curves import progress_series, read_log

LONG = RUNS / "long"
RUN = LONG / "dmd2-unified-tscd-s0"
START = LONG / "tscd-s0" / "loras" / "tscd-k1.safetensors"
SEED_1_RUN = LONG / "dmd2-unified-tscd-s1"  # the same recipe with training.seed=1 from tscd-s1's k1 LoRA
SEED_1_START = LONG / "tscd-s1" / "loras" / "tscd-k1.safetensors"
TEACHER_ROW = "teacher DDIM @50"
STEPS = (1, 2, 4, 8)


def snapshot(step: int, run: Path = RUN) -> Path:
    return run / "snapshots" / f"unified-{step:07d}.safetensors"


def shipped_timesteps(n: int) -> list[int] | None:
    """The timesteps the unified LoRA shipped until fa96fb9 names for n steps (None: trailing spacing)."""
    return metadata_settings(previous_unified_lora(), n).timesteps


def at_shipped_timesteps(lora: Path, n: int) -> SampleSettings:
    """The LoRA at n steps at shipped_timesteps(n) (its own metadata's where that is None)."""
    own = metadata_settings(lora, n)
    return own if shipped_timesteps(n) is None else replace(own, timesteps=shipped_timesteps(n))


def rows_for(steps: list[int]) -> tuple[list[Row], list[tuple]]:
    """The evaluated rows (the run's snapshots at `steps`, its start, the shipped LoRA) and the paired
    comparisons between them."""
    start, shipped = "TSCD k1 (its start)", "unified (shipped)"
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    pairs = []
    for n in STEPS:
        rows += [Row(f"{start} @{n}", metadata_settings(START, n)),
                 Row(f"{shipped} @{n}", metadata_settings(previous_unified_lora(), n))]
        for step in steps:
            new = f"DMD2 + backward simulation, {step} it"
            rows.append(Row(f"{new} @{n}", metadata_settings(snapshot(step), n)))
            pairs += [(f"{new} @{n}", f"{start} @{n}"), (f"{new} @{n}", f"{shipped} @{n}")]
            if shipped_timesteps(n) is not None:
                at = f"{new} @{n}, shipped timesteps"
                rows.append(Row(at, at_shipped_timesteps(snapshot(step), n)))
                pairs.append((at, f"{shipped} @{n}"))
    return rows, pairs


def seed_1_rows(step: int) -> tuple[list[Row], list[tuple]]:
    """Seed 1's run at `step` beside seed 0's: its rows, its own pairs, and both seeds pooled per prompt
    (each side's passes averaged over the seeds before the bootstrap) against the shipped LoRA."""
    start, shipped = "TSCD k1 (its start), seed 1", "unified (shipped)"
    new, seed_0, pooled = (f"DMD2 + backward simulation, {step} it{suffix}"
                           for suffix in (", seed 1", "", ", seeds 0+1"))
    rows, pairs = [], []
    for n in STEPS:
        lora = snapshot(step, SEED_1_RUN)
        rows += [Row(f"{start} @{n}", metadata_settings(SEED_1_START, n)),
                 Row(f"{new} @{n}", metadata_settings(lora, n))]
        pairs += [(f"{new} @{n}", f"{start} @{n}"), (f"{new} @{n}", f"{shipped} @{n}"),
                  across_seeds([(f"{seed_0} @{n}", f"{shipped} @{n}"), (f"{new} @{n}", f"{shipped} @{n}")],
                               f"{pooled} @{n}", f"{shipped} @{n}")]
        if shipped_timesteps(n) is not None:
            at = f"{new} @{n}, shipped timesteps"
            rows.append(Row(at, at_shipped_timesteps(lora, n)))
            pairs += [(at, f"{shipped} @{n}"),
                      across_seeds([(f"{seed_0} @{n}, shipped timesteps", f"{shipped} @{n}"),
                                    (at, f"{shipped} @{n}")], f"{pooled} @{n}, shipped timesteps", f"{shipped} @{n}")]
    return rows, pairs


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="the run's snapshots to score")
    parser.add_argument("--seed-1", type=int, metavar="STEP", help="also the seed-1 run's snapshot at STEP (one of "
                        "--steps), paired with seed 0's and pooled with it")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    wanted = [*map(snapshot, args.steps), START]
    if args.seed_1 is not None:
        if args.seed_1 not in args.steps:
            raise SystemExit(f"--seed-1 {args.seed_1} must be one of --steps, to pair it with seed 0")
        wanted += [snapshot(args.seed_1, SEED_1_RUN), SEED_1_START]
    require_trained(wanted)
    rows, pairs = rows_for(args.steps)
    if args.seed_1 is not None:
        more_rows, more_pairs = seed_1_rows(args.seed_1)
        rows, pairs = rows + more_rows, pairs + more_pairs
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "unified-dmd2", n_real=args.n_real)
    summary["comparisons"] = compare_rows(summary, prompts, pairs)
    summary["curves"] = {f"{RUN.name} {label.split(' ', 1)[1]}": points
                         for label, points in progress_series(read_log(RUN))[1].items()}
    lines = ["# The unified LoRA with DMD2 and backward simulation", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval), FD against "
             f"{args.n_real} real renders (± sd over 5 resamples). `{RUN.relative_to(ROOT)}` "
             f"(configs/dmd2-unified.yaml, seed 0) at {' and '.join(map(str, args.steps))} iterations, from "
             f"`{START.relative_to(ROOT)}`; each row at its LoRA's metadata settings unless it says "
             "\"shipped timesteps\"." + (f" Seed 1 (`{SEED_1_RUN.relative_to(ROOT)}`, `training.seed=1`, from "
                                          f"`{SEED_1_START.relative_to(ROOT)}`) at {args.seed_1} iterations."
                                          if args.seed_1 is not None else " One training seed."),
             "", markdown_table(summary), "",
             "Against the targets (unified @1 >= 0.6x and @2 >= 0.9x the teacher's ShapesEval; @4 and @8 no worse "
             "than the shipped LoRA within the interval):", "",
             *teacher_ratio_lines(summary, TEACHER_ROW), "", *comparison_table(summary["comparisons"]), "",
             "Quick ShapesEval (120 prompts) against training time: `unified_dmd2_curves.png`.", "",
             f"Command: `python bench/unified_dmd2.py --steps {' '.join(map(str, args.steps))}"
             + (f" --seed-1 {args.seed_1}`" if args.seed_1 is not None else "`")]
    write_results("unified_dmd2", summary, "\n".join(lines) + "\n")
    plot_curves(summary["curves"], RESULTS / "unified_dmd2_curves.png")


if __name__ == "__main__":
    main()
