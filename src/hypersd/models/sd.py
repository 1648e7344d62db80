"""One small interface over a diffusers text-to-image model, used unchanged by every training phase.

The methods are what distillation needs: encode captions, call the UNet as an epsilon predictor
(guided or not), switch which LoRA adapter is active (the teacher is the same UNet with the
adapters disabled), and move between images and scaled latents. `SDModel` serves SD1.x-style
pipelines (one CLIP text encoder); `SDXLModel` adds the second text encoder, the pooled
embedding and SDXL's size/crop conditioning (Podell et al. 2023, section 2.2) behind the same
methods, so TSCD, feedback learning and DMD run on either unchanged. Text encoding reuses the
pipeline's own `encode_prompt`. Models that predict v or x0 (SD2-768 style) are refused.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from hypersd.errors import UserError
from hypersd.models.pipelines import load_pipeline


@dataclass
class Conditioning:
    """Everything the UNet needs besides x_t and t, batched along dim 0."""

    hidden_states: torch.Tensor
    extra: dict | None = None  # SDXL: {"text_embeds": ..., "time_ids": ...}

    def cat(self, other: "Conditioning") -> "Conditioning":
        extra = None if self.extra is None else {k: torch.cat([v, other.extra[k]]) for k, v in self.extra.items()}
        return Conditioning(torch.cat([self.hidden_states, other.hidden_states]), extra)

    def where(self, mask: torch.Tensor, other: "Conditioning") -> "Conditioning":
        """Per sample: `other`'s conditioning where `mask` (a (batch,) bool tensor) is True, else this one's."""
        def pick(mine, theirs):
            return torch.where(mask.view(-1, *([1] * (mine.ndim - 1))), theirs, mine)

        extra = None if self.extra is None else {k: pick(v, other.extra[k]) for k, v in self.extra.items()}
        return Conditioning(pick(self.hidden_states, other.hidden_states), extra)

    def index(self, idx) -> "Conditioning":
        extra = None if self.extra is None else {k: v[idx] for k, v in self.extra.items()}
        return Conditioning(self.hidden_states[idx], extra)


class SDModel:
    """Stable Diffusion 1.x-style model: one CLIP text encoder, epsilon prediction."""

    text_encoders = ("text_encoder",)

    def __init__(self, pipe):
        prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise UserError(f"the model predicts {prediction!r}; only epsilon-prediction models are supported")
        self.pipe = pipe
        self.unet, self.vae = pipe.unet, pipe.vae
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        # the training forward process x_t = alpha_t x0 + sigma_t eps: DDPM's add_noise on the model's own
        # betas (a pipeline's sampler may be Euler-style, whose add_noise scales by sigma instead)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.clone().float()
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        self._uncond_cache: dict = {}

    def with_unet(self, unet) -> "SDModel":
        """The same model (text encoder, VAE, schedule, pipeline) calling another UNet: a full-UNet student."""
        other = copy.copy(self)
        other.unet = unet
        return other

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def image_size(self) -> int:
        """The side the model was trained at (pixels): UNet sample size times the VAE factor."""
        return int(self.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    def freeze_base(self) -> None:
        for module in (self.unet, self.vae, *(getattr(self.pipe, name) for name in self.text_encoders)):
            module.requires_grad_(False)
            module.eval()

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], time_ids: torch.Tensor | None = None) -> Conditioning:
        """Caption conditioning; `time_ids` (SDXL's size conditioning) is ignored by SD1.x models."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return Conditioning(self.text_encoder(ids)[0])

    def _empty_prompt(self) -> Conditioning:
        if "" not in self._uncond_cache:
            self._uncond_cache[""] = self.encode_prompts([""])
        return self._uncond_cache[""]

    def unconditional(self, cond: Conditioning | int) -> Conditioning:
        """The empty prompt's conditioning, batched like `cond` (or for `cond` images)."""
        batch = cond if isinstance(cond, int) else len(cond.hidden_states)
        return Conditioning(self._empty_prompt().hidden_states.expand(batch, -1, -1))

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
    def using_lora(self, name: str | list[str] | None):
        """Run with LoRA adapter(s) `name` active, or with every adapter disabled (None: the base)."""
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
        """x_t = alpha_t x0 + sigma_t noise (diffusers' DDPM add_noise), computed in fp32 whatever the
        latents' dtype, as the rest of the method's maths is."""
        return self.noise_scheduler.add_noise(x0.float(), noise.float(), t)


class SDXLModel(SDModel):
    """SDXL: two text encoders (penultimate hidden states concatenated), the second one's pooled
    projection as `text_embeds`, and six size numbers per image as `time_ids`: original height and
    width, crop top and left, target height and width (pixels)."""

    text_encoders = ("text_encoder", "text_encoder_2")

    def default_time_ids(self, batch: int) -> torch.Tensor:
        """Uncropped images at the model's own size (what the pipeline uses by default)."""
        side = self.image_size
        return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32).expand(batch, -1)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], time_ids: torch.Tensor | None = None) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), device=self.device,
                                                       num_images_per_prompt=1, do_classifier_free_guidance=False)
        if time_ids is None:
            time_ids = self.default_time_ids(len(prompts))
        if time_ids.shape != (len(prompts), 6):
            raise ValueError(f"time_ids must have shape ({len(prompts)}, 6), got {tuple(time_ids.shape)}")
        return Conditioning(embeds, {"text_embeds": pooled, "time_ids": time_ids.to(self.device, embeds.dtype)})

    @torch.no_grad()
    def _empty_prompt(self) -> Conditioning:
        """The pipeline's own negative conditioning without a negative prompt (zeros where the model
        forces them for an empty prompt)."""
        if "" not in self._uncond_cache:
            _, negative, _, negative_pooled = self.pipe.encode_prompt(
                prompt=[""], device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True)
            self._uncond_cache[""] = Conditioning(negative, {"text_embeds": negative_pooled})
        return self._uncond_cache[""]

    def unconditional(self, cond: Conditioning | int) -> Conditioning:
        """The empty prompt batched like `cond`, with `cond`'s own size conditioning (as the pipeline
        does when no negative sizes are given)."""
        time_ids = self.default_time_ids(cond) if isinstance(cond, int) else cond.extra["time_ids"]
        batch, empty = len(time_ids), self._empty_prompt()
        return Conditioning(empty.hidden_states.expand(batch, -1, -1),
                            {"text_embeds": empty.extra["text_embeds"].expand(batch, -1),
                             "time_ids": time_ids.to(self.device, empty.hidden_states.dtype)})


def wrap_pipeline(pipe) -> SDModel:
    """The model interface of a loaded pipeline: SDXL if it has a second text encoder, else SD1.x."""
    return SDXLModel(pipe) if getattr(pipe, "text_encoder_2", None) is not None else SDModel(pipe)


def load_model(model_dir, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SDModel:
    """Load a pipeline (hypersd.models.pipelines.load_pipeline) onto `device` and wrap it."""
    pipe = load_pipeline(model_dir, dtype=dtype)
    pipe.to(device)
    return wrap_pipeline(pipe)
