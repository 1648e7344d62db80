"""Scribble adherence of the shipped ControlNet: freshly rendered Shapes scenes are scribbled the way
a hand would (hypersd.shapes.scribbles, drawn at 256 px, then prepared exactly as `generate --control
scribble` prepares a drawing), generated from their captions with the ControlNet, and judged by the
ShapesEval detector (hypersd.embedded.evaluator.adherence: every scribbled object found with its
shape, the caption's colour and its centre within 3 px, nothing else).

Rows: the real renders (the detector's ceiling), the teacher at 50 DDIM steps (guidance 5) with and
without the ControlNet (without: the floor, captions alone), the unified LoRA at 1/2/4/8 steps and
the one-step model, each at its recommended settings (its metadata). Intervals: 95% bootstrap over
scenes (stratified by category); the target "unified @2 >= 0.9x the teacher" is read from the paired
bootstrap interval of the ratio.

    python bench/scribble_adherence.py                 # 300 scenes, the shipped models
    python bench/scribble_adherence.py --scenes 60 --name quick
Writes bench/results/scribble_adherence[-<name>].{json,md} and a picture grid (.png).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, RUNS  # bench/common.py
from PIL import Image

from hypersd.assets import (
    EVALUATOR,
    ONE_STEP_MODEL,
    REFERENCE_SCHEDULER,
    REFERENCE_STEPS,
    SCRIBBLE_CONTROLNET,
    TEACHER,
    TEACHER_GUIDANCE,
    UNIFIED_LORA,
)
from hypersd.core.intervals import bootstrap_interval, paired_difference, paired_ratio, plus_minus, verdict
from hypersd.embedded.evaluator.adherence import TOLERANCE, adherence
from hypersd.embedded.evaluator.detector import ShapesDetector
from hypersd.embedded.evaluator.shapes_eval import judge_images
from hypersd.embedded.rows import metadata_settings, one_step_row
from hypersd.inference.controlnet import controlnet_pipeline, generation_size, load_controlnet, prepare_control
from hypersd.inference.grids import labelled_grid
from hypersd.inference.sample import apply_loras, generate
from hypersd.inference.settings import SampleSettings
from hypersd.inference.unet_file import is_unet_file
from hypersd.models.pipelines import load_pipeline, with_unet_file
from hypersd.progress import quiet_libraries
from hypersd.shapes.scribbles import scribble_map
from hypersd.shapes.world import CATEGORIES, render_array, sample_scene

DRAW_SIZE = 256      # the scribble is drawn at a canvas size, as a person's drawing would be
SEED = 1000          # image i is generated from seed SEED + i
CHUNK = 60           # images per pipeline call


def scenes_and_maps(n: int, size: tuple[int, int]) -> tuple[list, list[Image.Image]]:
    """n fresh scenes, the categories in turn (so the plain fraction is ShapesEval's category mean),
    and their scribbles as the ControlNet sees them."""
    scenes, maps = [], []
    for i in range(n):
        rng = random.Random(f"scribble-adherence/{i}")
        scene = sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        drawing = Image.fromarray(scribble_map(scene, rng, size=DRAW_SIZE))
        scenes.append(scene)
        maps.append(prepare_control(drawing, "scribble", size))
    return scenes, maps


def rows_to_run(unified: Path, one_step: Path, steps: list[int], fp16: bool,
                etas: list[float] = (), scales: list[float] = ()) -> list[tuple[str, SampleSettings, str, float | None]]:
    """(label, settings, which ControlNet: fp32, fp16 (the same weights stored in fp16) or none, control scale
    or None for --scale) for each row that has its model on disk."""
    teacher = SampleSettings(steps=REFERENCE_STEPS, scheduler=REFERENCE_SCHEDULER, guidance=TEACHER_GUIDANCE)
    rows = [(f"teacher @{REFERENCE_STEPS}", teacher, "fp32", None),
            (f"teacher @{REFERENCE_STEPS}, no ControlNet", teacher, "none", None)]
    if unified.is_file():
        two = metadata_settings(unified, 2)
        rows += [(f"unified @{s}", metadata_settings(unified, s), "fp32", None) for s in steps]
        if fp16 and 2 in steps:
            rows.append(("unified @2, fp16-stored ControlNet", two, "fp16", None))
        rows += [(f"unified @2, eta {eta:g}", replace(two, eta=eta), "fp32", None) for eta in etas]
        rows += [(f"unified @2, control scale {c:g}", two, "fp32", c) for c in scales]
    if one_step.is_file():
        rows.append(("one-step @1", one_step_row("one-step @1", one_step).settings, "fp32", None))
    return rows


def fp16_copy(folder: Path, tmp: Path):
    """The ControlNet stored in fp16 and loaded back for fp32 compute, as a shipped fp16 file would be."""
    import torch

    load_controlnet(folder).to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    return load_controlnet(tmp, dtype=torch.float32)


def run_row(pipe, controlnet, settings: SampleSettings, prompts, maps, scale: float, use_control: bool,
            unet: Path | None = None) -> np.ndarray:
    """A row's images; `unet`: a full one-step UNet file in place of the base's UNet."""
    pipe.unload_lora_weights()
    apply_loras(pipe, settings.loras)
    pipe = with_unet_file(pipe, unet) if unet is not None else pipe
    target = controlnet_pipeline(pipe, controlnet) if use_control else pipe
    chunks = []
    for start in range(0, len(prompts), CHUNK):
        end = min(start + CHUNK, len(prompts))
        extra = {"image": maps[start:end], "controlnet_conditioning_scale": scale} if use_control else None
        chunks.append(generate(target, prompts[start:end], replace(settings, loras=[], batch_size=CHUNK),
                               list(range(SEED + start, SEED + end)), extra_call=extra))
    return np.concatenate(chunks)


@functools.lru_cache(maxsize=None)
def file_digest(path: Path) -> str:
    """A weight file's content hash (once per run): the cache follows what a file holds, not when git last wrote it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_row(label: str, settings: SampleSettings, which: str, scale: float, args,
               compute, unet: Path | None = None) -> tuple[np.ndarray, float]:
    """(images, seconds per image) of a row: from bench/runs/scribble-adherence when the same row (settings,
    contents of the LoRA, UNet and ControlNet files, scale, scenes) already ran, else computed and stored."""
    files = [Path(s.path) for s in settings.loras] + ([unet] if unet else []) + ([args.controlnet / "diffusion_pytorch_model.safetensors"]
                                                      if which != "none" else [])
    key = json.dumps({"label": label, "settings": settings.record(), "controlnet": which, "scale": scale,
                      "scenes": args.scenes, "files": [[f.name, file_digest(f)] for f in files]})
    cache = RUNS / "scribble-adherence" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".npz")
    if cache.is_file():
        stored = np.load(cache)
        return stored["images"], float(stored["seconds"])
    start = time.perf_counter()
    images = compute()
    seconds = (time.perf_counter() - start) / len(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, images=images, key=np.array(key), seconds=np.array(seconds))
    return images, seconds


