"""One small interface over a diffusers text-to-image model, used unchanged by every training phase.

The methods are what distillation needs: encode captions, call the UNet as an epsilon predictor
(guided or not), switch which LoRA adapter is active (the teacher is the same UNet with the
adapters disabled), and move between images and scaled latents. SD1.5-style pipelines are
implemented here; SDXL adds pooled embeddings and size conditioning behind the same methods.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch

from hypersd.errors import UserError


@dataclass
class Conditioning:
    """Everything the UNet needs besides x_t and t, batched along dim 0."""

    hidden_states: torch.Tensor
    extra: dict | None = None  # SDXL: {"text_embeds": ..., "time_ids": ...}

    def cat(self, other: "Conditioning") -> "Conditioning":
        extra = None if self.extra is None else {k: torch.cat([v, other.extra[k]]) for k, v in self.extra.items()}
        return Conditioning(torch.cat([self.hidden_states, other.hidden_states]), extra)

    def index(self, idx) -> "Conditioning":
        extra = None if self.extra is None else {k: v[idx] for k, v in self.extra.items()}
        return Conditioning(self.hidden_states[idx], extra)


class SDAdapter:
    """Stable Diffusion 1.x-style model: one CLIP text encoder, epsilon prediction."""

    def __init__(self, pipe):
        prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise UserError(f"the model predicts {prediction!r}; only epsilon-prediction models are supported")
        self.pipe = pipe
        self.unet, self.vae = pipe.unet, pipe.vae
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.clone().float()
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        self._uncond_cache: dict = {}

    def with_unet(self, unet) -> "SDAdapter":
        """The same model (text encoder, VAE, schedule, pipeline) calling another UNet: a full-UNet student."""
        other = copy.copy(self)
        other.unet = unet
        return other

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def freeze_base(self) -> None:
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.eval()

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return Conditioning(self.text_encoder(ids)[0])

    def unconditional(self, batch: int) -> Conditioning:
        if "" not in self._uncond_cache:
            self._uncond_cache[""] = self.encode_prompts([""])
        one = self._uncond_cache[""]
        return Conditioning(one.hidden_states.expand(batch, -1, -1))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        kwargs = {"added_cond_kwargs": cond.extra} if cond.extra is not None else {}
        return self.unet(x_t, t.clamp_min(0), cond.hidden_states, **kwargs).sample

    def guided_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, uncond: Conditioning,
                   scale: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance e_u + w (e_c - e_u), both halves in one UNet call."""
        both = self.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), cond.cat(uncond))
        e_cond, e_uncond = both.chunk(2)
        return e_uncond + scale.view(-1, *([1] * (x_t.ndim - 1))) * (e_cond - e_uncond)

    @contextlib.contextmanager
    def adapter(self, name: str | None):
        """Run with LoRA adapter `name` active, or with every adapter disabled (name None: the base)."""
        unet = self.unet
        if not getattr(unet, "_hf_peft_config_loaded", False):
            yield
            return
        previous = unet.active_adapters()
        if name is None:
            unet.disable_adapters()
            try:
                yield
            finally:
                unet.enable_adapters()
                unet.set_adapter(previous)
            return
        unet.set_adapter(name)
        try:
            yield
        finally:
            unet.set_adapter(previous)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents (a posterior sample, or its mean)."""
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        latents = dist.sample() if sample else dist.mean
        return latents * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (differentiable; feedback learning backpropagates)."""
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ac = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise


def load_adapter(model_dir, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SDAdapter:
    from hypersd.sampling import load_pipeline

    pipe = load_pipeline(model_dir, dtype=dtype)
    pipe.to(device)
    return SDAdapter(pipe)
