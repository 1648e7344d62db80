"""Latent caches (`hypersd cache`): every usable item of a dataset encoded once for one model.

Per item: the VAE posterior's mean and std (training re-samples latents from them at every draw,
as the in-memory pools do), the model's text conditioning of the caption (hidden states and, for
SDXL, the extra tensors: pooled text embeddings and size ids), the caption and the item's size
conditioning (time_ids). Written as safetensors shards `cache-00000.safetensors`, ... (at most
about `max_shard_bytes` each; captions in each shard's metadata) and an index `cache-index.json`
(model, fingerprint, resolution, count, skipped counts, shapes, shards), into a temporary folder
renamed into place at the end.

A cache belongs to one model and resolution. The model is recognised by its fingerprint: the
folder's name, the UNet's in_channels, the text encoders' hidden sizes and a hash of the
component configs (unet, vae, text_encoder, text_encoder_2; keys starting with "_" and
transformers_version left out; in_channels and hidden sizes are covered by the hash too, and kept
to name what differs). It does not hash the weights: a fine-tune saved under the same folder name
with the same configs passes, so keep one cache per model folder.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hypersd.data.latents import posterior
from hypersd.data.sources import CACHE_INDEX, iter_records, source_kind
from hypersd.data.transforms import CROPS, ImageTransform, collate, describe_skipped, fit_records
from hypersd.errors import UserError
from hypersd.io import atomic_dir, check_output_dir, require_finite
from hypersd.models.sd import load_model
from hypersd.progress import progress

FORMAT = "hypersd-latent-cache"
SHARD_BYTES = 1 << 30
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def model_fingerprint(model: Path) -> dict:
    """What identifies a model for a cache (see the module doc); a single-file checkpoint: its
    name and size."""
    path = Path(model).resolve()
    if path.is_file():
        return {"name": path.name, "bytes": path.stat().st_size}
    configs = {}
    for part in COMPONENTS:
        file = path / part / "config.json"
        if file.is_file():
            configs[part] = {k: v for k, v in json.loads(file.read_text()).items()
                             if not k.startswith("_") and k != "transformers_version"}
    return {"name": path.name,
            "unet_in_channels": configs.get("unet", {}).get("in_channels"),
            "text_hidden_size": [configs[p].get("hidden_size") for p in COMPONENTS[2:] if p in configs],
            "config_sha256": hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]}


class _ShardWriter:
    """Collects encoded batches and writes a safetensors shard whenever `max_bytes` is reached."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.captions: list[str] = []
        self.bytes, self.shards, self.shapes = 0, [], {}

    def add(self, tensors: dict[str, torch.Tensor], captions: list[str]) -> None:
        for name, value in tensors.items():
            self.parts.setdefault(name, []).append(value.detach().cpu().contiguous())
            self.bytes += value.numel() * value.element_size()
            self.shapes[name] = list(value.shape[1:])
        self.captions += captions
        if self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.captions:
            return
        name = f"cache-{len(self.shards):05d}.safetensors"
        tensors = {k: torch.cat(v) for k, v in self.parts.items()}
        require_finite(tensors, f"latent cache shard {name}")
        save_file(tensors, self.folder / name, metadata={"captions": json.dumps(self.captions)})
        self.shards.append({"file": name, "count": len(self.captions)})
        self.parts, self.captions, self.bytes = {}, [], 0


