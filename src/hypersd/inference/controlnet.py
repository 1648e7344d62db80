"""ControlNet conditioning for `hypersd generate`: the control image and the ControlNet pipeline.

The control image is read, resized to the generation size and turned into what the public
ControlNet models were trained on: `canny` gives white edges on black, `scribble` white strokes on
black, `none` keeps the image as given (for a map prepared elsewhere: depth, pose, ...). The
ControlNet pipeline is built around the already loaded base pipeline's own modules, so LoRAs, a
replaced UNet and the scheduler handling are exactly those of plain generation; sampling itself is
`hypersd.inference.sample.generate` with the control image added to the pipeline call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hypersd.errors import UserError, load_error, pickle_allowed, require

CONTROLS = ("canny", "scribble", "none")
CONTROL_FILE = "control.png"  # the preprocessed control image, saved beside the samples


@dataclass
class ControlSpec:
    """What conditions generation: a ControlNet folder, a control image and how to prepare it."""

    folder: Path
    image: Path
    mode: str = "canny"
    scale: float = 1.0
    canny_low: int = 100
    canny_high: int = 200

    def validate(self) -> Image.Image:
        """Check every option before any model is loaded; returns the control image as read."""
        require(self.mode in CONTROLS, f"unknown --control {self.mode!r}; choose one of {', '.join(CONTROLS)}")
        require(self.scale >= 0, f"--control-scale must be >= 0, got {self.scale}")
        require(0 <= self.canny_low <= self.canny_high,
                f"canny thresholds need 0 <= low <= high, got {self.canny_low} and {self.canny_high}")
        require(Path(self.folder).is_dir(), f"ControlNet folder not found: {self.folder}")
        require((Path(self.folder) / "config.json").is_file(),
                f"not a diffusers ControlNet folder (no config.json): {self.folder}")
        return read_control_image(self.image)

    def record(self) -> dict:
        """What goes into each samples.jsonl line about the conditioning."""
        record = {"controlnet": str(self.folder), "control_image": str(self.image), "control": self.mode,
                  "control_scale": self.scale}
        if self.mode == "canny":
            record["canny_thresholds"] = [self.canny_low, self.canny_high]
        return record


def read_control_image(path: Path) -> Image.Image:
    """The image as RGB, or one clear line when it is missing or not an image."""
    path = Path(path)
    require(path.is_file(), f"control image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read control image {path}: {reason}") from None


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """OpenCV's Canny edges of the grayscale image, as 3-channel uint8: 255 on edges, 0 elsewhere
    (the input the ControlNet canny models were trained on). `low`/`high` are the hysteresis
    thresholds on the gradient magnitude: lower values keep fainter edges."""
    import cv2

    edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


def scribble(rgb: np.ndarray, offset: int = 10) -> np.ndarray:
    """A drawing or photo as white strokes on black, 3-channel uint8.

    Ink is the grayscale image, inverted when the background (the median) is light, so dark lines
    on paper and light lines on a dark ground both become bright ink. A pixel is a stroke when its
    ink exceeds the mean of its neighbourhood (about 1/8 of the shorter side) by `offset`: thin and
    medium strokes come out filled, uneven lighting of a photographed sketch is ignored, flat areas
    give nothing, and a photo gives its locally dark details as strokes.
    """
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ink = 255 - gray if np.median(gray) > 127 else gray
    block = max(3, (min(gray.shape) // 8) | 1)  # odd, as OpenCV needs
    strokes = cv2.adaptiveThreshold(ink, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -offset)
    return np.repeat(strokes[:, :, None], 3, axis=2)


def prepare_control(image: Image.Image, mode: str, size: tuple[int, int], canny_low: int = 100,
                    canny_high: int = 200) -> Image.Image:
    """Resize to the generation size (width, height; stretched if the aspect differs), then preprocess:
    edges and strokes are found at the resolution the ControlNet sees, so they stay one pixel wide."""
    require(mode in CONTROLS, f"unknown --control {mode!r}; choose one of {', '.join(CONTROLS)}")
    resized = image.convert("RGB")
    if resized.size != tuple(size):
        resized = resized.resize(tuple(size), Image.BICUBIC)
    if mode == "none":
        return resized
    rgb = np.asarray(resized, dtype=np.uint8)
    out = canny(rgb, canny_low, canny_high) if mode == "canny" else scribble(rgb)
    return Image.fromarray(out)


def generation_size(pipe) -> tuple[int, int]:
    """(width, height) the pipeline generates at by default: the UNet's sample size in pixels."""
    sample = pipe.unet.config.sample_size
    height, width = (sample, sample) if isinstance(sample, int) else tuple(sample)
    return width * pipe.vae_scale_factor, height * pipe.vae_scale_factor


def load_controlnet(folder: Path, dtype=None):
    """A diffusers ControlNetModel from a local folder (safetensors unless --allow-pickle)."""
    from diffusers import ControlNetModel

    try:
        return ControlNetModel.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                               use_safetensors=None if pickle_allowed() else True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise load_error("ControlNet folder", folder, exc) from None


def check_fits(controlnet, unet, folder: Path) -> None:
    """The ControlNet's residuals are added to the UNet's: its blocks must be the UNet's."""
    for key in ("in_channels", "block_out_channels", "cross_attention_dim"):
        ours, theirs = controlnet.config.get(key), unet.config.get(key)
        if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
            ours, theirs = list(ours), list(theirs)
        require(ours == theirs, f"ControlNet {folder} does not fit the base model ({key} {ours} vs the "
                                f"UNet's {theirs})")


def controlnet_pipeline(pipe, controlnet):
    """The SD or SDXL ControlNet pipeline over `pipe`'s own modules (LoRAs and a replaced UNet
    included) and settings."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    from hypersd.models.pipelines import derived_pipeline

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    cls = StableDiffusionXLControlNetPipeline if sdxl else StableDiffusionControlNetPipeline
    return derived_pipeline(pipe, cls, controlnet=controlnet)


def with_controlnet(pipe, spec: ControlSpec, image: Image.Image):
    """(ControlNet pipeline, preprocessed control image, extra pipeline-call arguments)."""
    controlnet = load_controlnet(spec.folder, dtype=pipe.unet.dtype)
    check_fits(controlnet, pipe.unet, spec.folder)
    control = prepare_control(image, spec.mode, generation_size(pipe), spec.canny_low, spec.canny_high)
    extra_call = {"image": control, "controlnet_conditioning_scale": spec.scale}
    return controlnet_pipeline(pipe, controlnet.to(pipe.unet.device)), control, extra_call
