"""Webdataset-style tar shards, streamed: LAION-style members `KEY.jpg|jpeg|png|webp` with `KEY.txt`
(or `KEY.json` holding a "caption" field), the members of one item next to each other.

A small reader on the standard library's tarfile, in streaming mode (no seeking, one shard open at
a time). The `webdataset` package would read these files too, but it neither counts what it skips
nor can resume a position, and both are wanted here; its file layout is kept, so shards written by
its tools (img2dataset and the like) are read as they are.

`ShardStream` reads the shards in a seeded shuffled order per epoch, passes the items through a
shuffle buffer, decodes and transforms each image when it leaves the buffer, and groups items by
size (one aspect bucket per batch). Data-parallel ranks read different shards (shard i of the
epoch's order goes to rank i % world_size), or every rank every shard with the items interleaved
when there are fewer shards than ranks. Resume: `state_dict()` is (epoch, items taken this epoch);
a stream given it re-reads the epoch in the same order and skips that many. Items that cannot be
used are skipped and counted in `skipped` (reason -> count).
"""

from __future__ import annotations

import glob
import json
import random
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from hypersd.data.transforms import Fitted, ImageTransform, describe_skipped, fit_records, open_image, skip
from hypersd.errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


@dataclass
class Record:
    """One item: `key` is "SHARD/KEY" (or a folder's file name), `image` undecoded bytes or a file path."""

    key: str
    caption: str
    image: bytes | Path


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}.tar` -> a-000.tar, a-001.tar, a-002.tar (zero-padded as written); `{x,y}` lists too."""
    found = [m for m in (_RANGE.search(pattern), _LIST.search(pattern)) if m]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())  # the leftmost brace varies slowest
    if match.re is _RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        values = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    else:
        values = match.group(1).split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [name for value in values for name in expand_braces(head + value + tail)]


def looks_like_shards(spec: str) -> bool:
    """A brace pattern, a glob or a path ending in .tar (a folder is judged by its contents)."""
    return spec.endswith(".tar") or "{" in spec or any(c in spec for c in "*?[")


def expand_shards(spec: str) -> list[Path]:
    """The shard files of `spec`: a folder (its *.tar), a brace pattern, a glob or one file."""
    path = Path(spec)
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
    elif "{" in spec:
        shards = [Path(p) for p in expand_braces(spec)]
        missing = [p for p in shards if not p.is_file()]
        if missing:
            raise UserError(f"{len(missing)} of {len(shards)} tar shards of {spec} not found, e.g. {missing[0]}")
    elif any(c in spec for c in "*?["):
        shards = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    else:
        shards = [path] if path.is_file() else []
    if not shards:
        raise UserError(f"no tar shards found at {spec}")
    return shards


def _split_name(name: str) -> tuple[str, str]:
    """'dir/000123.jpg' -> ('dir/000123', 'jpg'): the key ends at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _caption(members: dict[str, bytes]) -> str | None:
    """The .txt member's text, else the .json member's "caption"; None when neither gives text."""
    try:
        if "txt" in members:
            return members["txt"].decode("utf-8").strip() or None
        if "json" in members:
            caption = json.loads(members["json"]).get("caption")
            if isinstance(caption, str):
                return caption.strip() or None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):  # AttributeError: JSON not an object
        return None
    return None


def _record(shard: str, key: str, members: dict[str, bytes], skipped: dict[str, int]) -> Record | None:
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None:
        skip(skipped, "no image")
        return None
    caption = _caption(members)
    if caption is None:
        skip(skipped, "no caption")
        return None
    return Record(f"{shard}/{key}", caption, image)


def read_shard(path: Path, skipped: dict[str, int]) -> Iterator[Record]:
    """The records of one shard in file order; items without image or caption are counted in
    `skipped`, and so is a shard tarfile cannot read (whatever of it was read is kept)."""
    path = Path(path)
    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name, ext = _split_name(member.name)
                if name != key:
                    record = _record(path.name, key, members, skipped) if members else None
                    if record is not None:
                        yield record
                    key, members = name, {}
                members[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        skip(skipped, "unreadable shard")
        return
    record = _record(path.name, key, members, skipped) if members else None
    if record is not None:
        yield record


def shuffled(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer of `size` items: each new item replaces a random one, which leaves (size 1:
    the order is kept); the rest leave shuffled at the end."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class ShardStream:
    """An endless, seeded stream of fitted images with captions from tar shards (see the module doc)."""

    spec: str
    transform: ImageTransform
    seed: int = 0
    shuffle_buffer: int = 1000
    rank: int = 0
    world_size: int = 1
    skipped: dict[str, int] = field(default_factory=dict)
    opened: list[Path] = field(default_factory=list)   # shards opened so far, in order

    def __post_init__(self):
        self.shards = expand_shards(self.spec)
        self.epoch, self.consumed, self._skip = 0, 0, 0
        self._items: Iterator | None = None
        self._queues: dict[tuple[int, int], list] = {}

    # ------------------------------------------------------------ position
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue at `state` (from state_dict): items already taken this epoch are skipped.
        Items waiting in a bucket when the state was taken are not replayed."""
        if state:
            self.epoch, self._skip = int(state["epoch"]), int(state["consumed"])
            self._items, self._queues = None, {}

    # ------------------------------------------------------------ reading
    def _plan(self, epoch: int) -> tuple[list[Path], int, int]:
        """(this rank's shards in the epoch's order, keep every n-th item, offset)."""
        order = list(self.shards)
        random.Random(f"{self.seed}:shards:{epoch}").shuffle(order)
        if len(order) >= self.world_size:
            return order[self.rank::self.world_size], 1, 0
        return order, self.world_size, self.rank

    def _records(self, epoch: int) -> Iterator[Record]:
        shards, every, offset = self._plan(epoch)
        n = 0
        for path in shards:
            self.opened.append(path)
            for record in read_shard(path, self.skipped):
                if n % every == offset:
                    yield record
                n += 1

    def _epoch(self, epoch: int, skip_first: int) -> Iterator[tuple[str, Fitted]]:
        """The epoch's items in buffer-shuffled order; the first `skip_first` (taken before a resume)
        are passed over undecoded."""
        rng = random.Random(f"{self.seed}:buffer:{epoch}:{self.rank}")

        def taken() -> Iterator[Record]:
            for i, record in enumerate(shuffled(self._records(epoch), self.shuffle_buffer, rng)):
                self.consumed = i + 1
                if i >= skip_first:
                    yield record

        yield from fit_records(taken(), self.transform, f"{self.seed}:{epoch}", self.skipped)

    def _stream(self) -> Iterator[tuple[str, Fitted]]:
        while True:
            skip_first, self._skip = self._skip, 0
            usable = 0
            for item in self._epoch(self.epoch, skip_first):
                usable += 1
                yield item
            if usable == 0 and skip_first == 0:
                raise self._empty_error(self.skipped)
            self.epoch, self.consumed = self.epoch + 1, 0

    def next_batch(self, n: int) -> list[tuple[str, Fitted]]:
        """The next `n` items of one size: items wait in their bucket until it holds `n`."""
        if self._items is None:
            self._items = self._stream()
        while True:
            caption, fitted = next(self._items)
            queue = self._queues.setdefault(fitted.array.shape[:2], [])
            queue.append((caption, fitted))
            if len(queue) == n:
                self._queues[fitted.array.shape[:2]] = []
                return queue

    def check(self) -> None:
        """Stop with one clear error unless some shard holds a usable item (reads up to the first)."""
        counts: dict[str, int] = {}
        for path in self.shards:
            for record in read_shard(path, counts):
                if open_image(record.image) is not None:
                    return
                skip(counts, "unreadable image")
        raise self._empty_error(counts)

    def _empty_error(self, counts: dict[str, int]) -> UserError:
        what = describe_skipped(counts) if counts else "no items"
        return UserError(f"no usable training items in tar shards {self.spec} "
                         f"({len(self.shards)} shards; {what})")
