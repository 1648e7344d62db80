"""DMD2-grade score distillation on the shipped teacher (issue 14): the long runs, the Table 5
analogue and the ablation of each DMD2 addition, with 95% intervals and quality against training time.

The runs live in bench/runs/long/<name> and are trained by the CLI (in the background, resumable):

    tscd-s{seed}                   configs/tscd.yaml
    dmd2-one-step-base-s{seed}     configs/dmd2-one-step.yaml from the base model (Table 5: "DMD alone")
    dmd2-one-step-tscd-s{seed}     configs/dmd2-one-step.yaml from tscd-s{seed}'s k1 LoRA ("TSCD + DMD")
    dmd2-unified-tscd-s{seed}      configs/dmd2-unified.yaml from tscd-s{seed}'s k1 LoRA
    one-step-regression-s{seed}    configs/one-step-regression.yaml from tscd-s{seed}'s k1 LoRA: DMD's regression
                                   loss alone on teacher pairs (bench/runs/pairs/, made first if missing)
    one-step-dmd-regression-s{seed} configs/one-step-dmd-regression.yaml from one-step-regression-s{seed}:
                                   DMD2 + the regression loss
    ablation-<variant>-s0          dmd2-one-step-tscd with one DMD2 addition switched off, a shorter budget,
                                   against dmd2-one-step-tscd-s0's snapshot at that step
                                   (ttur-1-same-time: one fake update per step, 3x the steps: about the
                                   same wall time as the 5-update run)

    python bench/dmd2.py --commands          # the command of every run, in order (seed 1: --set training.seed=1)
    python bench/dmd2.py --train NAME        # train (or resume) one run in the foreground
    python bench/dmd2.py                     # evaluate the finished runs; bench/results/dmd2.{json,md,png}
    python bench/dmd2.py --quick             # tiny budgets end to end, *-quick files

Evaluation: 600 standard prompts, FD against 2,000 real renders, teacher DDIM 50 steps guidance 5 as
the reference. Paired bootstrap over prompts for every comparison; inside the interval is a tie.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, RUNS, compare_rows, comparison_table, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.monitor import run_monitor
from hypersd.inference.settings import SampleSettings
from hypersd.lora.files import LoraSpec
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.checkpoint import has_checkpoint
from hypersd.train.curves import progress_series, read_log
from hypersd.train.outputs import phase_lora, snapshot_lora
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run

LONG = RUNS / "long"
CONFIGS = ROOT / "configs"
ABLATION_ITERATIONS = 300
ABLATIONS = {  # variant -> overrides of configs/dmd2-one-step.yaml (from the TSCD LoRA); full DMD2 at this
    # budget is the long run dmd2-one-step-tscd-s0's own LoRA at step ABLATION_ITERATIONS (its snapshot:
    # the same recipe, seed and constant learning rate, so the same weights a 300-step run would end with)
    "no-gan": ["stages.0.dmd.gan_weight=0", "stages.0.dmd.gan_classifier_weight=0"],
    "ttur-1": ["stages.0.dmd.fake_updates=1"],
    "ttur-1-same-time": ["stages.0.dmd.fake_updates=1", f"stages.0.iterations={3 * ABLATION_ITERATIONS}"],
    "with-mse": ["stages.0.mse_weight=1.0"],
    "dmd": ["stages.0.dmd.fake_updates=1", "stages.0.dmd.gan_weight=0", "stages.0.dmd.gan_classifier_weight=0"],
}
FULL_AT_ABLATION = "dmd2-one-step-tscd-s0 @1, at the ablation budget"
QUICK = ["training.save_lora_every=1", "training.batch_size=4", "data.pool_size=64", "stages.0.dmd.batch_size=2", "training.eval_every=2",
         "training.eval_prompts=8", "training.checkpoint_every=2"]


PAIRS = RUNS / "pairs" / "teacher-ddim16-g5-6000.safetensors"  # hypersd data pairs, its defaults
PAIRS_COMMAND = f"hypersd data pairs --model assets/tiny-sd --n 6000 --steps 16 --out {PAIRS.relative_to(ROOT)}"
ONE_STEP_LORA = "loras/dmd-one-step-t800.safetensors"


def plan(seeds: list[int]) -> dict[str, tuple[Path, str | None, list[str]]]:
    """Every run: name -> (recipe file, the LoRA that starts it relative to the runs' root, overrides)."""
    runs = {}
    pairs = [f"stages.0.dmd.regression_pairs={PAIRS.relative_to(ROOT)}"]
    for seed in seeds:
        s = [f"training.seed={seed}"] if seed else []
        k1 = f"tscd-s{seed}/loras/tscd-k1.safetensors"
        runs[f"tscd-s{seed}"] = (CONFIGS / "tscd.yaml", None, s)
        runs[f"dmd2-one-step-base-s{seed}"] = (CONFIGS / "dmd2-one-step.yaml", None, s)
        runs[f"dmd2-one-step-tscd-s{seed}"] = (CONFIGS / "dmd2-one-step.yaml", k1, s)
        runs[f"dmd2-unified-tscd-s{seed}"] = (CONFIGS / "dmd2-unified.yaml", k1, s)
        runs[f"one-step-regression-s{seed}"] = (CONFIGS / "one-step-regression.yaml", k1, s + pairs)
        runs[f"one-step-dmd-regression-s{seed}"] = (CONFIGS / "one-step-dmd-regression.yaml",
                                                    f"one-step-regression-s{seed}/{ONE_STEP_LORA}", s + pairs)
    for variant, overrides in ABLATIONS.items():
        runs[f"ablation-{variant}-s0"] = (CONFIGS / "dmd2-one-step.yaml", "tscd-s0/loras/tscd-k1.safetensors",
                                          [f"stages.0.iterations={ABLATION_ITERATIONS}", *overrides])
    return runs


def init_lora(root: Path, init: str | None) -> Path | None:
    return None if init is None else root / init


def command(name: str, entry, root: Path) -> str:
    recipe, init, overrides = entry
    parts = ["hypersd distill", f"--recipe {recipe.relative_to(ROOT)}", f"--out {(root / name).relative_to(ROOT)}"]
    parts += [f"--init-lora {init_lora(root, init).relative_to(ROOT)}"] if init else []
    parts += [f"--set {o}" for o in overrides]
    return " ".join(parts)


def finished(run: Path) -> bool:
    """Every stage of the run's own recipe has ended (metrics.json is written after each stage)."""
    metrics, recipe = run / "metrics.json", run / "recipe.yaml"
    if not (metrics.is_file() and recipe.is_file()):
        return False
    return len(json.loads(metrics.read_text())["stages"]) == len(load_recipe(recipe).stages)


def train(name: str, entry, root: Path, quick: bool) -> None:
    recipe_file, init, overrides = entry
    out = root / name
    if finished(out):
        return
    pairs = root / "pairs-quick.safetensors" if quick else PAIRS
    uses_pairs = any(o.startswith("stages.0.dmd.regression_pairs=") for o in overrides)
    if uses_pairs and not pairs.is_file():
        make_pairs(pairs, 64 if quick else 6000)
    recipe = load_recipe(recipe_file, overrides + (QUICK + _quick_iterations(recipe_file) if quick else [])
                         + ([f"stages.0.dmd.regression_pairs={pairs}"] if uses_pairs else []))
    Run(recipe, TEACHER, out, init_lora=init_lora(root, init), monitor=run_monitor(recipe)).train(
        resume=has_checkpoint(out))


def make_pairs(path: Path, n: int) -> None:
    """The teacher pairs of the regression runs (as PAIRS_COMMAND makes them)."""
    from hypersd.data.pairs import write_teacher_pairs
    from hypersd.shapes.batches import ShapesStream

    write_teacher_pairs(TEACHER, path, [s.caption for s in ShapesStream(1).scenes(n)], steps=16, guidance=5.0, seed=1)


def _quick_iterations(recipe_file: Path) -> list[str]:
    stages = load_recipe(recipe_file).stages
    return [f"stages.{i}.iterations=2" for i in range(len(stages))]


# ------------------------------------------------------------------ evaluation
def rows_for(root: Path, names: list[str], ablation_step: int = ABLATION_ITERATIONS) -> list[Row]:
    rows = [Row("teacher DDIM @50", SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    snapshot = snapshot_lora(root / "dmd2-one-step-tscd-s0", "one-step-t800", ablation_step)
    if snapshot is not None:
        rows.append(Row(FULL_AT_ABLATION, SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800],
                                                          loras=[LoraSpec(snapshot)])))
    for name in names:
        if name.startswith("tscd-"):
            continue
        kind = "unified" if "unified" in name else "one-step-t800"
        lora = phase_lora(root / name, kind)
        if kind == "unified":
            rows += [Row(f"{name} @{s}", SampleSettings(steps=s, scheduler="tcd", guidance=0.0, eta=0.3,
                                                        loras=[LoraSpec(lora)])) for s in (1, 2, 4, 8)]
        else:
            rows.append(Row(f"{name} @1", SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800],
                                                         loras=[LoraSpec(lora)])))
    return rows


