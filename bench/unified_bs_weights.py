"""Backward simulation weighted towards two steps for the DMD2 unified LoRA (issue 14: @2 >= 0.9x the teacher).
The shipped recipe (configs/dmd2-unified-gan05-g3.yaml) draws its n-step schedule from [1, 2, 4], so the
generator reads its own one-step sample renoised (the second of two steps) in 1/6 of its updates; [1, 2, 2, 4]
makes that 1/4 and keeps every step count. Both recipes from TSCD's k1 LoRA, two training seeds, paired at the
same iteration, every row at the shipped unified LoRA's timesteps (8 steps: trailing TCD).

    for s in 0 1; do
      hypersd distill --recipe configs/dmd2-unified-gan05-g3.yaml \\
          --set 'stages.0.dmd.backward_simulation=[1, 2, 2, 4]' --set training.seed=$s \\
          --init-lora bench/runs/long/tscd-s$s/loras/tscd-k1.safetensors \\
          --out bench/runs/long/dmd2-unified-gan05-g3-bs1224-s$s
    done   # the [1, 2, 4] runs: bench/unified_dmd2_variants.py's gan05-g3 (same commands without the first --set)
    python bench/unified_bs_weights.py --iterations 300      # any snapshot both runs have (100, 200, ... 500)
Writes bench/results/unified_bs_weights.{json,md,png}.
"""

from __future__ import annotations

from common import (  # bench/common.py
    RUNS,
    compare_rows,
    comparison_table,
    require_trained,
    run_pairs,
    seeded_snapshot_args,
    teacher_ratio_lines,
    write_results,
)
from unified_dmd2 import LONG, STEPS, TEACHER_ROW, at_shipped_timesteps, snapshot  # bench/unified_dmd2.py

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts

RUNS_BY_NAME = {"bs124": "backward simulation [1, 2, 4] (shipped recipe)",
                "bs1224": "backward simulation [1, 2, 2, 4]"}
FOLDERS = {"bs124": "dmd2-unified-gan05-g3", "bs1224": "dmd2-unified-gan05-g3-bs1224"}


def row_label(name: str, seed: int, iterations: int, steps: int) -> str:
    return f"{RUNS_BY_NAME[name]}, {iterations} it, seed {seed} @{steps}"


def main() -> None:
    quiet_libraries()
    args = seeded_snapshot_args(__doc__.splitlines()[0], 500)
    it = args.iterations
    loras = {(name, seed): snapshot(it, LONG / f"{FOLDERS[name]}-s{seed}")
             for name in RUNS_BY_NAME for seed in args.seeds}
    require_trained(loras.values())
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    rows += [Row(row_label(name, seed, it, n), at_shipped_timesteps(lora, n))
             for n in STEPS for (name, seed), lora in loras.items()]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "unified-bs-weights", n_real=args.n_real)
    pairs = []
    for n in STEPS:
        names = {name: f"{title} @{n}" for name, title in RUNS_BY_NAME.items()}
        pairs += run_pairs([("bs1224", "bs124")], names, lambda name, seed, i, n=n: row_label(name, seed, i, n),
                           None, args.seeds, it)
    summary["comparisons"] = compare_rows(summary, prompts, pairs)
    summary["iterations"] = it
    lines = ["# Backward simulation weighted towards two steps (DMD2 unified LoRA)", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval), FD against "
             f"{args.n_real} real renders (± sd over 5 resamples). Both recipes are "
             f"configs/dmd2-unified-gan05-g3.yaml at {it} iterations from TSCD's k1 LoRA (seed s from tscd-s<s>); the second sets "
             "dmd.backward_simulation [1, 2, 2, 4]. Rows at the shipped unified LoRA's timesteps (8 steps: "
             "trailing).",
             "", markdown_table(summary), "", "Ratios to the teacher's 50 guided steps:", "",
             *teacher_ratio_lines(summary, TEACHER_ROW), "", *comparison_table(summary["comparisons"]), "",
             f"Command: `python bench/unified_bs_weights.py --iterations {it}`"]
    write_results("unified_bs_weights", summary, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
