"""What a run writes: each stage's name, how its model samples, and where its file goes.

Run folder:
  recipe.yaml, log.jsonl, metrics.json, checkpoint/     see hypersd.train.run
  loras/tscd-k{k}.safetensors           TSCD stage with k segments (samples with k trailing DDIM steps)
  loras/feedback-lora.safetensors       the feedback LoRA alone (human feedback learning)
  loras/feedback-merged.safetensors     the student merged with it at feedback.merge_ratio
  loras/dmd-unified.safetensors         score distillation at generator timestep 999: the unified LoRA
  loras/dmd-one-step-t{t}.safetensors   score distillation at timestep t: the dedicated one-step model
  one-step-t{t}-unet/                   that model as a full UNet (dmd.generator: unet), a pipeline folder
  samples/{stage name}/                 a grid of each stage's model at its own sampling settings
Runs written before files were named after their phase (tscd-feedback, tscd-unified,
tscd-one-step-t{t}) are still read.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypersd.train.recipe import Stage

FEEDBACK_LORA = "feedback-lora.safetensors"


def stage_name(stage: Stage) -> str:
    """k{segments} for TSCD, "feedback", "unified" (DMD at t = 999) or "one-step-t{t}"."""
    if stage.method == "feedback":
        return "feedback"
    if stage.method == "dmd":
        return "unified" if stage.dmd.generator_timestep == 999 else f"one-step-t{stage.dmd.generator_timestep}"
    return f"k{stage.segments}"


def stage_inference(stage: Stage) -> dict:
    """How a stage's LoRA samples (the model card's conventions): TSCD k trailing DDIM steps; the
    unified LoRA TCD (eta 0.3, any of 1-8 steps); a one-step model LCM at its generator timestep;
    a feedback merge like the student it was trained on (its sampling steps). Guidance folded into the
    model: none at inference; a CFG-preserved TSCD stage: its recommended guidance and steps."""
    folded = {"guidance": 0.0, "guidance_mode": "folded"}
    if stage.method == "dmd" and stage.dmd.generator_timestep == 999:
        return {"scheduler": "tcd", "timestep_spacing": "trailing", "steps": 4, "eta": 0.3, **folded}
    if stage.method == "dmd":
        return {"scheduler": "lcm", "steps": 1, "timesteps": [stage.dmd.generator_timestep], **folded}
    steps = stage.feedback.sampling_steps if stage.method == "feedback" else stage.segments
    if stage.method == "tscd" and stage.guidance_mode == "preserved":
        return {"scheduler": "ddim-trailing", "timestep_spacing": "trailing", "steps": stage.recommended_steps or steps,
                "eta": 0.0, "guidance": stage.recommended_guidance, "guidance_mode": "preserved"}
    return {"scheduler": "ddim-trailing", "timestep_spacing": "trailing", "steps": stage.recommended_steps or steps,
            "eta": 0.0, **folded}


def _file_stem(name: str) -> str:
    """The LoRA file of a stage name, after the phase that makes it."""
    if name == "feedback":
        return "feedback-merged"
    if name == "unified" or name.startswith("one-step"):
        return f"dmd-{name}"
    return f"tscd-{name}"


def stage_output(run: Path, stage: Stage) -> Path:
    """The LoRA file of a stage, or the pipeline folder of a full-UNet generator stage."""
    name = stage_name(stage)
    if stage.method == "dmd" and stage.dmd.generator == "unet":
        return Path(run) / f"{name}-unet"
    return Path(run) / "loras" / f"{_file_stem(name)}.safetensors"


def stage_loras(run: Path) -> dict[int, Path]:
    """Segments k -> LoRA file of that TSCD stage (`tscd-k{k}.safetensors`)."""
    loras = {}
    for path in sorted((Path(run) / "loras").glob("tscd-k*.safetensors")):
        match = re.fullmatch(r"tscd-k(\d+)", path.stem)
        if match:
            loras[int(match.group(1))] = path
    return loras


def final_lora(run: Path) -> Path:
    """The last TSCD stage's LoRA: the one with the fewest segments."""
    loras = stage_loras(run)
    if not loras:
        raise FileNotFoundError(f"no stage LoRAs in {Path(run) / 'loras'}")
    return loras[min(loras)]


def phase_lora(run: Path, name: str) -> Path | None:
    """A later phase's LoRA in a run folder by stage name: "unified", "feedback" (the merge) or
    "one-step-t800"; None if absent. Older runs' `tscd-{name}` files are found too."""
    for stem in (_file_stem(name), f"tscd-{name}"):
        path = Path(run) / "loras" / f"{stem}.safetensors"
        if path.is_file():
            return path
    return None


def snapshot_unet(run: Path, stage: str, step: int) -> Path:
    """Where a full-UNet generator's weights at `step` of stage `stage` are kept (training.save_lora_every)."""
    return Path(run) / "snapshots" / f"{stage}-unet-{step:07d}.safetensors"


def snapshot_lora(run: Path, stage: str, step: int) -> Path | None:
    """The student LoRA a run kept at `step` of stage `stage` (training.save_lora_every), if there is one."""
    path = Path(run) / "snapshots" / f"{stage}-{step:07d}.safetensors"
    return path if path.is_file() else None
