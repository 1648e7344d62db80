"""Evaluation rows for a finished distillation run: its final LoRA at several step counts, and
each stage's LoRA at its own step count. Shared by `make demo` and the ablation benchmark."""

from __future__ import annotations

from pathlib import Path

from hypersd.evaluator.evaluate import Row
from hypersd.sampling import LoraSpec, SampleSettings


def stage_loras(run: Path) -> dict[int, Path]:
    """Segments k -> LoRA file of that stage (files are named `<recipe>-k<segments>.safetensors`)."""
    loras = {}
    for path in sorted((Path(run) / "loras").glob("*-k*.safetensors")):
        loras[int(path.stem.rsplit("-k", 1)[1])] = path
    return loras


def final_lora(run: Path) -> Path:
    """The last stage's LoRA: the one with the fewest segments."""
    loras = stage_loras(run)
    if not loras:
        raise FileNotFoundError(f"no stage LoRAs in {Path(run) / 'loras'}")
    return loras[min(loras)]


def distilled_rows(run: Path, label: str, steps=(1, 2, 4, 8), scheduler: str = "ddim-trailing",
                   eta: float | None = None, per_stage: bool = False) -> list[Row]:
    """The final LoRA at every step count (no guidance); with per_stage, each earlier stage's LoRA at k steps."""
    rows = [Row(f"{label} @{s}", SampleSettings(steps=s, scheduler=scheduler, guidance=0.0, eta=eta,
                                                 loras=[LoraSpec(final_lora(run))]))
            for s in steps]
    if per_stage:
        loras = stage_loras(run)
        for k in sorted(loras, reverse=True):
            if k != min(loras):
                rows.append(Row(f"{label} stage k{k} @{k}", SampleSettings(
                    steps=k, scheduler="ddim-trailing", guidance=0.0, loras=[LoraSpec(loras[k])])))
    return rows