def _encode_batch(sd, items: list) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Posterior and text conditioning of fitted (caption, image) items. SDXL's size ids are in the
    conditioning too; they are stored once, as time_ids."""
    images, time_ids, captions = collate(items)
    mean, std = posterior(sd.vae, images)
    cond = sd.encode_prompts(captions, time_ids=time_ids)
    tensors = {"mean": mean, "std": std, "time_ids": time_ids, "hidden_states": cond.hidden_states.cpu()}
    tensors.update({f"extra.{k}": v.cpu() for k, v in (cond.extra or {}).items() if k != "time_ids"})
    return tensors, captions


def _replaceable(out: Path, overwrite: bool) -> bool:
    """A folder holding a latent cache (written before caches were marked, too) may be replaced."""
    return overwrite or (Path(out) / CACHE_INDEX).is_file()


def write_cache(model: Path, source: str, out: Path, resolution: int | None = None, crop: str = "center",
                batch_size: int = 16, max_shard_bytes: int = SHARD_BYTES, seed: int = 0,
                device: str = "cpu", overwrite: bool = False) -> dict:
    """Encode every usable item of `source` (image folder or tar shards) with `model` at `resolution`
    (None: the model's own image size); with crop "random", crops are seeded per item. Returns the index."""
    if crop not in CROPS:
        raise UserError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    kind = source_kind(source)
    if kind not in ("folder", "shards"):
        raise UserError(f"hypersd cache reads an image folder or tar shards, not {kind} data: {source}")
    out = Path(out)
    check_output_dir(out, _replaceable(out, overwrite))
    sd = load_model(model, device=device)
    sd.freeze_base()
    resolution = resolution or sd.image_size
    with atomic_dir(out, _replaceable(out, overwrite)) as tmp:
        index = _write(sd, source, tmp, ImageTransform(resolution, crop), batch_size, max_shard_bytes, seed)
        index.update(model=str(Path(model).resolve()), fingerprint=model_fingerprint(model), crop=crop)
        (tmp / CACHE_INDEX).write_text(json.dumps(index, indent=2))
    return index


def _write(sd, source: str, folder: Path, transform: ImageTransform, batch_size: int,
           max_shard_bytes: int, seed: int) -> dict:
    skipped: dict[str, int] = {}
    writer = _ShardWriter(folder, max_shard_bytes)
    batch: list = []
    bar = progress(desc="cache", unit="img")
    for item in fit_records(iter_records(source, skipped), transform, str(seed), skipped):
        batch.append(item)
        if len(batch) == batch_size:
            writer.add(*_encode_batch(sd, batch))
            bar.update(len(batch))
            batch = []
    if batch:
        writer.add(*_encode_batch(sd, batch))
        bar.update(len(batch))
    bar.close()
    writer.flush()
    count = sum(s["count"] for s in writer.shards)
    if count == 0:
        raise UserError(f"no usable items in {source} ({describe_skipped(skipped) if skipped else 'no items'})")
    return {"format": FORMAT, "version": 1, "source": source, "resolution": transform.resolution,
            "count": count, "skipped": skipped, "scaling_factor": sd.vae.config.scaling_factor,
            "shapes": writer.shapes, "shards": writer.shards}


def read_index(folder: Path) -> dict:
    file = Path(folder) / CACHE_INDEX
    try:
        index = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read latent cache index {file}: {exc}") from None
    if index.get("format") != FORMAT:
        raise UserError(f"{file} is not a hypersd latent cache index")
    return index


class LatentCache:
    """A written cache, read lazily: shards memory-mapped, rows gathered on request."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.files, self.captions, self.starts = [], [], []
        for shard in self.index["shards"]:
            path = self.folder / shard["file"]
            if not path.is_file():
                raise UserError(f"latent cache {self.folder} is incomplete: {shard['file']} is missing")
            handle = safe_open(str(path), framework="pt")
            self.starts.append(len(self.captions))
            self.captions += json.loads(handle.metadata()["captions"])
            self.files.append(handle)
        self.extra_keys = [k[len("extra."):] for k in self.index["shapes"] if k.startswith("extra.")]

    def __len__(self) -> int:
        return len(self.captions)

    def check_model(self, model: Path, resolution: int) -> None:
        """One clear error unless the cache was made with `model` (same fingerprint) at `resolution`."""
        index, have = self.index, model_fingerprint(model)
        made = index["fingerprint"]
        differ = [k for k in sorted(set(have) | set(made)) if have.get(k) != made.get(k)]
        if differ or index["resolution"] != resolution:
            what = f"fingerprint differs in {', '.join(differ)}" if differ else "resolution differs"
            raise UserError(f"latent cache {self.folder} was made with model {index['model']} at resolution "
                            f"{index['resolution']}, this run uses {model} at resolution {resolution} ({what}); "
                            "write a cache for this model with hypersd cache")

    def locate(self, indices: list[int]) -> list[tuple[int, int]]:
        """(shard, row) of each item index."""
        shards = [bisect.bisect_right(self.starts, i) - 1 for i in indices]
        return [(shard, i - self.starts[shard]) for shard, i in zip(shards, indices)]

    def rows(self, where: list[tuple[int, int]], name: str) -> torch.Tensor:
        """Tensor `name` at the located items (see locate), stacked."""
        slices = [self.files[shard].get_slice(name) for shard in range(len(self.files))]
        return torch.cat([slices[shard][row:row + 1] for shard, row in where])
