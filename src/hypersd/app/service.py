"""What the web app does, without the web: the models it offers, the checks of every request, a
bounded request gate, and generation through the library's own functions (the CLI's code path:
`resolve_settings` from the models' metadata, `generate`, `with_controlnet`)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from hypersd.errors import UserError, require
from hypersd.inference.settings import SampleSettings, resolve_settings
from hypersd.inference.unet_file import is_unet_file, unet_file_settings
from hypersd.lora.files import LoraSpec

MAX_PROMPT_CHARS = 200
MAX_IMAGES = 4
MAX_STEPS = 8
MAX_CANVAS_SIDE = 2048          # pixels; a drawing is resized to the generation size anyway
MAX_UPLOAD = "8mb"              # gradio's limit on an uploaded file
TEACHER_LABEL = "teacher (50 DDIM steps, guidance 5; for comparison)"


class Busy(UserError):
    """The request gate is full."""


@dataclass
class ModelChoice:
    """One entry of the model menu: LoRA files over the base model (or a full UNet file in its place), and
    whether steps are its own."""

    label: str
    loras: list[LoraSpec] = field(default_factory=list)
    unet: Path | None = None            # a distilled full UNet (hypersd.inference.unet_file) replacing the base's
    fixed_steps: int | None = None      # the one-step model: 1; the teacher: 50
    fixed: dict = field(default_factory=dict)  # settings that are not the user's (the teacher's)

    def settings(self, steps: int, eta: float | None) -> SampleSettings:
        """The model's recommended settings (its metadata, as `hypersd generate` reads them), with the
        user's steps and eta where the model lets them choose."""
        given = {"steps": None if self.fixed_steps else steps, "eta": eta, **self.fixed}
        chosen = resolve_settings(given, self.loras, fallback=unet_file_settings(self.unet) if self.unet else None)
        if self.fixed_steps:
            chosen["steps"] = self.fixed_steps
        if chosen.get("scheduler") not in ("tcd",):  # eta belongs to TCD sampling only
            chosen["eta"] = None
        return SampleSettings(steps=chosen["steps"], scheduler=chosen["scheduler"], guidance=chosen["guidance"],
                              eta=chosen["eta"], timesteps=chosen["timesteps"], loras=list(self.loras))


def offered_models(one_step: Path | None, unified: Path | None, teacher_guidance: float) -> list[ModelChoice]:
    """The shipped one-step model (a full UNet file or a LoRA) and unified LoRA where they are, and the
    teacher for comparison."""
    models = []
    if one_step is not None and Path(one_step).is_file():
        one_step = Path(one_step)
        models.append(ModelChoice("one-step model (1 step)", fixed_steps=1, unet=one_step) if is_unet_file(one_step)
                      else ModelChoice("one-step model (1 step)", [LoraSpec(one_step)], fixed_steps=1))
    if unified is not None and Path(unified).is_file():
        models.append(ModelChoice("unified LoRA (1-8 steps)", [LoraSpec(Path(unified))]))
    models.append(ModelChoice(TEACHER_LABEL, fixed_steps=50,
                              fixed={"scheduler": "ddim", "guidance": teacher_guidance}))
    return models


class RequestGate:
    """At most `capacity` requests inside (one generating, the rest waiting their turn); one more is
    answered Busy at once instead of queueing without bound."""

    def __init__(self, capacity: int):
        self.slots = threading.BoundedSemaphore(capacity)
        self.turn = threading.Lock()

    @contextlib.contextmanager
    def enter(self):
        if not self.slots.acquire(blocking=False):
            raise Busy("busy, try again in a few seconds")
        try:
            with self.turn:
                yield
        finally:
            self.slots.release()


