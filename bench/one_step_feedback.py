"""Feedback learning for the dedicated one-step model (issue 14): Hyper-SD's recipe is TSCD, then human
feedback, then score distillation "and the feedback losses" (section 3.3). The one-step UNet shipped until
commit 436e4f1 was trained by regression and DMD2 without any feedback term; this continues it from that
fp16 file (read from git) with the feedback terms added to the same DMD2 + regression objective
(configs/one-step-dmd-feedback-unet.yaml: its own one-step samples scored by the presence and
clean-image rewards, both read off the shipped instance segmenter, never the ShapesEval evaluator),
against a control that continues it for the same iterations without them (dmd.with_feedback false), so
that what the feedback adds is separated from what more DMD2 adds. The final models are also scored on
600 held-out prompts and noise seeds, so that the choice of the model to ship is confirmed on images it
was not made on (the control's seed 1 is shipped now: assets/hypersd-one-step).

    hypersd data pairs --model assets/tiny-sd --n 6000 --steps 16 --out runs/pairs/teacher-ddim16.safetensors
    python bench/one_step_feedback.py                          # trains what is missing, then evaluates
    python bench/one_step_feedback.py --train-only --run feedback --seeds 1   # one run (a one-thread share)
Writes bench/results/one_step_feedback.{json,md,png} and one_step_feedback_steps.png; runs go to
bench/runs/long/one-step-{feedback,control}-s{seed}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import (  # bench/common.py
    RESULTS,
    ROOT,
    RUNS,
    compare_rows,
    comparison_table,
    file_at_commit,
    run_pairs,
    shapes_eval_bars,
    shapes_eval_whiskers,
    teacher_ratio_lines,
    train_or_reuse,
    write_results,
)
from unified_schedule import DEV_NOISE_SEED  # bench/unified_schedule.py

from hypersd.assets import EVALUATOR, ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import STANDARD_SEED, standard_prompts
from hypersd.train.outputs import snapshot_unet
from hypersd.train.recipe import load_recipe

LONG = RUNS / "long"
RECIPE = ROOT / "configs" / "one-step-dmd-feedback-unet.yaml"
RUNS_BY_NAME = {  # name -> (row label, recipe overrides)
    "feedback": ("+ DMD2 + regression + feedback 0.3", []),
    "feedback-strong": ("+ DMD2 + regression + feedback 1.0", ["stages.0.feedback.reward_weight=1.0"]),
    "control": ("+ DMD2 + regression (control)", ["stages.0.dmd.with_feedback=false"]),
}
COMPARED = [("feedback", "control"), ("feedback-strong", "control"), ("feedback-strong", "feedback"),
            ("feedback", None), ("feedback-strong", None), ("control", None)]  # None: the start
SHIPPED_ROW = "start (the one-step model shipped until 436e4f1)"
START_COMMIT = "436e4f1"  # the last commit that shipped the start (assets/ now holds the control's seed 1)
TEACHER_ROW = "teacher DDIM @50"
ONE_STEP = SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800])


def start_model() -> Path:
    """The one-step UNet every run starts from: the file assets/ shipped at START_COMMIT, read from git."""
    return file_at_commit(ONE_STEP_MODEL, START_COMMIT)


def run_dir(name: str, seed: int) -> Path:
    return LONG / f"one-step-{name}-s{seed}"


def recipe(name: str, seed: int, extra: list[str]):
    return load_recipe(RECIPE, [*RUNS_BY_NAME[name][1], f"training.seed={seed}", *extra])


def generator_at(name: str, seed: int, step: int, iterations: int) -> Path:
    """The generator's weights at `step`: its snapshot (training.save_lora_every), or at the end the last
    checkpoint's (the run also writes a pipeline folder)."""
    if step == iterations:
        return run_dir(name, seed) / "checkpoints" / f"s00-{iterations:07d}" / "generator.safetensors"
    return snapshot_unet(run_dir(name, seed), "one-step-t800", step)


def label(name: str, seed: int, iterations: int) -> str:
    return f"start {RUNS_BY_NAME[name][0]}, {iterations} it, seed {seed}"


def steps_kept(iterations: int, every: int) -> list[int]:
    return [*range(every, iterations, every), iterations] if every else [iterations]


def pairs(seeds: list[int], iterations: int) -> list[tuple]:
    return run_pairs(COMPARED, {n: r[0] for n, r in RUNS_BY_NAME.items()}, label, SHIPPED_ROW, seeds, iterations)


