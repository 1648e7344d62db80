"""RUN/progress.png: a run's curves from its log.jsonl, drawn against training time (hours, across
resumes): the logged loss parts, smoothed, and the quick evaluations (training.eval_every)."""

from __future__ import annotations

import json
from pathlib import Path

from hypersd.io import atomic_file

LOSS_PARTS = ("loss", "dmd", "gan", "mse", "regression", "fake", "classifier")


def read_log(run_dir: Path) -> list[dict]:
    """The log's records; a torn last line (a kill mid-write) is skipped."""
    records = []
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def progress_series(records: list[dict]) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list]]:
    """(loss part -> [(hours, value)], quick-eval label -> [(hours, score)]) in log order; records
    logged twice by a resumed stretch keep their last value."""
    losses: dict[str, dict[tuple, tuple[float, float]]] = {}
    evals: dict[str, dict[tuple, tuple[float, float]]] = {}
    for r in records:
        if "elapsed_s" not in r:
            continue
        hours, key = r["elapsed_s"] / 3600, (r.get("stage"), r.get("step"))
        if r.get("event") == "quick_eval":
            for label, value in r["scores"].items():
                evals.setdefault(f"{r['stage']} {label}", {})[key] = (hours, value)
        elif r.get("event") is None:
            for part in LOSS_PARTS:
                if part in r:
                    losses.setdefault(part, {})[key] = (hours, r[part])
    ordered = lambda d: {k: sorted(v.values()) for k, v in d.items()}  # noqa: E731
    return ordered(losses), ordered(evals)


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1): i + 1]
        out.append(sum(part) / len(part))
    return out


def plot_progress(run_dir: Path) -> Path | None:
    """Write RUN/progress.png; None when the log has nothing to draw yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, evals = progress_series(read_log(run_dir))
    if not losses and not evals:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for part, points in losses.items():
        left.plot([h for h, _ in points], _smooth([v for _, v in points]), label=part)
    left.set_yscale("symlog", linthresh=1e-3)
    left.set_title("loss parts (mean of 10 logged steps)", fontsize=10)
    for label, points in evals.items():
        right.plot([h for h, _ in points], [v for _, v in points], marker="o", label=label)
    right.set_title("quick ShapesEval of the student", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("training time (hours)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(run_dir) / "progress.png"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
