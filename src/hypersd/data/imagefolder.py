"""Image-folder datasets: PNG/JPEG files with captions from `samples.jsonl` or side-car `.txt`.

The layout is the same one every image-writing command of the project uses, so anything that
reads a dataset reads generated samples too. Unreadable or uncaptioned files are skipped and
counted, never fatal one by one; an empty result is the caller's to refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hypersd.data.transforms import open_image, skip
from hypersd.io import write_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
SAMPLES_FILE = "samples.jsonl"


@dataclass
class ImageFolder:
    root: Path
    items: list[tuple[Path, str, dict]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def captions(self) -> list[str]:
        return [caption for _, caption, _ in self.items]

    def load_image(self, index: int, size: int | None = None) -> Image.Image | None:
        image = open_image(self.items[index][0])
        if image is None:
            return None
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        return image


def _from_samples_jsonl(root: Path, skipped: dict[str, int]) -> list[tuple[Path, str, dict]]:
    items = []
    for line in (root / SAMPLES_FILE).read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            path, caption = root / record["file"], record["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError):
            skip(skipped, "bad samples.jsonl line")
            continue
        if not path.is_file():
            skip(skipped, "missing image")
            continue
        items.append((path, str(caption), record))
    return items


def _from_sidecars(root: Path, skipped: dict[str, int]) -> list[tuple[Path, str, dict]]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        text_file = path.with_suffix(".txt")
        if not text_file.is_file():
            skip(skipped, "no caption")
            continue
        try:
            caption = text_file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            skip(skipped, "unreadable caption")
            continue
        items.append((path, caption, {"file": str(path.relative_to(root)), "prompt": caption}))
    return items


def read_image_folder(root: Path, verify: bool = True) -> ImageFolder:
    """Index an image folder; with `verify`, files PIL cannot read are skipped and counted."""
    root = Path(root)
    skipped: dict[str, int] = {}
    reader = _from_samples_jsonl if (root / SAMPLES_FILE).is_file() else _from_sidecars
    items = reader(root, skipped)
    if verify:
        readable = []
        for item in items:
            try:
                with Image.open(item[0]) as im:
                    im.verify()
                readable.append(item)
            except (OSError, ValueError, SyntaxError):
                skip(skipped, "unreadable image")
        items = readable
    return ImageFolder(root, items, skipped)


def load_images(folder: ImageFolder, size: int) -> tuple[np.ndarray, list[str]]:
    """All readable images as a uint8 (n, size, size, 3) array with their captions."""
    arrays, captions = [], []
    for i, (_, caption, _) in enumerate(folder.items):
        image = folder.load_image(i, size)
        if image is None:
            skip(folder.skipped, "unreadable image")
            continue
        arrays.append(np.asarray(image))
        captions.append(caption)
    empty = np.zeros((0, size, size, 3), np.uint8)
    return (np.stack(arrays) if arrays else empty), captions


def write_image_folder(out: Path, images: np.ndarray, records: list[dict]) -> Path:
    """Write PNGs and `samples.jsonl` (one record per image, `file` filled in) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (array, record) in enumerate(zip(images, records)):
        name = f"{i:06d}.png"
        Image.fromarray(array).save(out / name)
        lines.append(json.dumps({"file": name, **record}))
    write_text(out / SAMPLES_FILE, "\n".join(lines) + "\n")
    return out
