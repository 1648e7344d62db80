"""Quality against training step on the full evaluator: every snapshot a run kept
(`training.save_lora_every`, RUN/snapshots/<stage>-<step>.safetensors), each LoRA sampled at its own
recommended settings (its metadata), a full-UNet generator's (<stage>-unet-<step>) at one LCM step,
on the 600 ShapesEval prompts with 95% intervals and FD; the teacher's 50-step images are the PSNR
reference. Picks the snapshot to ship: the best ShapesEval, ties
(overlapping intervals with the best) broken by the lower FD.

    python bench/snapshots.py bench/runs/long/dmd2-one-step-tscd-s0
    python bench/snapshots.py RUN --steps 200 300 --prompts 600
Writes bench/results/snapshots-<run name>.{json,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RUNS, compare_rows, comparison_table, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, TEACHER
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts


def snapshot_files(run: Path, steps: list[int] | None) -> list[tuple[str, int, Path]]:
    """(stage, step, file) of the run's snapshots, in step order, the chosen steps only when given."""
    found = []
    for path in sorted((run / "snapshots").glob("*.safetensors")):
        stage, _, step = path.stem.rpartition("-")
        if step.isdigit() and (not steps or int(step) in steps):
            found.append((stage, int(step), path))
    return sorted(found, key=lambda x: (x[0], x[1]))


def snapshot_row(stage: str, step: int, path: Path) -> Row:
    """A LoRA snapshot at its metadata's settings; a full-UNet generator's (<stage>-unet, stage one-step-t<t>)
    as the one-step model samples: one LCM step at its timestep t."""
    label = f"{stage} step {step}"
    if not stage.endswith("-unet"):
        return Row(label, metadata_settings(path))
    timestep = int(stage.removesuffix("-unet").rpartition("-t")[2])
    return Row(label, SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[timestep]), unet=path)


def best_row(rows: list[dict]) -> dict:
    """The best ShapesEval; among the rows whose interval reaches the best's value, the lowest FD."""
    top = max(rows, key=lambda r: r["shapes_eval"]["overall"])
    tied = [r for r in rows if r["shapes_eval_ci95"][1] >= top["shapes_eval"]["overall"]]
    return min(tied, key=lambda r: r["fd"])


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, nargs="*", default=None)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    files = snapshot_files(args.run, args.steps)
    if not files:
        raise SystemExit(f"no snapshots in {args.run / 'snapshots'}")
    rows = [snapshot_row(stage, step, path) for stage, step, path in files]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / f"snapshots-{args.run.name}", n_real=args.n_real)
    summary["files"] = {f"{stage} step {step}": str(path) for stage, step, path in files}
    best = best_row(summary["rows"])
    summary["best"] = best["label"]
    labels = [r["label"] for r in summary["rows"]]
    summary["comparisons"] = compare_rows(summary, prompts, [(label, best["label"]) for label in labels
                                                             if label != best["label"]])
    lines = [f"# Snapshots of `{args.run}`", "", f"{len(prompts)} ShapesEval prompts; each snapshot at its "
             "metadata's settings.", "", markdown_table(summary),
             f"Best (highest ShapesEval; within its interval, the lowest FD): **{best['label']}** "
             f"(`{summary['files'][best['label']]}`).", ""]
    lines += comparison_table(summary["comparisons"])
    lines += ["", f"Command: `python bench/snapshots.py {args.run}" +
              (f" --steps {' '.join(map(str, args.steps))}" if args.steps else "") + "`"]
    write_results(f"snapshots-{args.run.name}", summary, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
