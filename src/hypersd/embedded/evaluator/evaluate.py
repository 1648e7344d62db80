"""`hypersd eval`: sample a model at several settings and score each one.

For each row: ShapesEval accuracy (per category, overall), Frechet distance to real renders in
the evaluator's feature space, and PSNR against the teacher's 50-step DDIM sample from the same
noise and prompt. Writes metrics.json, metrics.md, metrics.png and one samples folder (with grid)
per row.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hypersd.assets import REFERENCE_SCHEDULER, REFERENCE_STEPS, TEACHER_GUIDANCE
from hypersd.core.intervals import bootstrap_interval, fd_spread
from hypersd.core.metrics import frechet_distance, mean_finite, psnr_uint8
from hypersd.embedded.evaluator.detector import ShapesDetector
from hypersd.embedded.evaluator.shapes_eval import accuracy_table, judge_images
from hypersd.inference.sample import apply_loras, generate, write_samples
from hypersd.inference.settings import SampleSettings
from hypersd.io import atomic_file, write_text
from hypersd.models.pipelines import load_pipeline, with_unet_file
from hypersd.models.tiny_vae import with_tiny_vae
from hypersd.shapes.batches import to_tensor
from hypersd.shapes.world import CATEGORIES, render_array, sample_scene

REAL_SEED = 31337


@dataclass
class Row:
    label: str
    settings: SampleSettings
    model: Path | None = None  # another pipeline folder (a distilled full UNet); None: the evaluated model
    unet: Path | None = None   # a full UNet file in place of the evaluated model's UNet (hypersd.inference.unet_file)
    vae: Path | None = None    # a tiny VAE folder decoding in place of the model's VAE (hypersd.models.tiny_vae)


@torch.no_grad()
def features(detector: ShapesDetector, images: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate([
        detector(to_tensor(images[i:i + batch]))["features"].numpy()
        for i in range(0, len(images), batch)
    ])


@lru_cache(maxsize=4)
def real_images(n: int, seed: int = REAL_SEED) -> np.ndarray:
    """n real renders, categories round-robin like the standard prompt set."""
    rng = random.Random(seed)
    return render_array([sample_scene(rng, CATEGORIES[i % len(CATEGORIES)]) for i in range(n)])


def score(detector, images: np.ndarray, prompts: list[str], real_feats: np.ndarray,
          reference: np.ndarray | None) -> tuple[dict, list[dict]]:
    """Metrics of one set of images, and the per-image judgements."""
    records = judge_images(detector, images, prompts)
    feats = features(detector, images)
    passed, categories = [r["passed"] for r in records], [r["category"] for r in records]
    result = {"shapes_eval": accuracy_table(records),
              "shapes_eval_ci95": bootstrap_interval(passed, categories),
              "passed": "".join("1" if p else "0" for p in passed),  # per prompt: paired comparisons
              "fd": frechet_distance(feats, real_feats),
              "fd_spread": fd_spread(feats, real_feats)}
    if reference is not None:
        result["psnr_vs_teacher"] = mean_finite(psnr_uint8(images, reference))
    return result, records


def evaluate(model: Path, rows: list[Row], prompts: list[str], detector_dir: Path, out: Path,
             n_real: int = 2000, seed: int = 0, log=print, extra_scores=None, psnr_reference: bool = True) -> dict:
    """Sample and score every row; the teacher reference is the base model without LoRA (its 50-step
    images, for PSNR; `psnr_reference=False` skips them and the PSNR column).
    `extra_scores(images_uint8, prompts) -> dict` adds more per-row numbers (e.g. rewards)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    detector = ShapesDetector.load(detector_dir)
    real_feats = features(detector, real_images(n_real))
    seeds = [seed + i for i in range(len(prompts))]
    pipe = load_pipeline(model)
    reference_settings = SampleSettings(steps=REFERENCE_STEPS, scheduler=REFERENCE_SCHEDULER,
                                        guidance=TEACHER_GUIDANCE, seed=seed)
    reference, reference_seconds = (_reference_images(pipe, out, prompts, seeds, reference_settings)
                                    if psnr_reference else (None, None))
    results, teacher_pipe, other = [], pipe, (None, None)  # one other model folder loaded at a time
    for row in rows:
        start = time.time()
        if row.model is not None and other[0] != Path(row.model).resolve():
            other = (Path(row.model).resolve(), load_pipeline(row.model))
        pipe = teacher_pipe if row.model is None else other[1]
        if row.unet is not None:
            pipe = with_unet_file(teacher_pipe, row.unet)
        if row.vae is not None:
            pipe = with_tiny_vae(pipe, row.vae)
        apply_loras(pipe, row.settings.loras)
        if row.model is None and row.unet is None and row.vae is None and reference is not None and _same(row.settings, reference_settings):
            images, seconds = reference, reference_seconds
        else:
            images = generate(pipe, prompts, row.settings, seeds, progress_desc=row.label)
            seconds = time.time() - start
        if row.settings.loras:
            pipe.unload_lora_weights()
        metrics, records = score(detector, images, prompts, real_feats, reference)
        folder = out / "samples" / _slug(row.label)
        write_samples(folder, images, prompts, seeds, row.settings)
        write_text(folder / "judgements.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        if extra_scores is not None:
            metrics["extra"] = extra_scores(images, prompts)
        entry = {"label": row.label, **row.settings.record(), **({"model": str(row.model)} if row.model else {}),
                 **({"unet": str(row.unet)} if row.unet else {}), **({"tiny_vae": str(row.vae)} if row.vae else {}),
                 **metrics,
                 "sample_seconds": round(seconds, 1), "samples": str(folder.relative_to(out))}
        results.append(entry)
        log(f"{row.label}: ShapesEval {metrics['shapes_eval']['overall']:.3f}  FD {metrics['fd']:.2f}"
            f"  PSNR {metrics.get('psnr_vs_teacher', float('nan')):.2f} dB  ({seconds:.0f} s)")
    summary = {
        "model": str(model),
        "prompts": len(prompts),
        "real_images": n_real,
        "reference": reference_settings.record(),
        "real_shapes_eval": _real_accuracy(detector),
        "rows": results,
    }
    write_reports(out, summary)
    return summary


def _same(a: SampleSettings, b: SampleSettings) -> bool:
    return not a.loras and a.record() == b.record()


def _reference_images(pipe, out: Path, prompts, seeds, settings: SampleSettings):
    """The teacher's 50-step images and their sampling time, cached in out/reference.npz."""
    cache = out / "reference.npz"
    key = json.dumps({"prompts": prompts, "seeds": seeds, "settings": settings.record()})
    if cache.is_file():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return stored["images"], float(stored["seconds"])
    start = time.time()
    images = generate(pipe, prompts, settings, seeds, progress_desc="teacher reference")
    seconds = time.time() - start
    with atomic_file(cache) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, key=np.array(key), seconds=np.array(seconds))
    return images, seconds


