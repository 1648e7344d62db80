"""Training data for distillation: batches of scaled latents with captions (and size conditioning,
and cached text conditioning where there is some).

Latents are re-sampled from the VAE posterior (mean + std * noise, global torch RNG) at every draw.
Sources (`data.source`, see hypersd.data.sources): the Shapes world (freshly rendered, seeded), an
image folder (all images encoded once, resized to cover and cropped, see hypersd.data.transforms),
webdataset tar shards (streamed and encoded batch by batch, see hypersd.data.shards) and a latent
cache written by `hypersd cache` (text conditioning included, see hypersd.data.cache).

Each source is a `BatchSource`: in-memory pools of latents (`LatentPool`, one image size;
`BucketedLatentPool`, one pool per aspect bucket), a stream of tar shards encoded as drawn
(`ShardStreamBatches`, with a position that checkpoints keep) and a cache reader (`CacheBatches`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from hypersd.data.cache import LatentCache
from hypersd.data.latents import encode_posteriors, posterior
from hypersd.data.shards import ShardStream
from hypersd.data.sources import iter_records, source_kind
from hypersd.data.transforms import ImageTransform, collate, describe_skipped, fit_records
from hypersd.errors import UserError
from hypersd.models.sd import Conditioning
from hypersd.shapes.batches import ShapesStream


@dataclass
class Batch:
    """One training batch. `time_ids` (n, 6): SDXL's size conditioning per image, in pixels:
    original height, width, crop top, left, target height, width (None: uncropped at the model's
    size). `cond`: cached text conditioning (None: the loop encodes the captions)."""

    latents: torch.Tensor
    captions: list[str]
    time_ids: torch.Tensor | None = None
    cond: Conditioning | None = None


class BatchSource(Protocol):
    """What a run draws its batches from; streams also have state_dict / load_state_dict (their position)."""

    def draw(self, batch: int) -> Batch:
        """A batch of `batch` items (random draws use the global torch RNG, so a resumed run repeats them)."""
        ...

    def info(self) -> dict:
        """What the run log records about the data."""
        ...


@dataclass
class LatentPool:
    """Encoded images held in memory (one image size)."""

    means: torch.Tensor
    stds: torch.Tensor
    captions: list[str]
    scaling_factor: float
    time_ids: torch.Tensor | None = None
    source: str = "shapes"
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def draw(self, batch: int) -> Batch:
        """A random batch (global torch RNG, so a resumed run draws the same batches)."""
        idx = torch.randint(0, len(self), (batch,))
        latents = self.means[idx] + self.stds[idx] * torch.randn_like(self.means[idx])
        time_ids = self.time_ids[idx] if self.time_ids is not None else None
        return Batch(latents * self.scaling_factor, [self.captions[i] for i in idx.tolist()], time_ids)

    def info(self) -> dict:
        """What the run log records about the data."""
        return {"source": self.source, "pool": len(self), "skipped": self.skipped}


@dataclass
class BucketedLatentPool:
    """Pools of one image size each (aspect buckets): a batch comes from one bucket, drawn with
    probability proportional to its size (global torch RNG)."""

    pools: list[LatentPool]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.sizes = torch.tensor([len(p) for p in self.pools], dtype=torch.float)

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def draw(self, batch: int) -> Batch:
        return self.pools[int(torch.multinomial(self.sizes, 1))].draw(batch)

    def info(self) -> dict:
        buckets = {"x".join(str(int(v)) for v in p.time_ids[0, 4:]): len(p) for p in self.pools}  # pixels
        return {"source": self.source, "pool": len(self), "buckets": buckets, "skipped": self.skipped}


class ShardStreamBatches:
    """Tar shards streamed (hypersd.data.shards.ShardStream), each batch VAE-encoded when drawn."""

    def __init__(self, vae, stream):
        self.vae, self.stream = vae, stream

    def draw(self, batch: int) -> Batch:
        images, time_ids, captions = collate(self.stream.next_batch(batch))
        means, stds = posterior(self.vae, images)
        latents = means + stds * torch.randn_like(means)
        return Batch(latents * self.vae.config.scaling_factor, captions, time_ids)

    @property
    def skipped(self) -> dict[str, int]:
        return self.stream.skipped

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        self.stream.load_state_dict(state)

    def info(self) -> dict:
        s = self.stream
        return {"source": s.spec, "shards": len(s.shards), "rank": s.rank, "world_size": s.world_size,
                **s.state_dict(), "skipped": s.skipped}


class CacheBatches:
    """A latent cache (hypersd.data.cache): random items, latents re-sampled, text conditioning
    from the cache (so the loop skips the text encoders)."""

    def __init__(self, cache, device: torch.device | str = "cpu"):
        self.cache, self.device = cache, device
        self.scaling_factor = cache.index["scaling_factor"]
        self.skipped = cache.index["skipped"]

    def __len__(self) -> int:
        return len(self.cache)

    def draw(self, batch: int) -> Batch:
        idx = torch.randint(0, len(self), (batch,)).tolist()
        where = self.cache.locate(idx)
        rows = self.cache.rows
        means, stds, time_ids = rows(where, "mean"), rows(where, "std"), rows(where, "time_ids")
        latents = means + stds * torch.randn_like(means)
        extra = {k: rows(where, f"extra.{k}").to(self.device) for k in self.cache.extra_keys}
        if extra:  # SDXL: the size ids are part of the conditioning (stored once, as time_ids)
            extra["time_ids"] = time_ids.to(self.device)
        cond = Conditioning(rows(where, "hidden_states").to(self.device), extra or None)
        return Batch(latents * self.scaling_factor, [self.cache.captions[i] for i in idx], time_ids, cond)

    def info(self) -> dict:
        return {"source": str(self.cache.folder), "cache": len(self), "skipped": self.skipped}


def shapes_pool(vae, n: int, seed: int) -> LatentPool:
    images, captions, _ = ShapesStream(seed).batch(n)
    means, stds = encode_posteriors(vae, images)
    return LatentPool(means, stds, captions, vae.config.scaling_factor)


def folder_pool(vae, root: Path, transform, seed: int) -> LatentPool | BucketedLatentPool:
    """Every usable image of an image folder, fitted by `transform` (random crops drawn once per
    file, seeded) and encoded; one pool per image size."""
    skipped: dict[str, int] = {}
    groups: dict[tuple[int, int], list] = {}
    for caption, fitted in fit_records(iter_records(str(root), skipped), transform, str(seed), skipped):
        groups.setdefault(fitted.array.shape[:2], []).append((caption, fitted))
    if not groups:
        what = describe_skipped(skipped) if skipped else "no images"
        raise UserError(f"no usable training images in {root} ({what})")
    pools = []
    for size in sorted(groups):
        images, time_ids, captions = collate(groups[size])
        means, stds = encode_posteriors(vae, images)
        pools.append(LatentPool(means, stds, captions, vae.config.scaling_factor, time_ids, str(root), skipped))
    return pools[0] if len(pools) == 1 else BucketedLatentPool(pools, str(root), skipped)


def batch_source(vae, data, model_dir: Path | None = None, rank: int = 0, world_size: int = 1) -> BatchSource:
    """The training data of the recipe's `data` block (hypersd.train.recipe.Data). `model_dir`: the run's
    model, which a latent cache must have been made with; (rank, world_size): which part of tar
    shards this process reads."""
    kind = source_kind(data.source)
    if kind == "shapes":
        return shapes_pool(vae, data.pool_size, data.seed)
    if kind == "cache":
        if data.buckets:
            raise UserError(f"data.buckets: a latent cache has one image size; {data.source} cannot be bucketed")
        cache = LatentCache(Path(data.source))
        if model_dir is not None:
            cache.check_model(model_dir, data.resolution)
        return CacheBatches(cache, vae.device)
    transform = ImageTransform.from_recipe(data)
    if kind == "shards":
        stream = ShardStream(data.source, transform, data.seed, data.shuffle_buffer, rank, world_size)
        stream.check()
        return ShardStreamBatches(vae, stream)
    return folder_pool(vae, Path(data.source), transform, data.seed)