def picture_grid(maps, images: dict[str, np.ndarray], labels: list[str], count: int, path: Path) -> None:
    """Rows = scenes; columns = the scribble, then each labelled row's image of that scene."""
    cells, captions = [], []
    for i in range(count):
        cells.append(np.asarray(maps[i]))
        captions.append("scribble")
        for label in labels:
            cells.append(images[label][i])
            captions.append(label)
    labelled_grid(np.stack(cells), captions, columns=1 + len(labels), cell=96,
                  title="scribble | " + " | ".join(labels)).save(path)


def markdown(summary: dict) -> str:
    lines = [f"# Scribble adherence of `{summary['controlnet']}`", "",
             f"{summary['scenes']} fresh scenes ({', '.join(CATEGORIES)} in turn), scribbled at {DRAW_SIZE} px "
             f"and prepared as `generate --control scribble` does; control scale {summary['scale']}. An image "
             f"adheres when the ShapesEval detector finds exactly the scribbled objects, each with its shape, the "
             f"caption's colour and its centre within {TOLERANCE:g} px. 95% bootstrap intervals over scenes.", "",
             "| row | steps | scheduler | cfg | adherence | ShapesEval-style caption pass | s/image |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['label']} | {r.get('steps', '-')} | {r.get('scheduler', '-')} | {r.get('guidance', '-')} "
                     f"| **{plus_minus(r['adherence'], *r['ci95'])}** | {r.get('caption_pass', '-')} "
                     f"| {r.get('seconds_per_image', '-')} |")
    lines += ["", "Against the teacher at 50 steps with the ControlNet (paired bootstrap over scenes):", "",
              "| row | ratio | 95% CI |", "|---|---|---|"]
    for label, c in summary["ratios"].items():
        lines.append(f"| {label} | {_ratio_cells(c)} |")
    target = summary.get("target")
    if target:
        lines += ["", f"Target: unified @2 >= 0.9x the teacher's adherence: measured "
                      f"{_ratio_cells(target).replace(' | ', ' ')}, **{target['verdict']}**."]
    fp16 = summary.get("fp16")
    if fp16:
        lines += ["", f"ControlNet stored in fp16 against fp32 (unified @2, paired): {fp16['difference']:+.3f} "
                      f"[{fp16['ci95'][0]:+.3f}, {fp16['ci95'][1]:+.3f}], **{fp16['verdict']}**; images differ by "
                      f"{fp16['mean_abs_pixel_diff']:.2f} grey levels on average (at most {fp16['max_abs_pixel_diff']})."]
    lines += ["", f"Grid: `{summary['grid']}` (rows: scenes; columns: the scribble, then each model).",
              f"Command: `{summary['command']}`"]
    return "\n".join(lines) + "\n"


def _ratio_cells(c: dict) -> str:
    if np.isnan(c["ratio"]):
        return "n/a (the teacher adheres nowhere) | -"
    return f"{c['ratio']:.2f}x | [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"