def comparisons(summary: dict, prompts: list[str]) -> list[dict]:
    """Table 5 (TSCD + DMD2 vs DMD2 alone, per seed) and each ablation vs full DMD2, paired."""
    pairs = [(f"dmd2-one-step-tscd-s{s} @1", f"dmd2-one-step-base-s{s} @1") for s in (0, 1)]
    pairs += [(f"one-step-dmd-regression-s{s} @1", f"dmd2-one-step-tscd-s{s} @1") for s in (0, 1)]
    pairs += [(f"one-step-dmd-regression-s{s} @1", f"one-step-regression-s{s} @1") for s in (0, 1)]
    pairs += [(FULL_AT_ABLATION, f"ablation-{v}-s0 @1") for v in ABLATIONS]
    return compare_rows(summary, prompts, pairs)


def curves(root: Path, names: list[str]) -> dict[str, list]:
    """Quick ShapesEval against training hours, per run and step count (from the runs' logs)."""
    series = {}
    for name in names:
        for label, points in progress_series(read_log(root / name))[1].items():
            series[f"{name} {label.split(' ', 1)[1]}"] = points
    return series


def markdown(summary: dict) -> str:
    teacher = next(r for r in summary["rows"] if r["label"] == "teacher DDIM @50")
    t_acc, t_fd = teacher["shapes_eval"]["overall"], teacher["fd"]
    lines = ["# DMD2-grade score distillation: one-step model, unified LoRA, Table 5 analogue, ablation", "",
             f"Teacher `{summary['model']}`, {summary['prompts']} ShapesEval prompts (± half-width of the 95% "
             f"bootstrap interval over prompts), FD against {summary['real_images']} real renders (± sd over 5 "
             "bootstrap resamples of the generated set). Ratios are to the teacher's 50-step row.", "",
             markdown_table(summary), "", "| model | ShapesEval / teacher | FD / teacher | training (h) |",
             "|---|---|---|---|"]
    for r in summary["rows"]:
        hours = None if ", step" in r["label"] else summary["training"].get(r["label"].split(" @")[0], {}).get("hours")
        lines.append(f"| {r['label']} | {r['shapes_eval']['overall'] / t_acc:.2f}x | {r['fd'] / t_fd:.2f}x | "
                     f"{'-' if hours is None else f'{hours:.2f}'} |")
    lines += ["", "Training hours are wall time as each run went, across resumes (threads and other jobs differ "
              "between runs): they are not a speed comparison. The ablation rows are paired against the full run's "
              "snapshot at the same iteration; ttur-1-same-time runs 3x the iterations with one fake update each.",
              "", *comparison_table(summary["comparisons"])]
    lines += ["", "Commands:", ""] + [f"- `{c}`" for c in summary["commands"]]
    return "\n".join(lines) + "\n"


