"""Which kind of training data `data.source` names, and its items read once in order.

Kinds: "shapes" (the rendered Shapes world), "cache" (a folder holding a latent cache written by
`hypersd cache`), "shards" (webdataset tar shards: a brace pattern, a glob, a .tar file or a folder
of .tar files) and "folder" (an image folder, see hypersd.data.imagefolder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from hypersd.data.shards import Record, expand_shards, looks_like_shards, read_shard
from hypersd.data.transforms import skip
from hypersd.errors import UserError

CACHE_INDEX = "cache-index.json"


def source_kind(spec: str) -> str:
    """'shapes', 'cache', 'shards' or 'folder'; a path that does not exist is a UserError."""
    if spec == "shapes":
        return "shapes"
    path = Path(spec)
    if path.is_dir():
        if (path / CACHE_INDEX).is_file():
            return "cache"
        return "shards" if any(path.glob("*.tar")) else "folder"
    if looks_like_shards(spec):
        return "shards"
    raise UserError(f"data source not found: {spec} (give 'shapes', an image folder, tar shards or a latent cache)")


def iter_records(spec: str, skipped: dict[str, int]) -> Iterator[Record]:
    """Every item of an image folder or of tar shards, in order, undecoded; what cannot be used
    (no caption, ...) is counted in `skipped`. Other kinds are refused."""
    from hypersd.data.imagefolder import read_image_folder

    kind = source_kind(spec)
    if kind == "folder":
        folder = read_image_folder(Path(spec), verify=False)
        for reason, n in folder.skipped.items():
            skip(skipped, reason, n)
        for path, caption, _ in folder.items:
            yield Record(str(path.relative_to(folder.root)), caption, path)
    elif kind == "shards":
        for path in expand_shards(spec):
            yield from read_shard(path, skipped)
    else:
        raise UserError(f"expected an image folder or tar shards, got {kind} data: {spec}")
