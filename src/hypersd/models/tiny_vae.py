"""A tiny VAE for fast decoding: TAESD's architecture (diffusers' `AutoencoderTiny`, Bohan 2023) distilled
from a pipeline's own VAE, so that a one-step model is not left waiting on the decoder.

At 32 px a one-step call spends about as long in the VAE decoder as in the UNet (bench/results/speed.md).
Real Stable Diffusion users have TAESD / TAESDXL for this; a model trained elsewhere (here: the Shapes
teacher) needs its own. The tiny decoder learns the teacher VAE's decoding, D(z) ~ VAE.decode(z), on
latents of rendered images and the same latents with Gaussian noise added (a generator's outputs lie
near, not on, the encoder's latents) and, where given, latents a model generated (a teacher pair file's, or the
one-step model's own: the latents the tiny decoder will be asked to decode); the decoder's error is the mean
absolute one by default (sharper edges than the squared one); the tiny encoder learns the posterior mean,
E(x) ~ mean(q(z|x)).
Its `scaling_factor` is the VAE's, so a pipeline decodes with it unchanged (`pipe.vae = tiny`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hypersd.errors import require
from hypersd.progress import progress

UPSAMPLING = ("nearest", "bilinear")
DECODER_LOSSES = ("l1", "mse")


@dataclass
class TinyVaeConfig:
    channels: int = 16            # every block's width (TAESD: 64 at 512 px)
    blocks: tuple[int, ...] = (2, 2, 1)  # residual blocks per resolution, lowest first (decoder; 0: none there)
    upsample: str = "nearest"     # the decoder's upsampling between resolutions: "nearest" (TAESD) or "bilinear"
    decoder_loss: str = "l1"      # "l1" or "mse" against the VAE's decodes (L1: 27.5 dB against 27.2 in one screen, README)
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    pool: int = 4096              # rendered images encoded once; their latents and targets are reused
    noise_share: float = 0.5      # share of training latents with Gaussian noise added
    noise_max: float = 0.5        # that noise's std, drawn from U(0, noise_max) in units of the latents' std
    seed: int = 0

    def validate(self) -> None:
        require(self.channels > 0 and all(b >= 0 for b in self.blocks),
                "channels must be positive and blocks at least 0")
        require(self.steps > 0 and self.batch_size > 0 and self.pool >= self.batch_size,
                "steps and batch size must be positive and the pool at least one batch")
        require(self.learning_rate > 0, f"learning rate must be positive, got {self.learning_rate}")
        require(0 <= self.noise_share <= 1 and self.noise_max >= 0, "noise_share in [0, 1], noise_max >= 0")
        require(self.decoder_loss in DECODER_LOSSES,
                f"decoder_loss must be one of {', '.join(DECODER_LOSSES)}, got {self.decoder_loss!r}")
        require(self.upsample in UPSAMPLING, f"upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}")


def build_tiny_vae(vae_config, cfg: TinyVaeConfig):
    """An untrained AutoencoderTiny with the VAE's latent channels, downsampling factor and scaling."""
    from diffusers import AutoencoderTiny

    levels = len(vae_config.block_out_channels)  # the VAE downsamples levels - 1 times by 2
    require(len(cfg.blocks) == levels, f"blocks needs one entry per resolution level of the VAE ({levels}), "
                                       f"got {len(cfg.blocks)}")
    widths = (cfg.channels,) * levels
    return AutoencoderTiny(latent_channels=vae_config.latent_channels, encoder_block_out_channels=widths,
                           decoder_block_out_channels=widths, num_encoder_blocks=(1,) * levels,
                           num_decoder_blocks=tuple(cfg.blocks), upsample_fn=cfg.upsample,
                           scaling_factor=vae_config.scaling_factor,
                           shift_factor=getattr(vae_config, "shift_factor", None) or 0.0)


@torch.no_grad()
def teacher_pool(vae, images: torch.Tensor, cfg: TinyVaeConfig, gen: torch.Generator, batch: int = 64,
                 generated: torch.Tensor | None = None):
    """(images, posterior means, latents, the VAE's decodes of the latents): the latents are posterior
    samples of the images, then the `generated` latents (the VAE's unscaled space) if given; a
    `noise_share` of them with extra Gaussian noise."""
    means, latents = [], []
    for start in progress(range(0, len(images), batch), desc="teacher VAE encoder"):
        dist = vae.encode(images[start:start + batch]).latent_dist
        means.append(dist.mean)
        latents.append(dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen))
    z = torch.cat(latents + ([generated] if generated is not None else []))
    noisy = torch.rand(len(z), generator=gen) < cfg.noise_share
    sigma = torch.rand(len(z), 1, 1, 1, generator=gen) * cfg.noise_max * z.std()
    z = torch.where(noisy[:, None, None, None], z + sigma * torch.randn(z.shape, generator=gen), z)
    decodes = [vae.decode(z[s:s + batch]).sample.clamp(-1, 1)
               for s in progress(range(0, len(z), batch), desc="teacher VAE decoder")]
    return images, torch.cat(means), z, torch.cat(decodes)