def check_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    require(prompt != "", "type a prompt first")
    require(len(prompt) <= MAX_PROMPT_CHARS, f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    return prompt


def check_count(value, name: str, low: int, high: int) -> int:
    require(value is not None and float(value) == int(value) and low <= int(value) <= high,
            f"{name} must be a whole number from {low} to {high}, got {value}")
    return int(value)


def check_drawing(image: np.ndarray | None) -> Image.Image:
    """The canvas (or an uploaded drawing) as RGB on white: refused when missing, too large or blank."""
    require(image is not None and getattr(image, "ndim", 0) == 3, "draw a sketch (or upload one) first")
    height, width = image.shape[:2]
    require(max(height, width) <= MAX_CANVAS_SIDE,
            f"the drawing is {width}x{height} pixels; at most {MAX_CANVAS_SIDE} on a side")
    rgb = image[..., :3].astype(np.float32)
    if image.shape[2] == 4:  # transparent canvas: strokes over white paper
        alpha = image[..., 3:4].astype(np.float32) / 255
        rgb = rgb * alpha + 255 * (1 - alpha)
    rgb = rgb.round().astype(np.uint8)
    require(int(rgb.max()) - int(rgb.min()) > 32, "the canvas is empty: draw a sketch first")
    return Image.fromarray(rgb)


def enlarge(image: np.ndarray, side: int = 256) -> Image.Image:
    """A 32-pixel image shown at `side` pixels with nearest-neighbour scaling (every pixel a block)."""
    return Image.fromarray(image).resize((side, side), Image.NEAREST)


class AppService:
    """The loaded base pipeline (with a copy per offered full-UNet model, sharing the rest), the offered
    LoRAs loaded on demand, and the ControlNet."""

    def __init__(self, model_dir: Path, models: list[ModelChoice], controlnet: Path | None = None,
                 capacity: int = 4):
        from hypersd.models.pipelines import load_pipeline

        self.pipe = load_pipeline(Path(model_dir))
        self.models = {m.label: m for m in models}
        self.controlnet = Path(controlnet) if controlnet is not None else None
        self.gate = RequestGate(capacity)
        self.active = None  # the label whose LoRAs are loaded now
        self.unet_pipes = {}  # full-UNet models: their pipelines, built on first use

    def _use(self, model: ModelChoice):
        """The pipeline of the model: a full-UNet model's own, else the base one with the model's LoRAs
        loaded (as `generate` loads them) unless they already are."""
        from hypersd.inference.sample import apply_loras
        from hypersd.models.pipelines import with_unet_file

        if model.unet is not None:
            if model.unet not in self.unet_pipes:
                self.unet_pipes[model.unet] = with_unet_file(self.pipe, model.unet)
            return self.unet_pipes[model.unet]
        if self.active != model.label:
            self.pipe.unload_lora_weights()
            self.active = None
            apply_loras(self.pipe, model.loras)
            self.active = model.label
        return self.pipe

    def model(self, label: str) -> ModelChoice:
        require(label in self.models, f"unknown model {label!r}; choose one of {', '.join(self.models)}")
        return self.models[label]

    def text_to_image(self, prompt: str, model: str, steps, eta, seed, count) -> list[tuple[np.ndarray, float]]:
        """(image, seconds) per image: `count` seeds from `seed`, one image per call."""
        prompt, choice = check_prompt(prompt), self.model(model)
        steps = check_count(steps, "steps", 1, MAX_STEPS)
        count, seed = check_count(count, "number of images", 1, MAX_IMAGES), check_count(seed, "seed", 0, 2**31 - 1)
        settings = choice.settings(steps, eta)
        settings.validate()
        return self._run(prompt, choice, settings, seed, count)

    def scribble(self, prompt: str, drawing, model: str, steps, scale, seed, count):
        """(control map as the ControlNet sees it, [(image, seconds)])."""
        from hypersd.inference.controlnet import ControlSpec, with_controlnet

        require(self.controlnet is not None, "this app was started without a ControlNet (--controlnet DIR)")
        prompt, choice, sketch = check_prompt(prompt), self.model(model), check_drawing(drawing)
        steps = check_count(steps, "steps", 1, MAX_STEPS)
        count, seed = check_count(count, "number of images", 1, MAX_IMAGES), check_count(seed, "seed", 0, 2**31 - 1)
        require(scale is not None and 0 <= float(scale) <= 2, f"control scale must be in [0, 2], got {scale}")
        settings = choice.settings(steps, None)
        settings.validate()
        spec = ControlSpec(self.controlnet, Path("canvas.png"), "scribble", float(scale))
        with self.gate.enter():
            pipe, control, extra = with_controlnet(self._use(choice), spec, sketch)
            images = self._generate(pipe, prompt, settings, seed, count, extra)
        return np.asarray(control), images

    def _run(self, prompt, choice, settings, seed, count):
        with self.gate.enter():
            return self._generate(self._use(choice), prompt, settings, seed, count)

    @staticmethod
    def _generate(pipe, prompt, settings, seed, count, extra=None):
        from hypersd.inference.sample import generate

        out = []
        for i in range(count):
            start = time.perf_counter()
            image = generate(pipe, [prompt], replace(settings, loras=[]), [seed + i], extra_call=extra)[0]
            out.append((image, time.perf_counter() - start))
        return out
