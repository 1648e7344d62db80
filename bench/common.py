"""What the benchmarks share: training a recipe into bench/runs (reusing a finished run, resuming
an interrupted one) and writing a summary to bench/results as JSON + markdown + plot."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from hypersd.assets import UNIFIED_LORA
from hypersd.core.intervals import paired_difference, seed_mean, verdict
from hypersd.embedded.evaluator.evaluate import plot_metrics
from hypersd.shapes.captions import parse_caption
from hypersd.train.checkpoint import has_checkpoint
from hypersd.train.outputs import stage_name
from hypersd.train.run import Run

ROOT = Path(__file__).resolve().parents[1]
RESULTS, RUNS = ROOT / "bench" / "results", ROOT / "bench" / "runs"
PREVIOUS_UNIFIED_COMMIT = "fa96fb9"  # the last commit whose assets/ held make demo's unified LoRA (now DMD2's)


def rows_by_label(summary: dict) -> dict[str, dict]:
    """A summary's rows by their labels."""
    return {r["label"]: r for r in summary["rows"]}


def require_trained(paths) -> None:
    """Exit with one line naming the first of `paths` (LoRA snapshots, start LoRAs) that is not there yet."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"missing {missing[0]}: train it first (commands in this script's docstring)")


def complete_arms(found: dict[str, dict[int, Path]]) -> dict[tuple[str, int], Path]:
    """The (arm, seed) files of the arms whose file exists for every seed ({arm: {seed: file}} in); one line and
    exit when no arm is complete."""
    trained = {arm: files for arm, files in found.items() if all(Path(f).is_file() for f in files.values())}
    if not trained:
        require_trained(f for files in found.values() for f in files.values())
    return {(arm, seed): f for arm, files in trained.items() for seed, f in files.items()}


def seeded_snapshot_parser(description: str, default_iterations: int):
    """The argument parser of a bench that pairs runs trained with several seeds at one snapshot."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iterations", type=int, default=default_iterations,
                        help="the snapshot compared (a multiple of 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    return parser


def seeded_snapshot_args(description: str, default_iterations: int):
    """seeded_snapshot_parser's arguments, parsed."""
    return seeded_snapshot_parser(description, default_iterations).parse_args()


def file_at_commit(path: Path, commit: str) -> Path:
    """The file `path` (inside the repository) as `commit` held it, read from git once into bench/runs/."""
    out = RUNS / "from-git" / commit / path.resolve().relative_to(ROOT)
    if not out.is_file():
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path.resolve().relative_to(ROOT)}"],
                              capture_output=True, check=True).stdout
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        partial.write_bytes(blob)
        partial.replace(out)  # a killed run leaves no half-written file behind
    return out


def previous_unified_lora() -> Path:
    """The unified LoRA shipped until PREVIOUS_UNIFIED_COMMIT (make demo's recipe), which the benches written
    before the DMD2 unified LoRA was shipped compare against as "unified (shipped)"."""
    return file_at_commit(UNIFIED_LORA, PREVIOUS_UNIFIED_COMMIT)


def train_or_reuse(recipe, model: Path, out: Path, init_lora: Path | None = None,
                   init_unet: Path | None = None) -> dict:
    """Train `recipe` into `out` unless a finished run is there; an interrupted one resumes. init_lora /
    init_unet: the student's start (a LoRA file; a full-UNet generator's weights)."""
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"stages": {}}
    if len(metrics["stages"]) == len(recipe.stages):  # finished; a run trained by the CLI has no train_seconds
        return {**metrics, "train_seconds": metrics.get("train_seconds", uninterrupted_seconds(metrics, recipe))}
    resume = has_checkpoint(out)
    if out.exists() and not resume:
        shutil.rmtree(out)
    metrics = Run(recipe, model, out, init_lora=init_lora, init_unet=init_unet).train(resume=resume)
    metrics["train_seconds"] = uninterrupted_seconds(metrics, recipe)
    metrics["init_lora"] = str(init_lora) if init_lora else None
    metrics["init_unet"] = str(init_unet) if init_unet else None
    metrics_file.write_text(json.dumps(metrics, indent=2))
    return metrics


def uninterrupted_seconds(metrics: dict, recipe) -> float:
    """Training time of the whole run; a resumed stage's rate is scaled to its full length."""
    stages = {stage_name(stage): stage.iterations for stage in recipe.stages}
    ran = {name: s["steps"] - s.get("resumed_at_step", 0) for name, s in metrics["stages"].items()}
    return sum(s["seconds"] / max(ran[name], 1) * stages[name] for name, s in metrics["stages"].items())