def tiny_vae_loss(tiny, batch, decoder_loss: str) -> tuple[torch.Tensor, dict]:
    """Decoder and encoder distillation: the decoder's error in the [-1, 1] image range (mean absolute or mean
    squared, `decoder_loss`), the encoder's mean squared error in latent space."""
    images, means, latents, decodes = batch
    error = tiny.decode(latents).sample - decodes
    decoder = error.abs().mean() if decoder_loss == "l1" else error.square().mean()
    encoder = torch.nn.functional.mse_loss(tiny.encode(images).latents, means)
    return decoder + encoder, {"decoder": decoder.item(), "encoder": encoder.item()}


def draw(pool, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A batch: n images with their means, and n latents with their decodes (drawn apart: the decoder's
    pool also holds generated latents)."""
    images, means, latents, decodes = pool
    i = torch.randint(len(images), (n,), generator=gen)
    j = torch.randint(len(latents), (n,), generator=gen)
    return [images[i], means[i], latents[j], decodes[j]]


def train_tiny_vae(vae, images: torch.Tensor, cfg: TinyVaeConfig, log=None, generated: torch.Tensor | None = None):
    """Distil a tiny VAE from `vae` (frozen) on `images` ((n, 3, H, W) in [-1, 1]) and, for the decoder,
    the `generated` latents too; returns it in eval mode."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    pool = teacher_pool(vae.eval(), images, cfg, gen, generated=generated)
    tiny = build_tiny_vae(vae.config, cfg).train()
    opt = torch.optim.AdamW(tiny.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(100, cfg.steps // 10), cfg.steps)
    start = time.time()
    for step in progress(range(cfg.steps), desc="tiny VAE"):
        loss, parts = tiny_vae_loss(tiny, draw(pool, cfg.batch_size, gen), cfg.decoder_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == cfg.steps - 1):
            log({"step": step, "loss": loss.item(), **parts, "elapsed_s": round(time.time() - start, 1)})
    return tiny.eval()


@torch.no_grad()
def decoder_psnr(tiny, vae, latents: torch.Tensor) -> float:
    """PSNR (dB, images in [0, 1]) of the tiny decoder against the VAE's on the same latents."""
    a = (tiny.decode(latents).sample.clamp(-1, 1) + 1) / 2
    b = (vae.decode(latents).sample.clamp(-1, 1) + 1) / 2
    mse = torch.mean((a - b) ** 2).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def save_tiny_vae(tiny, out: Path, cfg: TinyVaeConfig, record: dict, overwrite: bool = False) -> Path:
    """A diffusers AutoencoderTiny folder (safetensors) with how it was made (hypersd_tiny_vae.json)."""
    import json

    from hypersd.io import atomic_dir, writing

    with atomic_dir(Path(out), overwrite) as tmp, writing(out):
        tiny.save_pretrained(tmp, safe_serialization=True)
        (tmp / RECORD_FILE).write_text(json.dumps({"config": asdict(cfg), **record}, indent=2))
    return Path(out)


RECORD_FILE = "hypersd_tiny_vae.json"


def load_tiny_vae(folder: Path, dtype: torch.dtype = torch.float32):
    """An AutoencoderTiny folder (this project's or TAESD's), safetensors only; one line if it is not one."""
    from diffusers import AutoencoderTiny

    from hypersd.errors import load_error

    folder = Path(folder)
    require((folder / "config.json").is_file(), f"tiny VAE not found: {folder} (no config.json)")
    try:
        return AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise load_error("tiny VAE", folder, exc) from None


def with_tiny_vae(pipe, folder: Path):
    """`pipe` decoding with the tiny VAE in `folder`; every other module shared. Refused when its latent
    channels differ from the pipeline's VAE. (Its scaling factor is its own: TAESD's 1.0 reads the UNet's
    latents as they are, this project's tiny VAEs the VAE's unscaled ones.)"""
    from hypersd.models.pipelines import derived_pipeline

    tiny = load_tiny_vae(folder, pipe.vae.dtype)
    own = pipe.vae.config
    require(tiny.config.latent_channels == own.latent_channels,
            f"tiny VAE {folder} has {tiny.config.latent_channels} latent channels, the model's VAE {own.latent_channels}")
    return derived_pipeline(pipe, vae=tiny.to(pipe.device))
