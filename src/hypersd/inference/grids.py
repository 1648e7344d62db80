"""Labelled image grids (Pillow): small images upscaled, each with its caption underneath."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def labelled_grid(images: np.ndarray, labels: list[str], columns: int = 8, cell: int = 128,
                  title: str | None = None) -> Image.Image:
    """A grid of (n, H, W, 3) uint8 images, nearest-upscaled to `cell` px, captions below."""
    font = ImageFont.load_default(size=11)
    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    label_h, title_h = 30, (22 if title else 0)
    grid = Image.new("RGB", (columns * cell, title_h + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 4), title, fill="black", font=ImageFont.load_default(size=14))
    for i, (array, label) in enumerate(zip(images, labels)):
        x, y = (i % columns) * cell, title_h + (i // columns) * (cell + label_h)
        grid.paste(Image.fromarray(array).resize((cell, cell), Image.NEAREST), (x, y))
        lines = textwrap.wrap(label, width=cell // 6)[:2]
        draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    return grid
