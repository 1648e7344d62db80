"""From an image file to a training array: resize to cover a target size, crop, aspect buckets.

Every fitted image carries SDXL's size conditioning (the six numbers of its `add_time_ids`):
original height and width (before any resize), the crop's top-left corner in the resized image,
and the target height and width, all in pixels.

Buckets: a small fixed list of (height, width) pairs of about resolution**2 pixels each, every side
a multiple of `step` (64 for real models, whose VAE and UNet downsample 8x and 8x; 8 for the tiny
one). An image goes to the bucket whose aspect ratio is nearest its own (in log ratio).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

CROPS = ("center", "random")
BUCKET_RATIOS = (1 / 2, 4 / 7, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 7 / 4, 2.0)  # height / width


def bucket_step(resolution: int, step: int = 0) -> int:
    """The side multiple of buckets: `step` when given, else 64 from resolution 256 up, else 8."""
    return step or (64 if resolution >= 256 else 8)


def make_buckets(resolution: int, step: int = 0) -> list[tuple[int, int]]:
    """(height, width) pairs of area close to resolution**2, one per ratio of BUCKET_RATIOS
    (duplicates after rounding dropped), from the widest to the tallest."""
    step = bucket_step(resolution, step)
    buckets: list[tuple[int, int]] = []
    for ratio in BUCKET_RATIOS:
        h = max(step, round(resolution * math.sqrt(ratio) / step) * step)
        w = max(step, round(resolution / math.sqrt(ratio) / step) * step)
        if (h, w) not in buckets:
            buckets.append((h, w))
    return buckets


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest height / width (the first one on a tie)."""
    ratio = math.log(height / width)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


@dataclass
class Fitted:
    array: np.ndarray                  # uint8 (target_h, target_w, 3)
    time_ids: tuple[int, int, int, int, int, int]  # orig_h, orig_w, crop_top, crop_left, target_h, target_w


def fit(image: Image.Image, size: tuple[int, int], crop: str = "center",
        rng: random.Random | None = None) -> Fitted:
    """Resize `image` (bicubic) so that it covers `size` = (h, w), then crop to it: centred, or at a
    position drawn from `rng`. An image already of that size is left untouched."""
    th, tw = size
    w, h = image.size
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (rw, rh) != image.size:
        image = image.resize((rw, rh), Image.BICUBIC)
    if crop == "center":
        top, left = (rh - th) // 2, (rw - tw) // 2
    else:
        rng = rng or random.Random(0)
        top, left = rng.randint(0, rh - th), rng.randint(0, rw - tw)
    if (rh, rw) != (th, tw):
        image = image.crop((left, top, left + tw, top + th))
    return Fitted(np.asarray(image), (h, w, top, left, th, tw))


def open_image(source: bytes | Path) -> Image.Image | None:
    """An RGB image from a file or bytes; None when PIL cannot decode it."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


@dataclass
class ImageTransform:
    """The recipe's image settings: square `resolution` crops, or the nearest of `buckets`."""

    resolution: int
    crop: str = "center"
    buckets: list[tuple[int, int]] | None = None

    @classmethod
    def from_recipe(cls, data) -> "ImageTransform":
        buckets = make_buckets(data.resolution, data.bucket_step) if data.buckets else None
        return cls(data.resolution, data.crop, buckets)

    def target(self, height: int, width: int) -> tuple[int, int]:
        if self.buckets is None:
            return self.resolution, self.resolution
        return nearest_bucket(height, width, self.buckets)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> Fitted:
        return fit(image, self.target(image.height, image.width), self.crop, rng)


def fit_records(records: Iterable, transform: ImageTransform, seed: str,
                skipped: dict[str, int]) -> Iterator[tuple[str, Fitted]]:
    """(caption, fitted image) for every record (.key, .caption, .image) whose image decodes; random
    crops seeded by `seed` and the record's key; undecodable images counted in `skipped`."""
    for record in records:
        image = open_image(record.image)
        if image is None:
            skip(skipped, "unreadable image")
            continue
        yield record.caption, transform(image, random.Random(f"{seed}:{record.key}"))


def collate(items: list[tuple[str, Fitted]]):
    """(images in [-1, 1] as an (n, 3, h, w) tensor, time_ids (n, 6) float32, captions) of fitted items."""
    import torch

    from hypersd.shapes.batches import to_tensor

    images = to_tensor(np.stack([fitted.array for _, fitted in items]))
    time_ids = torch.tensor([fitted.time_ids for _, fitted in items], dtype=torch.float32)
    return images, time_ids, [caption for caption, _ in items]


def skip(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    """Count one skipped item under `reason`."""
    skipped[reason] = skipped.get(reason, 0) + n


def describe_skipped(skipped: dict[str, int]) -> str:
    """'2 no caption, 1 unreadable image' (or 'nothing skipped')."""
    return ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())) or "nothing skipped"
