"""Train the tiny Stable Diffusion of the Shapes world: VAE, then text encoder + UNet jointly.

Stage 1 (VAE): reconstruction (MSE) + a small KL term on freshly rendered images.
Stage 2 (UNet + text encoder): the epsilon-prediction loss of DDPM (Ho et al. 2020, eq. 14) on
VAE latents, caption dropout for classifier-free guidance (Ho & Salimans 2022), optional Min-SNR
loss weighting (Hang et al. 2023, eq. 6) and an EMA of the weights that is what gets shipped.
The result is a standard diffusers `StableDiffusionPipeline` folder.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup

from hypersd.core.metrics import psnr_tensor as psnr
from hypersd.io import atomic_dir, check_output_dir, write_text
from hypersd.models.pipelines import resolve_device, save_pipeline
from hypersd.models.tiny_sd import (
    TinySDConfig,
    build_noise_scheduler,
    build_text_encoder,
    build_tokenizer_for,
    build_unet,
    build_vae,
)
from hypersd.progress import progress
from hypersd.shapes.batches import ShapesStream


@dataclass
class PretrainConfig:
    seed: int = 0
    threads: int = 2
    device: str = "auto"  # auto: cuda when available, else cpu
    init: str | None = None  # a pipeline folder to continue from (its VAE and tokenizer are kept)
    model: TinySDConfig = field(default_factory=TinySDConfig)
    vae_steps: int = 2500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    latent_pool: int = 100_000
    unet_steps: int = 5000
    unet_batch: int = 128
    unet_lr: float = 5e-4
    unet_warmup: int = 200
    unet_stop_at: int | None = None  # stop after this many steps of the unet_steps schedule (budgeted runs)
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500


def train_vae(cfg: PretrainConfig, log) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    vae = build_vae(cfg.model).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=cfg.vae_steps)
    stream = ShapesStream(cfg.seed)
    bar = progress(range(cfg.vae_steps), desc="vae")
    for step in bar:
        x = stream.batch(cfg.vae_batch)[0].to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon, x)
        loss = mse + cfg.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            log({"phase": "vae", "step": step, "mse": mse.item(), "psnr": psnr(recon, x).mean().item()})
            bar.set_postfix(mse=f"{mse.item():.5f}")
    return vae.eval()


@torch.no_grad()
def vae_psnr(vae, seed: int, n: int = 1000, batch: int = 250) -> float:
    """Mean reconstruction PSNR (dB) of the VAE (posterior mean) on freshly rendered images."""
    stream, values = ShapesStream(seed), []
    for start in range(0, n, batch):
        x = stream.batch(min(batch, n - start))[0].to(vae.device)
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
        values.append(psnr(recon.clamp(-1, 1), x))
    return torch.cat(values).mean().item()


@torch.no_grad()
def encode_pool(vae, seed: int, n: int, batch: int = 500):
    """Render n scenes and keep their latent posteriors (mean, std) and captions."""
    stream, means, stds, captions = ShapesStream(seed), [], [], []
    for _ in progress(range(0, n, batch), desc="encode latents"):
        x, caps, _ = stream.batch(batch)
        dist = vae.encode(x.to(vae.device)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        captions += caps
    return torch.cat(means), torch.cat(stds), captions


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights min(SNR, gamma) / SNR (Hang et al. 2023, eq. 6), SNR by diffusers."""
    from diffusers.training_utils import compute_snr  # imports much of diffusers: only where used

    snr = compute_snr(scheduler, timesteps)
    return torch.clamp(snr, max=gamma) / snr if gamma > 0 else torch.ones_like(snr)


