"""The tiny Stable-Diffusion-architecture model of the Shapes world, built from configs.

VAE: 32x32x3 <-> 8x8xC latents (downsampling factor 4). Text encoder: a small CLIPTextModel over
the offline Shapes tokenizer. UNet: UNet2DConditionModel on the latents with cross-attention.
All sizes live in `TinySDConfig` so that a recipe can change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypersd.models.tokenizer import MAX_LENGTH


@dataclass
class TinySDConfig:
    image_size: int = 32
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 32
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    unet_channels: tuple[int, ...] = (48, 96, 192)
    unet_layers_per_block: int = 1
    unet_head_dim: int = 32
    unet_norm_groups: int = 16
    unet_down_blocks: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    unet_up_blocks: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    extra: dict = field(default_factory=dict)


def build_vae(cfg: TinySDConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.image_size,
    )


def build_text_encoder(cfg: TinySDConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_hidden,
    )
    return CLIPTextModel(config)


def build_unet(cfg: TinySDConfig):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=cfg.unet_down_blocks,
        up_block_types=cfg.unet_up_blocks,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_head_dim,
        norm_num_groups=cfg.unet_norm_groups,
    )


def build_noise_scheduler():
    """The SD noise schedule: scaled-linear betas 0.00085..0.012, T = 1000, eps-prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_tokenizer_for(folder):
    """The offline Shapes CLIP tokenizer (files written into `folder`)."""
    from pathlib import Path

    from hypersd.models.tokenizer import build_tokenizer

    return build_tokenizer(Path(folder))


def build_tiny_sdxl(cfg: TinySDConfig, tokenizer, time_embed_dim: int = 8):
    """A random SDXL-architecture pipeline at the tiny model's sizes (tests and examples): two CLIP
    text encoders (the second with a projection, whose pooled output is `text_embeds`), a UNet with
    SDXL's "text_time" added conditioning and cross-attention over both encoders' states."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    text_1 = build_text_encoder(cfg, tokenizer)
    wider = replace(cfg, text_hidden=cfg.text_hidden + 16)  # the encoders differ in width, as in SDXL (768 / 1280)
    text_2 = CLIPTextModelWithProjection(build_text_encoder(wider, tokenizer).config)
    projection = text_2.config.projection_dim
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=cfg.unet_down_blocks, up_block_types=cfg.unet_up_blocks,
        block_out_channels=cfg.unet_channels, layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden + wider.text_hidden, attention_head_dim=cfg.unet_head_dim,
        norm_num_groups=cfg.unet_norm_groups, addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=projection + 6 * time_embed_dim,
    )
    scheduler = DDIMScheduler.from_config(build_noise_scheduler().config, set_alpha_to_one=False)
    return StableDiffusionXLPipeline(vae=build_vae(cfg), text_encoder=text_1, text_encoder_2=text_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
