"""Evaluation rows for a finished distillation run: its final LoRA at several step counts, each
stage's LoRA at its own step count, the feedback merge and the unified LoRA. Shared by `make demo`
and the benchmarks."""

from __future__ import annotations

from pathlib import Path

from hypersd.embedded.evaluator.evaluate import Row
from hypersd.inference.settings import SampleSettings, resolve_settings
from hypersd.inference.unet_file import is_unet_file, unet_file_settings
from hypersd.lora.files import LoraSpec
from hypersd.train.outputs import final_lora, phase_lora, stage_loras


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


def unified_rows(run: Path, label: str = "Hyper-SD unified", steps=(1, 2, 4, 8), etas=(0.3,)) -> list[Row]:
    """The unified LoRA with the TCD scheduler at each step count and eta (Hyper-SD Table 4)."""
    lora = phase_lora(run, "unified")
    if lora is None:
        return []
    suffix = len(etas) > 1
    return [Row(f"{label} @{s}" + (f" eta {eta:g}" if suffix else ""),
                SampleSettings(steps=s, scheduler="tcd", guidance=0.0, eta=eta, loras=[LoraSpec(lora)]))
            for eta in etas for s in steps]


def feedback_rows(run: Path, label: str = "TSCD + feedback", steps=(4,)) -> list[Row]:
    """The TSCD LoRA merged with the feedback LoRA (a feedback stage's output), DDIM trailing."""
    lora = phase_lora(run, "feedback")
    if lora is None:
        return []
    return [Row(f"{label} @{s}", SampleSettings(steps=s, scheduler="ddim-trailing", guidance=0.0,
                                                 loras=[LoraSpec(lora)])) for s in steps]


def shipped_rows(one_step: Path, unified: Path, steps=(1, 2, 4, 8)) -> list[Row]:
    """The shipped one-step model (a full UNet file or a LoRA) and unified LoRA at the settings their
    metadata recommends (the unified one at each step count); a file that is not there gives no row."""
    rows = []
    if Path(one_step).is_file():
        rows.append(one_step_row("shipped one-step model @1", Path(one_step)))
    if Path(unified).is_file():
        rows += [Row(f"shipped unified LoRA @{s}", metadata_settings(unified, s)) for s in steps]
    return rows


def one_step_row(label: str, model: Path) -> Row:
    """A one-step model file at its recommended settings: a full UNet (beside the base) or a LoRA."""
    if not is_unet_file(model):
        return Row(label, metadata_settings(model))
    info = resolve_settings({}, [], fallback=unet_file_settings(model))
    return Row(label, SampleSettings(steps=info["steps"], scheduler=info["scheduler"], guidance=info["guidance"],
                                     eta=info["eta"], timesteps=info["timesteps"]), unet=model)


def metadata_settings(lora: Path, steps: int | None = None) -> SampleSettings:
    """The LoRA's recommended settings, read as `hypersd generate` reads them (resolve_settings), at its
    own step count or at `steps` (with the timesteps its metadata names for that count, if any)."""
    loras = [LoraSpec(Path(lora))]
    info = resolve_settings({"steps": steps}, loras)
    return SampleSettings(steps=info["steps"], scheduler=info["scheduler"], guidance=info["guidance"],
                          eta=info["eta"], timesteps=info["timesteps"], loras=loras)
