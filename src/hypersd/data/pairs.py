"""Teacher noise -> image pairs for DMD's regression loss (Yin et al. 2024a, "One-step Diffusion with
Distribution Matching Distillation", sec. 3.3 and eq. 9): the teacher's deterministic sampler (DDIM)
is run from stored noise z with classifier-free guidance, and the one-step generator learns G(z) ~ y
beside the distribution matching gradient, which keeps it from the mode dropping that DMD alone
shows (DMD sec. 3.3).

A pair file is safetensors: `noise` and `latents` (n, C, h, w; latents in the UNet's space, i.e.
already multiplied by the VAE's scaling factor), the captions and how they were made in its metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hypersd.errors import UserError, require
from hypersd.io import temporary_name
from hypersd.progress import progress

FORMAT = "hypersd-teacher-pairs/1"


@dataclass
class TeacherPairs:
    noise: torch.Tensor      # what the teacher's sampler started from (and the generator reads)
    latents: torch.Tensor    # where the teacher's sampler ended
    captions: list[str]
    info: dict               # teacher, scheduler, steps, guidance, seed

    def __len__(self) -> int:
        return len(self.captions)

    def draw(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n pairs drawn with torch's global stream (a resumed run draws the same)."""
        index = torch.randint(len(self), (n,))
        return (self.noise[index].to(device), self.latents[index].to(device),
                [self.captions[int(i)] for i in index])


@torch.no_grad()
def sample_pairs(pipe, captions: list[str], steps: int, guidance: float, seed: int,
                 batch_size: int = 64) -> TeacherPairs:
    """The teacher's DDIM samples (trailing spacing, eta 0: a deterministic map of the noise) for the
    captions; noise i is drawn from torch.Generator(seed + i)."""
    from diffusers import DDIMScheduler

    own = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(own.config, timestep_spacing="trailing")
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noises, latents = [], []
    try:
        for start in progress(range(0, len(captions), batch_size), desc=f"teacher pairs ({steps} steps)"):
            chunk = captions[start:start + batch_size]
            z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + start + i))
                             for i in range(len(chunk))])
            out = pipe(prompt=chunk, latents=z.to(pipe.device, pipe.unet.dtype), num_inference_steps=steps,
                       guidance_scale=guidance, eta=0.0, output_type="latent").images
            noises.append(z)
            latents.append(out.float().cpu())
    finally:
        pipe.scheduler = own
    info = {"scheduler": "ddim-trailing", "steps": steps, "guidance": guidance, "seed": seed}
    return TeacherPairs(torch.cat(noises), torch.cat(latents), list(captions), info)


def write_teacher_pairs(model: Path, out: Path, captions: list[str], steps: int, guidance: float, seed: int,
                        batch_size: int = 64) -> Path:
    """The teacher pipeline in `model` sampled for the captions (sample_pairs), saved to `out`."""
    from hypersd.models.pipelines import load_pipeline

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    pairs = sample_pairs(pipe, captions, steps, guidance, seed, batch_size)
    pairs.info["teacher"] = str(model)
    return save_pairs(out, pairs)


def save_pairs(path: Path, pairs: TeacherPairs) -> Path:
    """Written under a temporary name and moved into place, so a killed run leaves no half file."""
    meta = {"format": FORMAT, "captions": json.dumps(pairs.captions), "info": json.dumps(pairs.info)}
    tmp = temporary_name(path, "pairs")
    save_file({"noise": pairs.noise.contiguous(), "latents": pairs.latents.contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def merge_pairs(paths: list[Path]) -> TeacherPairs:
    """Several pair files as one, in the order given; they must come from the same teacher and sampler
    (every recorded setting but the noise seed equal), so that the regression target is one map."""
    parts = [load_pairs(p) for p in paths]
    same = [{k: v for k, v in p.info.items() if k != "seed"} for p in parts]
    for path, info in zip(paths[1:], same[1:]):
        require(info == same[0], f"{path} was made with other settings than {paths[0]} ({info} vs {same[0]}); "
                                 "pairs of different samplers are not merged")
    return TeacherPairs(torch.cat([p.noise for p in parts]), torch.cat([p.latents for p in parts]),
                        [c for p in parts for c in p.captions],
                        {**same[0], "seeds": [p.info.get("seed") for p in parts], "merged_from": [str(p) for p in paths]})


def is_pair_file(path: Path) -> bool:
    """Whether `path` is a pair file this program wrote (the only kind `--overwrite` replaces)."""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def load_pairs(path: Path) -> TeacherPairs:
    """A pair file written by save_pairs; one clear error for anything else."""
    path = Path(path)
    require(path.is_file(), f"teacher pair file {path} does not exist (make one with `hypersd data pairs`)")
    require(path.suffix == ".safetensors", f"teacher pair file {path} must be a .safetensors file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise UserError(f"{path} is not a teacher pair file (made by `hypersd data pairs`)")
            noise, latents = f.get_tensor("noise"), f.get_tensor("latents")
            captions, info = json.loads(meta["captions"]), json.loads(meta["info"])
    except UserError:
        raise
    except Exception as exc:  # a damaged or foreign file
        raise UserError(f"cannot read teacher pair file {path}: {exc}") from None
    require(noise.shape == latents.shape and len(captions) == noise.shape[0],
            f"teacher pair file {path} is inconsistent: noise {tuple(noise.shape)}, latents "
            f"{tuple(latents.shape)}, {len(captions)} captions")
    return TeacherPairs(noise, latents, captions, info)
