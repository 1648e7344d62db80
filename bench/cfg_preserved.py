"""CFG-preserved TSCD against folded TSCD and the teacher across guidance scales (issue 16).

Trains (or reuses) configs/cfg-preserved.yaml in two variants, A (the recipe: teacher followed without
guidance, caption dropout 0.1) and B (teacher guidance ~ U[1, 2], dropout 0.2), and compares, on the
ShapesEval prompts with 95% bootstrap intervals:
- ShapesEval and FD at 8 and 12 trailing-DDIM steps for guidance 1, 2, 3, 5, 8: the CFG-preserved LoRA
  (the chosen variant), the folded TSCD LoRA of the same budget (configs/tscd.yaml's 4-segment stage)
  and the teacher (DDIM) at the same steps; the teacher at 50 steps; variant B at 8 steps;
- negative prompts where the caption leaves the size free: `a {color} {shape}` prompts, without and
  with the negative prompt `a large {color} {shape}`; the fraction of images holding exactly one
  object of the caption's colour and shape, drawn small (ShapesEval detector); for the preserved LoRA
  at its recommended settings and for the teacher at 50 steps; the shift with a paired interval.
- a picture grid: rows guidance 1/3/5/8, columns prompts, for the three models.

    python bench/cfg_preserved.py                        # 600 prompts, steps 8 and 12
    python bench/cfg_preserved.py --prompts 300 --steps 8
Rows are evaluated in groups cached under bench/runs/cfg-preserved/ (a rerun continues).
Writes bench/results/cfg_preserved.{json,md} and cfg_preserved-grid.png.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, RUNS, compare_rows, comparison_table, train_or_reuse  # bench/common.py
from PIL import Image

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE
from hypersd.core.intervals import paired_difference, plus_minus
from hypersd.embedded.evaluator.detector import ShapesDetector
from hypersd.embedded.evaluator.evaluate import Row, evaluate, fd_cell, overall_cell
from hypersd.inference.grids import labelled_grid
from hypersd.inference.sample import apply_loras, generate
from hypersd.inference.settings import SampleSettings
from hypersd.lora.files import LoraSpec
from hypersd.models.pipelines import load_pipeline
from hypersd.progress import quiet_libraries
from hypersd.shapes.batches import to_tensor
from hypersd.shapes.prompts import standard_prompts
from hypersd.shapes.world import COLORS, SHAPES
from hypersd.train.recipe import load_recipe

GUIDANCES = (1.0, 2.0, 3.0, 5.0, 8.0)
VARIANTS = {  # overrides of configs/cfg-preserved.yaml
    "A": [],
    "B": [f"stages.{i}.{key}" for i in (0, 1) for key in ("guidance_max=2.0", "caption_dropout=0.2")],
}
DEFAULT_VARIANT = "A"
FOLDED = RUNS / "long" / "tscd-s0" / "loras" / "tscd-k4.safetensors"  # configs/tscd.yaml, stage k4
CACHE = RUNS / "cfg-preserved"
NEGATIVE_SEEDS = 10  # images per colour-shape pair


def train_variant(name: str, seed: int = 0) -> Path:
    recipe = load_recipe(ROOT / "configs" / "cfg-preserved.yaml",
                         VARIANTS[name] + ([f"training.seed={seed}"] if seed else []))
    out = RUNS / "long" / f"cfg-preserved-{name}-s{seed}"
    train_or_reuse(recipe, TEACHER, out)
    return out / "loras" / "tscd-k4.safetensors"


def group_rows(model: str, lora: Path | None, steps: int, guidances=GUIDANCES) -> list[Row]:
    scheduler = "ddim" if lora is None else "ddim-trailing"
    loras = [LoraSpec(lora)] if lora else []
    return [Row(f"{model} @{steps} g{g:g}", SampleSettings(steps=steps, scheduler=scheduler, guidance=g, loras=loras))
            for g in guidances]


def evaluate_group(name: str, rows: list[Row], prompts: list[str], n_real: int) -> list[dict]:
    """Evaluated rows of one group, from the cache when this group already ran on these prompts."""
    out = CACHE / f"{name}-{len(prompts)}"
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())["rows"]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, out, n_real=n_real, psnr_reference=False)
    done.write_text(json.dumps(summary))
    return summary["rows"]


def negative_prompt_shift(pipe, detector, settings: SampleSettings) -> dict:
    """Fraction of `a {color} {shape}` images that hold exactly that object drawn small, without and
    with the negative prompt `a large {color} {shape}` (same seeds), and the paired shift."""
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    prompts = [f"a {c} {s}" for c, s in pairs for _ in range(NEGATIVE_SEEDS)]
    negatives = [f"a large {c} {s}" for c, s in pairs for _ in range(NEGATIVE_SEEDS)]
    seeds = list(range(5000, 5000 + len(prompts)))
    apply_loras(pipe, settings.loras)
    small = {}
    for key, negative in (("without", None), ("with", negatives)):
        images = generate(pipe, prompts, replace(settings, loras=[]), seeds, negative_prompts=negative)
        found = detector.detect(to_tensor(images))
        small[key] = [len(f) == 1 and f[0].size == "small" and f"a {f[0].color} {f[0].shape}" == p
                      for f, p in zip(found, prompts)]
    if settings.loras:
        pipe.unload_lora_weights()
    strata = ["all"] * len(prompts)
    shift, lo, hi = paired_difference(small["with"], small["without"], strata)
    return {"small_without": float(np.mean(small["without"])), "small_with": float(np.mean(small["with"])),
            "shift": shift, "shift_ci95": [lo, hi], "images": len(prompts),
            "bits": {k: "".join("1" if b else "0" for b in v) for k, v in small.items()}}


def shift_ratio(student: dict, teacher: dict) -> tuple[float, float, float]:
    """(student shift / teacher shift, 95% interval): one bootstrap resample of the images serves both."""
    rng = np.random.default_rng(0)
    bits = {who: {k: np.array([c == "1" for c in v]) for k, v in d["bits"].items()}
            for who, d in (("s", student), ("t", teacher))}
    n = len(bits["s"]["with"])
    ratios = []
    for _ in range(1000):
        i = rng.integers(0, n, n)
        ts = bits["t"]["with"][i].mean() - bits["t"]["without"][i].mean()
        if ts > 0:
            ratios.append((bits["s"]["with"][i].mean() - bits["s"]["without"][i].mean()) / ts)
    value = student["shift"] / teacher["shift"] if teacher["shift"] > 0 else float("nan")
    lo, hi = np.percentile(ratios, [2.5, 97.5]) if ratios else (float("nan"), float("nan"))
    return value, float(lo), float(hi)


def picture_grid(pipe, models: dict[str, SampleSettings], path: Path) -> None:
    """Rows: guidance 1/3/5/8; columns: prompts; one panel per model, stacked."""
    prompts = standard_prompts()[:6]
    panels = []
    for label, settings in models.items():
        apply_loras(pipe, settings.loras)
        images, captions = [], []
        for g in (1.0, 3.0, 5.0, 8.0):
            images.append(generate(pipe, prompts, replace(settings, guidance=g, loras=[]), list(range(len(prompts)))))
            captions += [f"g{g:g}: {p}" for p in prompts]
        if settings.loras:
            pipe.unload_lora_weights()
        panels.append(labelled_grid(np.concatenate(images), captions, columns=len(prompts), cell=96, title=label))
    width = max(p.width for p in panels)
    grid = Image.new("RGB", (width, sum(p.height for p in panels)), "white")
    y = 0
    for panel in panels:
        grid.paste(panel, (0, y))
        y += panel.height
    grid.save(path)


def pivot(rows: list[dict], models: list[str], steps: int) -> list[str]:
    by_label = {r["label"]: r for r in rows}
    lines = [f"ShapesEval at {steps} steps (95% interval), FD below:", "",
             "| model | " + " | ".join(f"g{g:g}" for g in GUIDANCES) + " |", "|---" * (len(GUIDANCES) + 1) + "|"]
    for model in models:
        cells = [by_label.get(f"{model} @{steps} g{g:g}") for g in GUIDANCES]
        lines.append(f"| {model} | " + " | ".join(overall_cell(c) if c else "-" for c in cells) + " |")
        lines.append("| FD | " + " | ".join(fd_cell(c) if c else "-" for c in cells) + " |")
    return lines


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 12])
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--folded", type=Path, default=FOLDED)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to train and measure (the default variant always)")
    args = parser.parse_args()
    loras = {name: train_variant(name) for name in dict.fromkeys([DEFAULT_VARIANT, *args.variants])}
    preserved = loras[DEFAULT_VARIANT]
    prompts = standard_prompts()[: args.prompts]
    groups = {}
    for steps in args.steps:
        groups[f"preserved-{steps}"] = group_rows(f"CFG-preserved ({DEFAULT_VARIANT})", preserved, steps)
        groups[f"folded-{steps}"] = group_rows("folded TSCD", args.folded, steps)
        groups[f"teacher-{steps}"] = group_rows("teacher DDIM", None, steps)
    if "B" in loras:
        groups["variant-B-8"] = group_rows("CFG-preserved (B)", loras["B"], 8, (3.0, 5.0, 8.0))
    groups["teacher-50"] = [Row("teacher DDIM @50 g5", SampleSettings(steps=50, scheduler="ddim",
                                                                     guidance=TEACHER_GUIDANCE))]
    rows = []
    for name, group in groups.items():
        rows += evaluate_group(name, group, prompts, args.n_real)
    summary = {"prompts": len(prompts), "variants": VARIANTS, "default_variant": DEFAULT_VARIANT,
               "loras": {k: str(v) for k, v in loras.items()}, "folded": str(args.folded), "rows": rows}
    pairs = [(f"CFG-preserved ({DEFAULT_VARIANT}) @{s} g5", f"folded TSCD @{s} g5") for s in args.steps]
    pairs += [(f"CFG-preserved ({DEFAULT_VARIANT}) @{s} g5", f"folded TSCD @{s} g1") for s in args.steps]
    pairs += [(f"CFG-preserved (B) @8 g{g:g}", f"CFG-preserved ({DEFAULT_VARIANT}) @8 g{g:g}")
              for g in (3.0, 5.0, 8.0)] if "B" in loras else []
    summary["comparisons"] = compare_rows(summary, prompts, pairs)

    pipe = load_pipeline(TEACHER)
    detector = ShapesDetector.load(EVALUATOR)
    recommended = SampleSettings(steps=8, scheduler="ddim-trailing", guidance=TEACHER_GUIDANCE,
                                 loras=[LoraSpec(preserved)])
    teacher50 = SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE)
    negative_file = CACHE / "negative.json"
    if negative_file.is_file():
        negative = json.loads(negative_file.read_text())
    else:
        negative = {"CFG-preserved @8 g5": negative_prompt_shift(pipe, detector, recommended),
                    "teacher DDIM @50 g5": negative_prompt_shift(pipe, detector, teacher50)}
        negative_file.write_text(json.dumps(negative))
    ratio = shift_ratio(negative["CFG-preserved @8 g5"], negative["teacher DDIM @50 g5"])
    summary["negative_prompts"] = {k: {key: v for key, v in d.items() if key != "bits"} for k, d in negative.items()}
    summary["negative_prompts"]["ratio"] = {"value": ratio[0], "ci95": [ratio[1], ratio[2]]}
    grid = RESULTS / "cfg_preserved-grid.png"
    picture_grid(pipe, {f"CFG-preserved ({DEFAULT_VARIANT}), 8 steps": recommended,
                        "folded TSCD, 8 steps": replace(recommended, loras=[LoraSpec(args.folded)]),
                        "teacher DDIM, 8 steps": SampleSettings(steps=8, scheduler="ddim", guidance=5.0)}, grid)
    write(summary, args, grid)


def variant_choice(rows: list[dict]) -> str:
    """Which variant the recipe keeps: the higher mean ShapesEval at guidance 5 and 8 (the release's range), 8 steps."""
    score = {r["label"]: r["shapes_eval"]["overall"] for r in rows}
    means = {v: np.mean([score[f"CFG-preserved ({v}) @8 g{g}"] for g in (5, 8)]) for v in ("A", "B")}
    best = max(means, key=means.get)
    return (f"Variant choice (mean ShapesEval at guidance 5 and 8, the release's range, 8 steps): A {means['A']:.3f}, "
            f"B {means['B']:.3f}; the recipe's default is {DEFAULT_VARIANT}"
            f"{' (the better one)' if best == DEFAULT_VARIANT else ' although ' + best + ' scores higher'}. B's teacher "
            "guidance up to 2 folds part of the guidance into the student, so its best guidance moves down (g3).")


def write(summary: dict, args, grid: Path) -> None:
    models = [f"CFG-preserved ({DEFAULT_VARIANT})", "folded TSCD", "teacher DDIM"]
    lines = ["# CFG-preserved TSCD (issue 16)", "",
             f"{summary['prompts']} ShapesEval prompts, same seeds for every row; FD against {args.n_real} real renders "
             "(± the sd over 5 resamples of the generated set); ShapesEval ± the half-width of its 95% bootstrap "
             "interval. CFG-preserved: configs/cfg-preserved.yaml (TSCD 8 -> 4 segments, 600 + 600 iterations), "
             f"variant {DEFAULT_VARIANT}; folded TSCD: configs/tscd.yaml's 4-segment stage (the same budget). "
             "Guidance <= 1 is no guidance (the conditional prediction alone).", ""]
    for steps in args.steps:
        lines += pivot(summary["rows"], models, steps) + [""]
    if "B" in summary["loras"]:
        lines += pivot(summary["rows"], ["CFG-preserved (B)"], 8) + [""]
        lines += [variant_choice(summary["rows"]), ""]
    else:
        lines += ["Variant B (teacher guidance ~ U[1, 2], dropout 0.2) is not measured in this run.", ""]
    t50 = next(r for r in summary["rows"] if r["label"] == "teacher DDIM @50 g5")
    lines += [f"Teacher DDIM @50, guidance 5: {overall_cell(t50)}, FD {fd_cell(t50)}.", ""]
    lines += comparison_table(summary["comparisons"]) + [""]
    neg = summary["negative_prompts"]
    lines += ["Negative prompts where the caption leaves the size free (`a {color} {shape}`, all 24 pairs x "
              f"{NEGATIVE_SEEDS} seeds; negative prompt `a large {{color}} {{shape}}`): fraction of images holding "
              "exactly the named object, drawn small.", "",
              "| model | without | with | shift (95% CI) |", "|---|---|---|---|"]
    for label in ("CFG-preserved @8 g5", "teacher DDIM @50 g5"):
        d = neg[label]
        lines.append(f"| {label} | {d['small_without']:.3f} | {d['small_with']:.3f} | "
                     f"{plus_minus(d['shift'], *d['shift_ci95'])} |")
    r = neg["ratio"]
    goal = "met" if r["value"] >= 0.8 else "missed"
    lines += ["", f"Shift of the CFG-preserved LoRA / the teacher's: {r['value']:.2f}x "
                  f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] (target >= 0.8x: {goal} in the point estimate"
                  f"{', beyond the interval' if r['ci95'][0] >= 0.8 else ''}).", "",
              f"Grid: `{grid.relative_to(ROOT)}` (panels: models; rows: guidance 1/3/5/8; columns: prompts).", "",
              f"Command: `python bench/cfg_preserved.py --prompts {summary['prompts']} --steps "
              f"{' '.join(map(str, args.steps))} --variants {' '.join(summary['loras'])}`"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cfg_preserved.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "cfg_preserved.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'cfg_preserved.md'}")


if __name__ == "__main__":
    main()