def plot_curves(series: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colours, markers = plt.get_cmap("tab20").colors, "o^sDv<>p"
    for i, (label, points) in enumerate(sorted(series.items())):  # 20 colours x 8 markers: no two runs look alike
        ax.plot([h for h, _ in points], [v for _, v in points], color=colours[i % 20], marker=markers[i % 8],
                markersize=4, label=label)
    ax.set_xlabel("training time (hours, 2-core CPU)")
    ax.set_ylabel("ShapesEval, 120 prompts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--commands", action="store_true", help="print every run's command and exit")
    parser.add_argument("--train", metavar="NAME", help="train or resume one run of the plan")
    parser.add_argument("--quick", action="store_true", help="tiny budgets end to end; *-quick files")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    root = RUNS / "long-quick" if args.quick else LONG
    runs = plan(args.seeds)
    if args.commands:
        print("\n".join(command(n, e, root) for n, e in runs.items()))
        return
    if args.train or args.quick:
        for name in [args.train] if args.train else runs:
            if name not in runs:
                raise SystemExit(f"unknown run {name!r}; one of: {', '.join(runs)}")
            train(name, runs[name], root, args.quick)
        if args.train:
            return
    if args.quick:
        args.prompts, args.n_real = 24, 100
    done = [n for n in runs if finished(root / n)]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows_for(root, done, 2 if args.quick else ABLATION_ITERATIONS), prompts, EVALUATOR, RUNS / f"dmd2-eval{'-quick' * args.quick}",
                       n_real=args.n_real)
    summary["training"] = {n: {"hours": _hours(root / n)} for n in done}
    summary["comparisons"] = comparisons(summary, prompts)
    summary["commands"] = [PAIRS_COMMAND] + [command(n, runs[n], root) for n in done]
    summary["curves"] = curves(root, [n for n in runs if (root / n / "log.jsonl").is_file()])  # unfinished runs too
    stem = write_results(f"dmd2{'-quick' * args.quick}", summary, markdown(summary))
    plot_curves(summary["curves"], stem.parent / f"dmd2-curves{'-quick' * args.quick}.png")


def _hours(run: Path) -> float:
    """Training hours of a run (across resumes), from its last logged step."""
    times = [r["elapsed_s"] for r in read_log(run) if "elapsed_s" in r]
    return max(times, default=0.0) / 3600


if __name__ == "__main__":
    main()