def write_results(stem_name: str, summary: dict, markdown: str, plot=plot_metrics) -> Path:
    """bench/results/<stem_name>.{json,md,png}; `plot(summary, path)` draws the png (default: each metric
    against sampling steps)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / stem_name
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    plot(summary, stem.with_suffix(".png"))
    print(f"wrote {stem}.md")
    return stem


def compare_rows(summary: dict, prompts: list[str], pairs: list[tuple]) -> list[dict]:
    """Paired bootstrap of ShapesEval overall, side a minus side b, for the pairs whose rows all exist
    (same prompts and seeds: one resample of prompts serves both sides). A side is a row's label, or
    (name, labels): several rows (training seeds of one method) averaged per prompt, so that a resample
    of prompts keeps every seed's image of that prompt together."""
    rows = rows_by_label(summary)
    categories = [parse_caption(p).category for p in prompts]
    out = []
    for a, b in pairs:
        (name_a, labels_a), (name_b, labels_b) = _side(a), _side(b)
        missing = [label for label in (*labels_a, *labels_b) if label not in rows]
        if missing:
            print(f"comparison {name_a!r} vs {name_b!r} skipped: no row {missing[0]!r}")
            continue
        a_passed, b_passed = ([[c == "1" for c in rows[label]["passed"]] for label in labels]
                              for labels in (labels_a, labels_b))
        d, lo, hi = paired_difference(seed_mean(a_passed), seed_mean(b_passed), categories)
        out.append({"a": name_a, "b": name_b, "difference": d, "ci95": [lo, hi], "verdict": verdict(lo, hi)})
    return out


def across_seeds(per_seed: list[tuple[str, str]], name_a: str, name_b: str) -> tuple:
    """One pair for compare_rows out of the same comparison's per-seed pairs: each side pools its seeds' rows."""
    return (name_a, [a for a, _ in per_seed]), (name_b, [b for _, b in per_seed])


def run_pairs(compared: list[tuple[str, str | None]], row_names: dict[str, str], label, start_row: str,
              seeds: list[int], iterations: int, trained=None) -> list[tuple]:
    """compare_rows pairs for runs trained with several seeds: each (a, b) of `compared` (run names; b None: the
    start row) per seed, then pooled over the seeds. label(name, seed, iterations) names a run's row;
    row_names[name] names the run in a pooled row. With `trained` (run names), only the pairs whose runs are
    all in it."""
    out = []
    for a, b in compared:
        if trained is not None and not (a in trained and (b is None or b in trained)):
            continue
        per_seed = [(label(a, s, iterations), label(b, s, iterations) if b else start_row) for s in seeds]
        out += per_seed
        if len(seeds) > 1:
            pooled_name = "{}, seeds " + "+".join(map(str, seeds))
            pooled = across_seeds(per_seed, pooled_name.format(row_names[a]),
                                  pooled_name.format(row_names[b]) if b else start_row)
            out.append(pooled if b else (pooled[0], start_row))
    return out


def _side(side) -> tuple[str, tuple[str, ...]]:
    return (side, (side,)) if isinstance(side, str) else (side[0], tuple(side[1]))


def teacher_ratio_lines(summary: dict, teacher_label: str, keep=lambda label: True) -> list[str]:
    """Markdown bullets: each kept row's ShapesEval as a multiple of the teacher row's, with its 95% interval
    divided by the same value, and its FD as a multiple of the teacher's."""
    teacher = next(r for r in summary["rows"] if r["label"] == teacher_label)
    acc, fd = teacher["shapes_eval"]["overall"], teacher["fd"]
    lines = []
    for r in summary["rows"]:
        if r is not teacher and keep(r["label"]):
            lo, hi = r["shapes_eval_ci95"]
            lines.append(f"- {r['label']}: ShapesEval {r['shapes_eval']['overall'] / acc:.2f}x [{lo / acc:.2f}, "
                         f"{hi / acc:.2f}], FD {r['fd'] / fd:.2f}x")
    return lines


def shapes_eval_whiskers(rows: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Each row's ShapesEval and its 95% interval as matplotlib's yerr (distances below and above)."""
    values = [r["shapes_eval"]["overall"] for r in rows]
    return values, [[v - r["shapes_eval_ci95"][0] for v, r in zip(values, rows)],
                    [r["shapes_eval_ci95"][1] - v for v, r in zip(values, rows)]]


def shapes_eval_bars(rows: list[dict], labels: list[str], colors: list[str], teacher: float, title: str, path: Path,
                     figsize=(8, 4.2), target: float | None = None) -> None:
    """A bar per row: its ShapesEval with the 95% interval as whiskers; the teacher's 50 steps as a dashed line
    and, with `target` (a multiple of the teacher's), the target as a dotted one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, errors = shapes_eval_whiskers(rows)
    fig, ax = plt.subplots(figsize=figsize)
    ax.bar(range(len(rows)), values, yerr=errors, capsize=6, color=colors)
    ax.axhline(teacher, color="tab:blue", linestyle="--", label=f"teacher DDIM @50 ({teacher:.3f})")
    if target is not None:
        ax.axhline(target * teacher, color="tab:red", linestyle=":", label=f"target {target}x ({target * teacher:.3f})")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("ShapesEval (95% interval)")
    ax.set_title(title)
    ax.set_ylim(0, teacher * 1.2)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparison_table(comparisons: list[dict]) -> list[str]:
    """Markdown lines: a, b, a - b, its 95% interval and the verdict (an interval holding 0 is a tie)."""
    lines = ["Paired comparisons (ShapesEval a - b over the same prompts and seeds, 95% bootstrap interval; "
             "an interval that holds 0 is a tie):", "", "| a | b | a - b | 95% CI | verdict |", "|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['a']} | {c['b']} | {c['difference']:+.3f} | [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] "
                     f"| {c['verdict']} |")
    return lines
