"""Sampling settings: what the user gave, over one recommendation taken whole (a LoRA's metadata,
the release's naming conventions, a model folder's INFERENCE_FILE), over the defaults."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from hypersd.errors import UserError, require
from hypersd.inference.conventions import released_settings
from hypersd.lora.files import STEP_TIMESTEPS, LoraSpec, inference_settings
from hypersd.models.pipelines import INFERENCE_FILE

SCHEDULERS = ("ddim", "ddim-trailing", "tcd", "lcm", "euler", "dpmpp", "default")  # default: the model's own


@dataclass
class SampleSettings:
    steps: int = 4
    scheduler: str = "ddim-trailing"
    guidance: float = 0.0
    eta: float | None = None
    timesteps: list[int] | None = None
    seed: int = 0
    batch_size: int = 125
    loras: list[LoraSpec] = field(default_factory=list)

    def validate(self) -> None:
        require(self.steps > 0, f"steps must be a positive integer, got {self.steps}")
        require(self.scheduler in SCHEDULERS,
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        require(self.eta is None or 0.0 <= self.eta <= 1.0, f"eta must be in [0, 1], got {self.eta}")
        require(math.isfinite(self.guidance) and self.guidance >= 0, f"guidance must be >= 0, got {self.guidance}")
        require(self.batch_size > 0, f"batch size must be positive, got {self.batch_size}")
        if self.timesteps is not None:
            require(all(0 <= t < 1000 for t in self.timesteps),
                    f"timesteps must lie in [0, 999], got {self.timesteps}")
            require(list(self.timesteps) == sorted(set(self.timesteps), reverse=True),
                    f"timesteps must be distinct and decreasing (e.g. 999,499), got {self.timesteps}")
        for lora in self.loras:
            require(lora.path.is_file(), f"LoRA file not found: {lora.path}")

    def record(self) -> dict:
        """What goes into each samples.jsonl line besides file, prompt and seed."""
        return {
            "steps": len(self.timesteps) if self.timesteps else self.steps,
            "scheduler": self.scheduler,
            "guidance": self.guidance,
            "eta": self.eta,
            "timesteps": self.timesteps,
            "lora": [f"{spec.path}:{spec.scale:g}" for spec in self.loras],
        }


SETTING_DEFAULTS = {"steps": 4, "scheduler": "ddim-trailing", "guidance": 0.0, "eta": None, "timesteps": None}
RECOMMENDED_KEYS = (*SETTING_DEFAULTS, STEP_TIMESTEPS)  # STEP_TIMESTEPS: a multi-step model's timesteps per step count


def recommended_part(stored: dict) -> dict:
    """The sampling settings of a stored recommendation (a LoRA's or UNet file's metadata, a model folder's
    INFERENCE_FILE), without its other keys (timestep_spacing, guidance_mode, ...)."""
    return {key: stored[key] for key in RECOMMENDED_KEYS if key in stored}


def check_step_timesteps(table, where: str) -> dict[str, list[int]]:
    """A step_timesteps table: step counts (as strings) to the decreasing timesteps, one per step, that a
    model samples best with at that step count (chosen on held-out prompts, bench/unified_schedule.py)."""
    require(isinstance(table, dict), f"{where}: {STEP_TIMESTEPS} must map step counts to timesteps, got {table!r}")
    for steps, timesteps in table.items():
        require(str(steps).isdigit() and int(steps) > 0 and isinstance(timesteps, list)
                and all(isinstance(t, int) for t in timesteps) and len(timesteps) == int(steps)
                and all(0 <= t < 1000 for t in timesteps) and timesteps == sorted(set(timesteps), reverse=True),
                f"{where}: {STEP_TIMESTEPS} entry {steps!r}: {timesteps!r} must be {steps} distinct decreasing "
                "timesteps in [0, 999]")
    return {str(k): v for k, v in table.items()}


def recommended_settings(loras: list[LoraSpec]) -> dict:
    """Sampling settings stored in the first LoRA file that has them (see hypersd.lora.files), else those
    of the first file named like an official Hyper-SD release (hypersd.inference.conventions)."""

    for spec in loras:
        stored = inference_settings(spec.path)
        if stored:
            return recommended_part(stored)
    for spec in loras:
        named = released_settings(Path(spec.path).name)
        if named:
            return named
    return {}


def model_settings(model: Path | None) -> dict:
    """Sampling settings a distilled full-UNet pipeline folder carries (hypersd_inference.json)."""
    path = Path(model) / INFERENCE_FILE if model is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(stored, dict):
        raise UserError(f"{path} must hold a JSON object of sampling settings")
    return recommended_part(stored)


def pipeline_defaults(model: Path | None) -> dict:
    """A plain model without recommended settings samples as its diffusers pipeline does by default:
    its own scheduler, and the steps and guidance scale of the pipeline class's call signature."""
    import inspect

    import diffusers

    name = "StableDiffusionPipeline"
    index = Path(model) / "model_index.json" if model is not None else None
    if index is not None and index.is_file():
        try:
            name = json.loads(index.read_text()).get("_class_name", name)
        except json.JSONDecodeError:
            pass
    cls = getattr(diffusers, str(name), diffusers.StableDiffusionPipeline)
    params = inspect.signature(cls.__call__).parameters
    return {"scheduler": "default", "steps": params["num_inference_steps"].default,
            "guidance": float(params["guidance_scale"].default)}


