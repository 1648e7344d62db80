"""Ground-truth instance annotations of a Shapes scene: per-object masks and the dense targets of a
bottom-up instance segmenter (semantic class per pixel, object-centre heatmap, offsets to the
centre; Panoptic-DeepLab, Cheng et al. 2020, section 3).

Masks are drawn exactly like the renderer draws objects (4x, then box-filtered), so a mask value is
the fraction of the pixel the object covers; a pixel belongs to an object when it covers >= 1/2.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from hypersd.shapes.world import COLORS, SHAPES, SUPERSAMPLE, Scene, draw_object

COLOR_NAMES, SHAPE_NAMES = list(COLORS), list(SHAPES)
NUM_CLASSES = 1 + len(COLOR_NAMES) * len(SHAPE_NAMES)  # class 0 is the background
CENTER_SIGMA = 1.5


def object_class(color: str, shape: str) -> int:
    """Semantic class of an object: 1 + colour index * 4 + shape index."""
    return 1 + COLOR_NAMES.index(color) * len(SHAPE_NAMES) + SHAPE_NAMES.index(shape)


def class_name(index: int) -> tuple[str, str] | None:
    """(colour, shape) of a semantic class, None for the background."""
    if index == 0:
        return None
    color, shape = divmod(index - 1, len(SHAPE_NAMES))
    return COLOR_NAMES[color], SHAPE_NAMES[shape]


def instance_masks(scene: Scene) -> np.ndarray:
    """(n_objects, H, W) float coverage in [0, 1] of each object, at the scene's canvas size."""
    big = scene.canvas * SUPERSAMPLE
    masks = []
    for obj in scene.objects:
        image = Image.new("L", (big, big), 0)
        draw_object(ImageDraw.Draw(image), obj, fill=255)
        small = image.resize((scene.canvas, scene.canvas), Image.BOX)
        masks.append(np.asarray(small, dtype=np.float32) / 255.0)
    return np.stack(masks) if masks else np.zeros((0, scene.canvas, scene.canvas), np.float32)


def dense_targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Batch targets: semantic (n,H,W) long, center (n,1,H,W), offset (n,2,H,W), foreground (n,1,H,W).

    The offset of a foreground pixel points from the pixel to its object's centre, in pixels.
    """
    size = scenes[0].canvas
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    semantic = np.zeros((len(scenes), size, size), np.int64)
    center = np.zeros((len(scenes), 1, size, size), np.float32)
    offset = np.zeros((len(scenes), 2, size, size), np.float32)
    for i, scene in enumerate(scenes):
        for obj, mask in zip(scene.objects, instance_masks(scene)):
            cx, cy = obj.center
            inside = mask >= 0.5
            semantic[i][inside] = object_class(obj.color, obj.shape)
            offset[i, 0][inside] = (cx - xs)[inside]
            offset[i, 1][inside] = (cy - ys)[inside]
            blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * CENTER_SIGMA ** 2))
            center[i, 0] = np.maximum(center[i, 0], blob)
    return {
        "semantic": torch.from_numpy(semantic),
        "center": torch.from_numpy(center),
        "offset": torch.from_numpy(offset),
        "foreground": torch.from_numpy((semantic > 0)[:, None].astype(np.float32)),
    }
