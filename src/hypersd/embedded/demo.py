"""The report of `make demo`: a CPU-sized TSCD distillation of the shipped teacher, then the teacher
(DDIM, CFG on) at 1 to 50 steps beside the distilled LoRAs at 1 to 8 steps, all scored."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hypersd.assets import DEMO_RECIPE, EVALUATOR, ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE, UNIFIED_LORA
from hypersd.embedded.evaluator.evaluate import Row, evaluate
from hypersd.inference.grids import labelled_grid
from hypersd.inference.settings import SampleSettings
from hypersd.io import atomic_file, write_text
from hypersd.shapes.prompts import standard_prompts

TEACHER_STEPS = (1, 2, 4, 8, 50)


def teacher_rows(steps=TEACHER_STEPS) -> list[Row]:
    return [Row(f"teacher DDIM @{s}", SampleSettings(steps=s, scheduler="ddim", guidance=TEACHER_GUIDANCE))
            for s in steps]


def steps_comparison(out: Path, summary: dict, n: int = 8) -> Path:
    """One picture: the same n prompts (columns) at every row's settings (rows)."""
    tiles, labels = [], []
    for row in summary["rows"]:
        folder = out / row["samples"]
        records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()[:n]]
        for i, record in enumerate(records):
            tiles.append(np.asarray(Image.open(folder / record["file"]).convert("RGB")))
            labels.append(f"{row['label']}" if i == 0 else record["prompt"])
    path = out / "steps_comparison.png"
    grid = labelled_grid(np.stack(tiles), labels, columns=n,
                         title="same prompt and noise per column; first label names the row")
    with atomic_file(path) as tmp:
        grid.save(tmp, format="PNG")
    return path


def distill_lines(distill: dict | None) -> list[str]:
    if not distill:
        return []
    return [f"Distilled rows: TSCD LoRAs trained by this demo with `{Path(distill['recipe']).name}` in "
            f"{distill['seconds'] / 60:.1f} min (run folder [`{distill['run']}/`]({distill['run']}/): "
            "resolved recipe, log, per-stage LoRAs and grids); sampled with DDIM trailing, no guidance. "
            "`TSCD @n` is the final (k = 1) TSCD LoRA at n steps; `TSCD stage kK @K` is stage K's LoRA at K steps; "
            "`Hyper-SD unified @n` (when the recipe runs feedback and score distillation) is the unified LoRA "
            "with the TCD scheduler, eta 0.3.", ""]


def write_report_md(out: Path, summary: dict, seconds: float) -> Path:
    lines = [
        "# hypersd demo report",
        "",
        f"Model: `{summary['model']}`; {summary['prompts']} ShapesEval prompts (standard set), "
        f"FD against {summary['real_images']} real renders in the evaluator's feature space; "
        f"PSNR against the teacher's 50-step DDIM sample (guidance {TEACHER_GUIDANCE:g}) from the same noise.",
        f"Evaluator on real renders (sanity check): overall {summary['real_shapes_eval']['overall']:.3f}.",
        "",
        *distill_lines(summary.get("distill")),
        (out / "metrics.md").read_text(),
        "![metrics against steps](metrics.png)",
        "",
        "![same prompts at every setting](steps_comparison.png)",
        "",
        "Per-row samples (PNGs, samples.jsonl, judgements.jsonl, grid.png):",
        "",
        *[f"- [{r['label']}]({r['samples']}/grid.png)" for r in summary["rows"]],
        "",
        f"Wall time: {seconds / 60:.1f} min.",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def distill_for_demo(recipe_file: Path, model: Path, out: Path, overrides=(), log=print) -> dict:
    """Train the demo's TSCD recipe into out/tscd; returns what the report says about it."""
    from hypersd.train.recipe import load_recipe
    from hypersd.train.run import Run

    recipe = load_recipe(recipe_file, list(overrides))
    from hypersd.train.outputs import stage_name

    log(f"distilling: {recipe_file.name}, stages {', '.join(stage_name(s) for s in recipe.stages)}")
    start = time.time()
    metrics = Run(recipe, model, out / "tscd").train()
    return {"recipe": str(recipe_file), "run": "tscd", "seconds": time.time() - start,
            "stages": metrics["stages"]}


def run_demo(out: Path, n_prompts: int = 600, n_real: int = 2000, model: Path = TEACHER,
             evaluator: Path = EVALUATOR, steps=TEACHER_STEPS, recipe: Path | None = DEMO_RECIPE,
             recipe_overrides=(), log=print) -> Path:
    start = time.time()
    rows = teacher_rows(steps)
    distill = None
    if recipe is not None:
        from hypersd.embedded.rows import distilled_rows, feedback_rows, unified_rows

        distill = distill_for_demo(recipe, model, out, recipe_overrides, log=log)
        run = out / "tscd"
        rows += distilled_rows(run, "TSCD", per_stage=True) + feedback_rows(run) + unified_rows(run)
    if model == TEACHER:  # the shipped one-step model and unified LoRA, trained on this teacher
        from hypersd.embedded.rows import shipped_rows

        rows += shipped_rows(ONE_STEP_MODEL, UNIFIED_LORA)
    prompts = standard_prompts()[:n_prompts]
    summary = evaluate(model, rows, prompts, evaluator, out, n_real=n_real, log=log)
    summary["distill"] = distill
    write_text(out / "metrics.json", json.dumps(summary, indent=2))
    steps_comparison(out, summary)
    return write_report_md(out, summary, time.time() - start)
