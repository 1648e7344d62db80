"""Which timesteps should the unified LoRA sample at 1, 2 and 4 steps? Trailing spacing (999; 999, 499; ...)
starts every count at timestep 999, where the one-step jump is weakest. Candidates are chosen on held-out
prompts (another prompt seed, other noise seeds), then the choice is checked against trailing spacing on
the 600 standard prompts, paired, so the figure that is reported is not the one that chose.

    python bench/unified_schedule.py                      # the shipped unified LoRA
    python bench/unified_schedule.py --lora FILE --dev-prompts 240
Writes bench/results/NAME.{json,md,png} (--name, default unified_schedule) and prints the `hypersd lora
schedule` command that writes the choice into a LoRA's metadata (step_timesteps).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import ROOT, RUNS, compare_rows, comparison_table, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, TEACHER, UNIFIED_LORA
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import STANDARD_SEED, standard_prompts

CANDIDATES = {  # step count -> timesteps tried; the first is trailing spacing (the LoRA's default)
    1: [[999], [900], [800], [700], [600], [500], [400]],
    2: [[999, 499], [900, 450], [900, 600], [800, 400], [800, 500], [700, 350], [999, 700], [900, 300]],
    4: [[999, 749, 499, 249], [900, 675, 450, 225], [900, 700, 500, 300], [800, 600, 400, 200],
        [999, 800, 600, 300]],
}
TEST_STEPS = (1, 2, 4, 8)
DEV_NOISE_SEED = 100_000  # noise seeds of the held-out prompts: none shared with the standard set's 0..599
TEACHER_AT_50 = 0.477     # the teacher @50 on the same 600 prompts and seeds (bench/results/one_step_table.md)


def label(steps: int, timesteps: list[int] | None, chosen: bool = False) -> str:
    """'trailing @2', a candidate '900,450 @2', the choice 'chosen @2 (900,450)' (one plotted line per kind)."""
    if timesteps is None:
        return f"trailing @{steps}"
    named = ",".join(map(str, timesteps))
    return f"chosen @{steps} ({named})" if chosen else f"{named} @{steps}"


def metadata_label(steps: int, timesteps: list[int]) -> str:
    """'in the metadata @2 (900,450)': the timesteps the LoRA's metadata names now, when the choice differs."""
    return f"in the metadata @{steps} ({','.join(map(str, timesteps))})"


def candidates(steps: int) -> list[list[int] | None]:
    """The timesteps tried at `steps`, trailing spacing as None (the LoRA's own default)."""
    return [None] + CANDIDATES[steps][1:]


