"""Latent discriminator on the frozen UNet encoder (SDXL-Lightning, Lin et al. 2024, sec. 3.3;
used by Hyper-SD's hybrid TSCD distance, Ren et al. 2024, sec. 3.1).

The UNet's own encoder (time embedding, conv_in, down blocks, mid block) with every adapter
disabled reads a noised latent at its timestep with the caption; small trainable heads turn the
feature map of each level into a logit, plus a projection term (pooled features . W pooled text)
that makes the judgement caption-conditioned. Only the heads are trained; gradients flow through
the frozen encoder into the generator's prediction.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def unet_encoder_features(unet, x: torch.Tensor, t: torch.Tensor, cond) -> list[torch.Tensor]:
    """Feature maps after each down block and after the mid block (same maths as UNet.forward)."""
    t = t.clamp_min(0)
    emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=cond.hidden_states, added_cond_kwargs=cond.extra or {})
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    h, feats = unet.conv_in(x), []
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=cond.hidden_states)
        else:
            h, _ = block(hidden_states=h, temb=emb)
        feats.append(h)
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb, encoder_hidden_states=cond.hidden_states)
        feats.append(h)
    return feats


class Head(nn.Module):
    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        groups = 8 if channels % 8 == 0 else 1
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 1))
        self.logit = nn.Linear(channels, 1)
        self.project = nn.Linear(text_dim, channels, bias=False)

    def forward(self, feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pooled = self.body(feat).mean(dim=(2, 3))
        return self.logit(pooled).squeeze(1) + (pooled * self.project(text)).sum(1) / pooled.shape[1] ** 0.5


class LatentDiscriminator(nn.Module):
    """Trainable heads; the encoder is the model's UNet with its LoRA adapters disabled, or with
    adapter `adapter` active: DMD2's classifier reads the fake score's encoder (Yin et al. 2024b,
    sec. 4.3), so the GAN needs no second UNet."""

    def __init__(self, unet, adapter: str | None = None):
        super().__init__()
        self.adapter = adapter
        channels = list(unet.config.block_out_channels)
        levels = channels + ([channels[-1]] if unet.mid_block is not None else [])
        text_dim = unet.config.cross_attention_dim
        self.heads = nn.ModuleList(Head(c, text_dim) for c in levels)

    def forward(self, model, x: torch.Tensor, t: torch.Tensor, cond, features=None) -> torch.Tensor:
        """One logit per sample (mean over levels); pass `features` to reuse an encoder pass."""
        if features is None:
            features = self.features(model, x, t, cond)
        text = cond.hidden_states.mean(1)
        return torch.stack([head(f, text) for head, f in zip(self.heads, features)]).mean(0)

    def features(self, model, x, t, cond) -> list[torch.Tensor]:
        """The encoder's feature maps with the head's adapter(s) active. Computed without gradient
        checkpointing: backward runs after the caller has switched the adapters back, and a
        checkpointed block would recompute its forward with the wrong ones."""
        with model.using_lora(self.adapter), without_checkpointing(model.unet):
            return unet_encoder_features(model.unet, x, t, cond)


@contextlib.contextmanager
def without_checkpointing(module: nn.Module):
    """Turn off diffusers' per-block gradient checkpointing inside the block (restored after)."""
    flagged = [m for m in module.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for m in flagged:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in flagged:
            m.gradient_checkpointing = True