def constant_ema(model: torch.nn.Module, decay: float, warmup: int):
    """diffusers' EMAModel of `model`'s parameters at a constant `decay` once `warmup` optimizer
    steps are done, a plain copy before (min_decay = decay switches off its decay ramp)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=decay, min_decay=decay, update_after_step=warmup)


def save_tiny_sd(folder: Path, vae, text_encoder, tokenizer, unet, overwrite: bool = False,
                 settings: dict | None = None) -> None:
    """Write the parts as a standard StableDiffusionPipeline folder, atomically, with `settings` (its
    recommended sampling) in the folder's INFERENCE_FILE where given."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    # Stable Diffusion's own convention: the last DDIM step lands on alphabar_0, not on 1
    scheduler = DDIMScheduler.from_config(build_noise_scheduler().config, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    save_pipeline(pipe, folder, settings, overwrite=overwrite)


def teacher_settings() -> dict:
    """How the shipped teacher is sampled (its reference: DDIM, 50 steps, guidance 5)."""
    from hypersd.assets import REFERENCE_SCHEDULER, REFERENCE_STEPS, TEACHER_GUIDANCE

    return {"scheduler": REFERENCE_SCHEDULER, "steps": REFERENCE_STEPS, "guidance": TEACHER_GUIDANCE}


def train_unet(cfg: PretrainConfig, vae, tokenizer, out: Path, log, networks=None) -> None:
    """Train text encoder + UNet (new ones, or `networks` = (text_encoder, unet) to continue)."""
    torch.manual_seed(cfg.seed + 1)
    rng = random.Random(cfg.seed + 1)
    device = resolve_device(cfg.device)
    means, stds, captions = encode_pool(vae, cfg.seed + 1000, cfg.latent_pool)
    if networks is None:
        vae.register_to_config(scaling_factor=1.0 / means.std().item())
        networks = (build_text_encoder(cfg.model, tokenizer), build_unet(cfg.model))
    scale = vae.config.scaling_factor  # a continued model keeps the scale it was trained with
    log({"phase": "latents", "pool": len(captions), "scaling_factor": scale})
    text_encoder, unet = (net.to(device).train() for net in networks)
    ema_text, ema_unet = constant_ema(text_encoder, cfg.ema_decay, cfg.unet_warmup), constant_ema(
        unet, cfg.ema_decay, cfg.unet_warmup)
    shipped_text, shipped_unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()  # EMA weights go here
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=cfg.unet_warmup, num_training_steps=cfg.unet_steps)
    noise_scheduler = build_noise_scheduler()
    stop = min(cfg.unet_stop_at or cfg.unet_steps, cfg.unet_steps)
    bar = progress(range(stop), desc="unet+text")
    for step in bar:
        idx = torch.randint(0, len(captions), (cfg.unet_batch,))
        latents = (means[idx] + stds[idx] * torch.randn_like(means[idx])) * scale
        prompts = ["" if rng.random() < cfg.caption_dropout else captions[i] for i in idx.tolist()]
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.unet_batch,), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        per_sample = (pred - noise).pow(2).flatten(1).mean(1)
        loss = (per_sample * min_snr_weights(noise_scheduler, t, cfg.min_snr_gamma)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())
        if step % 50 == 0:
            log({"phase": "unet", "step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        last = step == stop - 1
        if last or (step + 1) % cfg.checkpoint_every == 0:
            ema_text.copy_to(shipped_text.parameters())
            ema_unet.copy_to(shipped_unet.parameters())
            save_tiny_sd(out, vae, shipped_text, tokenizer, shipped_unet, overwrite=True,  # checked at the start
                         settings=teacher_settings())
            log({"phase": "checkpoint", "step": step + 1})


def _load_pipeline_parts(folder: Path):
    """Tokenizer, VAE and (text encoder, UNet) of an existing pipeline folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return (CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            AutoencoderKL.from_pretrained(folder / "vae"),
            (CLIPTextModel.from_pretrained(folder / "text_encoder"),
             UNet2DConditionModel.from_pretrained(folder / "unet")))


def _environment() -> dict:
    import sys

    import diffusers
    import transformers

    return {"command": " ".join(["hypersd", *sys.argv[1:]]) if sys.argv else "", "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads()}


def pretrain(cfg: PretrainConfig, out: Path, work: Path | None = None, overwrite: bool = False) -> dict:
    """Train all three networks and write the pipeline folder `out`; returns the record. An existing
    `out` is replaced only if hypersd wrote it, or with `overwrite` (checked before any training).

    The VAE is kept in `work` (default: `<out>.work`) and reused when the command is run again,
    so an interrupted run restarts at the UNet stage.
    """
    torch.set_num_threads(cfg.threads)
    out = check_output_dir(Path(out), overwrite)
    work = Path(work or out.with_name(out.name + ".work"))
    work.mkdir(parents=True, exist_ok=True)
    log_file = (work / "log.jsonl").open("a")

    def log(record: dict) -> None:
        record["time_s"] = round(time.time() - start, 1)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    start = time.time()
    device = resolve_device(cfg.device)
    vae_seconds, networks = None, None
    if cfg.init:
        tokenizer, vae, networks = _load_pipeline_parts(Path(cfg.init))
        log({"phase": "init", "folder": cfg.init})
    else:
        tokenizer = build_tokenizer_for(work / "tokenizer")
        vae_dir = work / "vae"
        if (vae_dir / "diffusion_pytorch_model.safetensors").exists():
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(vae_dir)
            log({"phase": "vae_reused", "folder": str(vae_dir)})
        else:
            vae = train_vae(cfg, log)
            with atomic_dir(vae_dir, overwrite=True) as tmp:  # a killed run leaves no half VAE to reuse
                vae.save_pretrained(tmp)
            vae_seconds = time.time() - start
    vae = vae.to(device).eval().requires_grad_(False)
    vae_quality = vae_psnr(vae, seed=cfg.seed + 5000)
    log({"phase": "vae_eval", "psnr_db": vae_quality})
    unet_start = time.time()
    train_unet(cfg, vae, tokenizer, out, log, networks)
    record = {"config": asdict(cfg), "environment": _environment(), "vae_psnr_db": vae_quality,
              "vae_train_seconds": vae_seconds, "unet_train_seconds": time.time() - unet_start,
              "train_seconds": time.time() - start}
    previous = Path(cfg.init or "") / "hypersd_pretrain.json"
    if cfg.init and previous.is_file():  # a continued model carries the record of what it continued
        record["continued_from"] = json.loads(previous.read_text())
    write_text(out / "hypersd_pretrain.json", json.dumps(record, indent=2))
    return record