def plot_steps(summary: dict, seeds: list[int], steps: list[int], path: Path) -> None:
    """ShapesEval (600 prompts, 95% interval) against training iterations, one line per run; iteration 0
    is the start (the one-step model shipped until 436e4f1) every run begins from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["label"]: r for r in summary["rows"]}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (name, seed) in enumerate((n, s) for s in seeds for n in RUNS_BY_NAME):
        labels = [SHIPPED_ROW, *(label(name, seed, step) for step in steps)]
        found = [(x, rows[lb]) for x, lb in zip([0, *steps], labels) if lb in rows]
        values, errors = shapes_eval_whiskers([r for _, r in found])
        ax.errorbar([x + 3 * i for x, _ in found], values, yerr=errors, capsize=3, marker="o", markersize=4,
                    linestyle="-" if seed == seeds[0] else "--", label=f"{RUNS_BY_NAME[name][0]}, seed {seed}")
    ax.set_xlabel("iterations from the start (points offset a little to stay apart)")
    ax.set_ylabel("ShapesEval (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def short_label(row_label: str) -> str:
    """'start + DMD2 + regression + feedback 0.3, 300 it, seed 0' -> 'feedback 0.3\nseed 0' (bar labels)."""
    if row_label == SHIPPED_ROW:
        return "start\n(shipped until 436e4f1)"
    method, _, seed = row_label.split(", ")
    return f"{method.split('regression')[-1].strip(' +()') or 'control'}\n{seed}"


def plot_bars(summary: dict, path: Path) -> None:
    """ShapesEval of the start and of each run's final model with its 95% interval, the teacher's 50 steps
    and the 0.85x target as lines."""
    final = f", {summary['iterations']} it,"
    rows = [r for r in summary["rows"] if r["label"] == SHIPPED_ROW or final in r["label"]]
    teacher = next(r for r in summary["rows"] if r["label"] == TEACHER_ROW)["shapes_eval"]["overall"]
    colors = ["tab:orange" if "feedback" in r["label"] else "tab:gray" for r in rows]
    shapes_eval_bars(rows, [short_label(r["label"]) for r in rows], colors, teacher,
                     f"The one-step model continued {summary['iterations']} iterations, with and without feedback",
                     path, target=0.85)


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=list(RUNS_BY_NAME), help="train (or resume) this run only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="recipe override for every run (KEY=VALUE)")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    names = [args.run] if args.run else list(RUNS_BY_NAME)
    training = {}
    for seed in args.seeds:
        for name in names:
            training[f"{name}-s{seed}"] = train_or_reuse(recipe(name, seed, args.set), TEACHER, run_dir(name, seed),
                                                         init_unet=start_model())
    if args.train_only:
        return
    resolved = recipe("feedback", 0, args.set)
    iterations = resolved.stages[0].iterations
    steps = steps_kept(iterations, resolved.training.save_lora_every)
    prompts = standard_prompts()[: args.prompts]
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE)),
            Row(SHIPPED_ROW, ONE_STEP, unet=start_model())]
    final = [Row(label(name, seed, iterations), ONE_STEP, unet=generator_at(name, seed, iterations, iterations))
             for seed in args.seeds for name in RUNS_BY_NAME]
    earlier = [Row(label(name, seed, step), ONE_STEP, unet=generator_at(name, seed, step, iterations))
               for seed in args.seeds for name in RUNS_BY_NAME for step in steps[:-1]]
    rows += final + [r for r in earlier if Path(r.unet).is_file()]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "one-step-feedback", n_real=args.n_real)
    summary["iterations"] = iterations
    summary["training"] = {key: {"run": str(run_dir(*key.rsplit("-s", 1)[:1], int(key.rsplit("-s", 1)[1]))),
                                 "train_seconds": m["train_seconds"]} for key, m in training.items()}
    summary["comparisons"] = compare_rows(summary, prompts, pairs(args.seeds, iterations))
    held_out = standard_prompts(args.prompts, seed=STANDARD_SEED + 1)  # a confirmation no choice was made on
    summary["held_out"] = evaluate(TEACHER, [rows[1], *final], held_out, EVALUATOR, RUNS / "one-step-feedback-held-out",
                                   n_real=args.n_real, seed=DEV_NOISE_SEED, psnr_reference=False)
    summary["held_out"]["comparisons"] = compare_rows(summary["held_out"], held_out, pairs(args.seeds, iterations))
    ratio_lines = teacher_ratio_lines(summary, TEACHER_ROW,
                                      keep=lambda lb: lb == SHIPPED_ROW or f", {iterations} it," in lb)
    lines = ["# The one-step model with feedback learning (Hyper-SD sec. 3.2-3.3)", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval), FD against "
             f"{args.n_real} real renders (± sd over 5 resamples). Every one-step row: one LCM step at t = 800. Every "
             f"run starts from the fp16 UNet `{ONE_STEP_MODEL.relative_to(ROOT)}` as shipped at commit {START_COMMIT} "
             "(the start row) and trains "
             f"`{RECIPE.relative_to(ROOT)}` for {iterations} iterations; the control sets dmd.with_feedback false.",
             "", markdown_table(summary), "", "Against the teacher (targets: ShapesEval >= 0.85x, FD <= 1.1x):", "",
             *ratio_lines, "", "Training (wall time as it went, jobs sharing the 2 cores; not a speed comparison):", ""]
    lines += [f"- {key}: {t['train_seconds'] / 60:.1f} min" for key, t in summary["training"].items()]
    lines += ["", *comparison_table(summary["comparisons"]), "",
              f"## Confirmation on {len(held_out)} held-out prompts", "",
              f"Other prompts (prompt seed {STANDARD_SEED + 1}) and other noise (seeds from {DEV_NOISE_SEED}), the "
              "final models only, so that a choice made on the table above (which run to ship) is checked on images "
              "it was not made on.", "", markdown_table(summary["held_out"]), "",
              *comparison_table(summary["held_out"]["comparisons"]), "",
              "A two-seed row averages each prompt's passes over the seeds before the bootstrap "
              "(hypersd.core.intervals.seed_mean). ShapesEval against training iterations "
              f"({', '.join(map(str, steps))}; "
              "the kept snapshots, 600 prompts): `one_step_feedback_steps.png`.", "",
              "Command: `python bench/one_step_feedback.py`"]
    write_results("one_step_feedback", summary, "\n".join(lines) + "\n", plot=plot_bars)
    plot_steps(summary, args.seeds, steps, RESULTS / "one_step_feedback_steps.png")


if __name__ == "__main__":
    main()