def target_verdict(ratio: float, lo: float, hi: float, goal: float = 0.9) -> str:
    if np.isnan(ratio):
        return "not measurable (the teacher adheres nowhere)"
    if lo >= goal:
        return "met beyond the interval"
    if hi < goal:
        return f"missed (the whole interval is below {goal}x)"
    return f"met in the point estimate, interval holds {goal}x" if ratio >= goal else \
        f"missed in the point estimate, interval holds {goal}x"


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--controlnet", type=Path, default=SCRIBBLE_CONTROLNET)
    parser.add_argument("--unified", type=Path, default=UNIFIED_LORA)
    parser.add_argument("--one-step", type=Path, default=ONE_STEP_MODEL)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--name", default="")
    parser.add_argument("--fp16", action="store_true", help="add a row with the ControlNet stored in fp16")
    parser.add_argument("--eta", type=float, nargs="*", default=[], help="extra unified @2 rows at these TCD etas")
    parser.add_argument("--scales", type=float, nargs="*", default=[],
                        help="extra unified @2 rows at these control scales")
    args = parser.parse_args()
    pipe = load_pipeline(TEACHER)
    controlnets = {"fp32": load_controlnet(args.controlnet), "none": None}
    if args.fp16:
        controlnets["fp16"] = fp16_copy(args.controlnet, Path(tempfile.mkdtemp()) / "controlnet")
    detector = ShapesDetector.load(EVALUATOR)
    scenes, maps = scenes_and_maps(args.scenes, generation_size(pipe))
    prompts = [s.caption for s in scenes]
    categories = [s.category for s in scenes]
    images = {"real render": render_array(scenes)}
    rows = []
    plan = [("real render", None, "none", None)] + rows_to_run(args.unified, args.one_step, args.steps, args.fp16, args.eta, args.scales)
    for label, settings, which, scale in plan:
        scale = args.scale if scale is None else scale
        row = {"label": label}
        if settings is not None:
            unet = args.one_step if label == "one-step @1" and is_unet_file(args.one_step) else None
            images[label], seconds = cached_row(label, settings, which, scale, args, lambda: run_row(
                pipe, controlnets[which], settings, prompts, maps, scale, which != "none", unet), unet)
            row.update(steps=settings.steps, scheduler=settings.scheduler, guidance=settings.guidance,
                       seconds_per_image=round(seconds, 3))
        passed = adherence(detector, images[label], scenes)
        caption = [r["passed"] for r in judge_images(detector, images[label], prompts)]
        row.update(adherence=float(np.mean(passed)), ci95=list(bootstrap_interval(passed, categories)),
                   caption_pass=round(float(np.mean(caption)), 3), passed="".join("1" if p else "0" for p in passed))
        rows.append(row)
        print(f"{label}: adherence {plus_minus(row['adherence'], *row['ci95'])}")
    bits = {r["label"]: [c == "1" for c in r["passed"]] for r in rows}
    reference = f"teacher @{REFERENCE_STEPS}"
    ratios = {}
    for label in bits:
        if label not in (reference, "real render"):
            value, lo, hi = paired_ratio(bits[label], bits[reference], categories)
            ratios[label] = {"ratio": value, "ci95": [lo, hi]}
    stem = RESULTS / ("scribble_adherence" + (f"-{args.name}" if args.name else ""))
    shown = [r for r in (reference, "unified @1", "unified @2", "unified @4", "one-step @1") if r in images]
    picture_grid(maps, images, shown, 8, stem.with_suffix(".png"))
    summary = {"controlnet": str(args.controlnet), "scenes": args.scenes, "scale": args.scale, "rows": rows,
               "ratios": ratios, "grid": str(stem.with_suffix(".png").relative_to(RESULTS.parents[1])),
               "command": "python bench/scribble_adherence.py" + (" --fp16" if args.fp16 else "")
               + (f" --eta {' '.join(f'{e:g}' for e in args.eta)}" if args.eta else "")
               + (f" --scales {' '.join(f'{c:g}' for c in args.scales)}" if args.scales else "")
               + (f" --scenes {args.scenes} --name {args.name}" if args.name else "")}
    if "unified @2, fp16-stored ControlNet" in bits:
        d, lo, hi = paired_difference(bits["unified @2, fp16-stored ControlNet"], bits["unified @2"], categories)
        pixels = np.abs(images["unified @2, fp16-stored ControlNet"].astype(int) - images["unified @2"].astype(int))
        summary["fp16"] = {"difference": d, "ci95": [lo, hi], "verdict": verdict(lo, hi),
                           "mean_abs_pixel_diff": float(pixels.mean()), "max_abs_pixel_diff": int(pixels.max())}
    if "unified @2" in ratios:
        c = ratios["unified @2"]
        summary["target"] = {**c, "verdict": target_verdict(c["ratio"], *c["ci95"])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    stem.with_suffix(".md").write_text(markdown(summary))
    print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