def choose(dev: dict) -> dict[int, list[int] | None]:
    """Per step count, the candidate with the best held-out ShapesEval (FD breaks ties); None = trailing."""
    rows = {r["label"]: r for r in dev["rows"]}
    best = {}
    for steps in CANDIDATES:
        scored = [(rows[label(steps, ts)]["shapes_eval"]["overall"], -rows[label(steps, ts)]["fd"], i)
                  for i, ts in enumerate(candidates(steps))]
        best[steps] = candidates(steps)[max(scored)[2]]
    return best


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, default=UNIFIED_LORA)
    parser.add_argument("--dev-prompts", type=int, default=240)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--name", default="unified_schedule", help="results file stem in bench/results (another "
                        "LoRA than the shipped one gets its own)")
    args = parser.parse_args()
    named = {n: metadata_settings(args.lora, n).timesteps for n in CANDIDATES}  # what the metadata names now
    at = {n: replace(metadata_settings(args.lora, n), timesteps=None) for n in TEST_STEPS}  # trailing spacing

    dev_rows = [Row(label(n, ts), replace(at[n], timesteps=ts)) for n in CANDIDATES for ts in candidates(n)]
    dev_prompts = standard_prompts(args.dev_prompts, seed=STANDARD_SEED + 1)
    dev = evaluate(TEACHER, dev_rows, dev_prompts, EVALUATOR, RUNS / "unified-schedule-dev", n_real=args.n_real,
                   seed=DEV_NOISE_SEED, psnr_reference=False)
    chosen = choose(dev)
    print("chosen on held-out prompts:", {n: ts or "trailing" for n, ts in chosen.items()})

    test_rows = [Row(label(n, None), at[n]) for n in TEST_STEPS]
    test_rows += [Row(label(n, ts, True), replace(at[n], timesteps=ts)) for n, ts in chosen.items() if ts]
    renamed = {n: ts for n, ts in named.items() if ts and ts != chosen[n]}  # the metadata's, where the choice differs
    test_rows += [Row(metadata_label(n, ts), replace(at[n], timesteps=ts)) for n, ts in renamed.items()]
    prompts = standard_prompts()[: args.prompts]
    test = evaluate(TEACHER, test_rows, prompts, EVALUATOR, RUNS / "unified-schedule", n_real=args.n_real,
                    psnr_reference=False)
    test["comparisons"] = compare_rows(test, prompts, [(label(n, ts, True), label(n, None))
                                                       for n, ts in chosen.items() if ts]
                                       + [(label(n, chosen[n], True) if chosen[n] else label(n, None),
                                           metadata_label(n, ts)) for n, ts in renamed.items()])
    test["held_out"] = {"prompts": len(dev_prompts), "prompt_seed": STANDARD_SEED + 1, "noise_seed": DEV_NOISE_SEED,
                        "rows": dev["rows"]}
    test["chosen"] = {str(n): ts for n, ts in chosen.items()}
    lora = args.lora.resolve().relative_to(ROOT) if args.lora.resolve().is_relative_to(ROOT) else args.lora
    test["lora"] = str(lora)
    adopted = " ".join(f"--at {n}={','.join(map(str, ts))}" for n, ts in chosen.items() if ts)
    dev_table = ["| timesteps | ShapesEval (95% CI) | FD |", "|---|---|---|"]
    for r in dev["rows"]:
        lo, hi = r["shapes_eval_ci95"]
        dev_table.append(f"| {r['label']} | {r['shapes_eval']['overall']:.3f} [{lo:.3f}, {hi:.3f}] | {r['fd']:.1f} |")
    lines = ["# The unified LoRA's timesteps per step count", "",
             f"LoRA `{lora}`, TCD at its eta, no guidance. Candidates scored on {len(dev_prompts)} held-out prompts "
             f"(prompt seed {STANDARD_SEED + 1}, noise seeds from {DEV_NOISE_SEED}); the best at each step count "
             f"(`trailing` = the default spacing) is then compared with trailing spacing on the {len(prompts)} "
             "standard prompts, paired (and with the timesteps the LoRA's metadata names now, where they differ). "
             "Ratios: against the teacher @50 on the same prompts and seeds "
             f"({TEACHER_AT_50}, bench/results/one_step_table.md).", "",
             "## Held-out prompts (choosing)", "", *dev_table, "",
             "## Standard prompts (checking)", "", markdown_table(test), "",
             *comparison_table(test["comparisons"]), "",
             "| row | ShapesEval / teacher @50 |", "|---|---|"]
    for r in test["rows"]:
        lo, hi = r["shapes_eval_ci95"]
        lines.append(f"| {r['label']} | {r['shapes_eval']['overall'] / TEACHER_AT_50:.2f}x "
                     f"[{lo / TEACHER_AT_50:.2f}, {hi / TEACHER_AT_50:.2f}] |")
    lines += ["", f"Write the choice into a LoRA: `hypersd lora schedule {lora} {adopted} --out FILE`", "",
              f"Command: `python bench/unified_schedule.py --lora {lora} --dev-prompts {args.dev_prompts}"
              + (f" --name {args.name}`" if args.name != "unified_schedule" else "`")]
    write_results(args.name, test, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