def resolve_settings(given: dict, loras: list[LoraSpec], model: Path | None = None,
                     fallback: dict | None = None) -> dict:
    """What the user gave over one recommendation taken whole: the LoRA's, else `fallback` (e.g. a
    one-step UNet file's convention), else the model folder's, else, for a plain model without LoRAs,
    its pipeline's own defaults, else the defaults of distilled LoRAs (None = not given).
    A recommendation's eta and timesteps belong to its scheduler (and timesteps to its steps): they
    are dropped when the user picks another scheduler (or other steps). A recommendation's step_timesteps
    table (a unified model's timesteps per step count) gives the timesteps at the steps chosen, unless the
    user gives timesteps or another scheduler."""
    recommended = recommended_settings(loras) or fallback or model_settings(model)
    if not recommended and not loras and model is not None:
        recommended = pipeline_defaults(model)
    chosen = {**SETTING_DEFAULTS, **recommended}
    table = chosen.pop(STEP_TIMESTEPS, None)
    if given.get("scheduler") is not None and given["scheduler"] != chosen["scheduler"]:
        chosen.update(eta=None, timesteps=None)
        table = None
    if given.get("steps") is not None:
        chosen["timesteps"] = None
    chosen.update({key: value for key, value in given.items() if value is not None})
    if table and given.get("timesteps") is None:
        table = check_step_timesteps(table, "recommended settings")
        chosen["timesteps"] = table.get(str(chosen["steps"]), chosen["timesteps"])
    return chosen



def lora_guidance_mode(path: Path) -> str | None:
    """'folded' or 'preserved': the LoRA's metadata, else the release's naming (`...-CFG-lora` files are
    CFG-preserved, the other released files fold guidance in); None when neither says."""
    mode = inference_settings(path).get("guidance_mode")
    if mode:
        return mode
    named = released_settings(Path(path).name)
    if named:
        return "preserved" if named.get("guidance", 0.0) > 0 else "folded"
    return None


def check_negative_prompts(negative_prompts: list[str | None] | None, settings: SampleSettings) -> None:
    """A negative prompt acts through classifier-free guidance only: at guidance <= 1 the pipeline
    ignores it, so it is refused with the reason instead of silently doing nothing."""
    if not negative_prompts or not any(negative_prompts) or settings.guidance > 1:
        return
    folded = [s.path.name for s in settings.loras if lora_guidance_mode(s.path) == "folded"]
    why = (f"{folded[0]} folds guidance into the model (guidance_mode folded) and is sampled without it"
           if folded else "classifier-free guidance is off")
    raise UserError(f"a negative prompt needs guidance > 1, but sampling runs at guidance {settings.guidance:g}: "
                    f"{why}, so the negative prompt would be ignored (use a CFG-preserved LoRA, or give --guidance)")