def _real_accuracy(detector, n: int = 600) -> dict:
    rng = random.Random(REAL_SEED + 1)
    scenes = [sample_scene(rng, CATEGORIES[i % len(CATEGORIES)]) for i in range(n)]
    return accuracy_table(judge_images(detector, render_array(scenes), [s.caption for s in scenes]))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-")


def with_steps(settings: SampleSettings, steps: int) -> SampleSettings:
    return replace(settings, steps=steps)


def overall_cell(row: dict) -> str:
    """'**0.427** ± 0.020' (half-width of the 95% bootstrap interval over prompts)."""
    value, ci = row["shapes_eval"]["overall"], row.get("shapes_eval_ci95")
    return f"**{value:.3f}**" + (f" ± {(ci[1] - ci[0]) / 2:.3f}" if ci else "")


def fd_cell(row: dict) -> str:
    """'67.2 ± 3.1' (standard deviation over 5 bootstrap resamples of the generated set)."""
    return f"{row['fd']:.1f}" + (f" ± {row['fd_spread']:.1f}" if "fd_spread" in row else "")


def markdown_table(summary: dict) -> str:
    cats = list(CATEGORIES)
    extra = list(dict.fromkeys(k for r in summary["rows"] for k in r.get("extra", {})))
    head = ["model", "steps", "scheduler", "cfg", "ShapesEval (95% CI)", *cats, "FD (± sd)", "PSNR vs teacher (dB)",
            *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        acc = r["shapes_eval"]
        psnr = r.get("psnr_vs_teacher")
        cells = [r["label"], str(r["steps"]), r["scheduler"], f"{r['guidance']:g}",
                 overall_cell(r), *[f"{acc.get(c, float('nan')):.2f}" for c in cats],
                 fd_cell(r), "-" if psnr is None else "ref" if psnr >= 100 else f"{psnr:.2f}",
                 *[f"{r.get('extra', {}).get(k, float('nan')):.3f}" for k in extra]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    for r in summary["rows"]:
        series.setdefault(r["label"].split(" @")[0], []).append(r)
    panels = [("ShapesEval overall", lambda r: r["shapes_eval"]["overall"]),
              ("FD to real (lower is better)", lambda r: r["fd"]),
              ("PSNR vs teacher 50-step (dB)", lambda r: min(r.get("psnr_vs_teacher", math.nan), 60))]
    if not any(math.isfinite(panels[2][1](r)) for r in summary["rows"]):  # evaluated without the reference
        panels = panels[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8))
    for ax, (title, get) in zip(axes, panels):
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["steps"])
            ax.plot([r["steps"] for r in rs], [get(r) for r in rs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_reports(out: Path, summary: dict) -> None:
    write_text(out / "metrics.json", json.dumps(summary, indent=2))
    write_text(out / "metrics.md", markdown_table(summary))
    plot_metrics(summary, out / "metrics.png")
