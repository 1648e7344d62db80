"""Test helper: a diffusers SD1.x or SDXL pipeline written as one original-layout checkpoint (the
CompVis/LDM layout of SD1.x, Stability's SGM layout of SDXL), the format of single `.safetensors`
model files, so single-file loading can be checked against the folder it came from. Key names
follow the original repositories' modules (SDXL's second text encoder in OpenCLIP's layout)."""

from __future__ import annotations

import re

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str, table: dict) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_key(key: str, layers: int, up_attention: list[bool]) -> str:
    """A diffusers UNet key as the LDM UNet names it (layers = layers_per_block)."""
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in simple.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[2]), m[3], int(m[4]), m[5]
        # input level 0 is conv_in; an up block holds layers + 1 resnets (one per skip connection)
        name, index = ("input_blocks", 1 + (layers + 1) * block + j) if m[1] == "down" \
            else ("output_blocks", (layers + 1) * block + j)
        return f"{name}.{index}.0.{_rename_resnet(rest, RESNET)}" if kind == "resnets" else f"{name}.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(layers + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_resnet(m[2], RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        return f"output_blocks.{(layers + 1) * block + layers}.{2 if up_attention[block] else 1}.conv.{m[2]}"
    raise KeyError(key)


def vae_key(key: str, blocks: int) -> str:
    """A diffusers AutoencoderKL key as the LDM autoencoder names it."""
    if m := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        part, kind, i, j, rest = m[1], m[2], int(m[3]), m[4], m[5]
        i = i if kind == "down" else blocks - 1 - i  # the LDM decoder counts its levels from the bottom
        return f"{part}.{kind}.{i}.block.{j}.{_rename_resnet(rest, VAE_RESNET)}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_resnet(m[3], VAE_RESNET)}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
    if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def _unet_and_vae(pipe) -> dict[str, torch.Tensor]:
    unet_config = pipe.unet.config
    up_attention = ["CrossAttn" in name for name in unet_config.up_block_types]
    state = {f"model.diffusion_model.{unet_key(k, unet_config.layers_per_block, up_attention)}": v
             for k, v in pipe.unet.state_dict().items()}
    blocks = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        new = vae_key(key, blocks)
        if ".mid.attn_1." in new and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        state[f"first_stage_model.{new}"] = value
    return state


def _clip(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel keys under `prefix` + "text_model." (the OpenAI CLIP layout)."""
    return {f"{prefix}text_model.{key.removeprefix('text_model.')}": value
            for key, value in text_encoder.state_dict().items()}


def _open_clip(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in OpenCLIP's layout: fused q/k/v, resblocks, text_projection
    stored transposed."""
    renames = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "self_attn.out_proj": "attn.out_proj"}
    tops = {"embeddings.position_embedding.weight": "positional_embedding",
            "embeddings.token_embedding.weight": "token_embedding.weight",
            "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    weights = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    state = {prefix + "text_projection": weights.pop("text_projection.weight").T}
    for key, value in weights.items():
        if key in tops:
            state[prefix + tops[key]] = value
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)", key)
        block, module, kind = int(m[1]), m[2], m[3]
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            if module.endswith("q_proj"):  # q, k, v stacked into one in_proj
                parts = [weights[f"encoder.layers.{block}.self_attn.{x}_proj.{kind}"] for x in "qkv"]
                state[f"{prefix}transformer.resblocks.{block}.attn.in_proj_{kind}"] = torch.cat(parts)
            continue
        state[f"{prefix}transformer.resblocks.{block}.{renames[module]}.{kind}"] = value
    return state


def to_ldm_checkpoint(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder(s) as one state dict: LDM layout for SD1.x, SGM for SDXL."""
    state = _unet_and_vae(pipe)
    if getattr(pipe, "text_encoder_2", None) is None:
        state.update(_clip(pipe.text_encoder, "cond_stage_model.transformer."))
    else:
        state.update(_clip(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        state.update(_open_clip(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in state.items()}
