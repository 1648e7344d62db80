"""ImageReward (Xu et al. 2023) as a differentiable reward, built from transformers' BLIP parts.

The released model is BLIP: a ViT image encoder whose tokens the BERT text encoder cross-attends
to; the text encoder's first token goes through an MLP 768-1024-128-64-16-1, and the score is
standardised with the training set's mean and std. Hyper-SD uses it as a reward of eq. 13.

Weights come from disk only. The released `ImageReward.pt` is a pickle in BLIP's own naming:
`hypersd rewards convert-image-reward ImageReward.pt --tokenizer BERT_DIR --out FOLDER --allow-pickle`
maps its keys onto this module, reads the architecture off the tensor shapes, and writes FOLDER with
`config.json`, `image_reward.safetensors` and the BERT tokenizer ([ENC]/[DEC] tokens added, as BLIP).
The numbers were checked here only against random weights of the right architecture (no released
weights can be had on this machine).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn

from hypersd.errors import UserError, require
from hypersd.io import atomic_dir, require_finite
from hypersd.rewards.base import RewardModel
from hypersd.rewards.laion_aesthetic import AestheticHead, clip_preprocess

WEIGHTS, CONFIG = "image_reward.safetensors", "config.json"
SCORE_MEAN, SCORE_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward's standardisation
MAX_LENGTH = 35


class ImageRewardNet(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        from transformers import BlipTextConfig, BlipVisionConfig
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.config = config
        self.vision = BlipVisionModel(BlipVisionConfig(**config["vision"]))
        self.text = BlipTextModel(BlipTextConfig(**config["text"]), add_pooling_layer=False)
        self.head = AestheticHead(config["text"]["hidden_size"])

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_mask).last_hidden_state
        raw = self.head(text[:, 0].float())[:, 0]
        return (raw - self.config.get("mean", SCORE_MEAN)) / self.config.get("std", SCORE_STD)


class ImageReward(RewardModel):
    name = "image-reward"

    def __init__(self, folder: Path):
        super().__init__()
        from safetensors.torch import load_file
        from transformers import BertTokenizer

        folder = Path(folder)
        require((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file(),
                f"ImageReward folder incomplete (needs {CONFIG} and {WEIGHTS}; convert the released "
                f"ImageReward.pt with `hypersd rewards convert-image-reward`): {folder}")
        config = json.loads((folder / CONFIG).read_text())
        self.net = ImageRewardNet(config)
        self.net.load_state_dict(load_file(str(folder / WEIGHTS)))
        try:
            self.tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the BERT tokenizer in {folder}: {str(exc).splitlines()[0]}") from None
        self.size = config["vision"]["image_size"]
        self.freeze()

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                return_tensors="pt").to(images.device)
        pixels = clip_preprocess(images, self.size).to(next(self.net.parameters()).dtype)
        return self.net(pixels, tokens.input_ids, tokens.attention_mask)


# ---------------------------------------------------------------------- conversion of the release
_VISION_RULES = [  # BLIP's timm-style ViT -> transformers' BlipVisionModel
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def _rename(key: str, rules) -> str | None:
    for pattern, replacement in rules:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_release_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Released ImageReward state dict (BLIP naming) -> (this module's state dict, its config)."""
    out = {}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            name = _rename(key[len("blip.visual_encoder."):], _VISION_RULES)
            if name is not None:
                out[f"vision.{name}"] = value
        elif key.startswith("blip.text_encoder.") and "position_ids" not in key and ".pooler." not in key:
            out[f"text.{key[len('blip.text_encoder.'):]}"] = value
        elif key.startswith("mlp.layers."):
            out[f"head.{key[len('mlp.'):]}"] = value
    if "vision.embeddings.class_embedding" not in out or "text.embeddings.word_embeddings.weight" not in out:
        raise UserError("not an ImageReward checkpoint (no blip.visual_encoder / blip.text_encoder tensors)")
    return out, _config_from_shapes(out)


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state for m in [re.match(pattern, k)] if m})


def _config_from_shapes(state: dict) -> dict:
    hidden = state["vision.embeddings.class_embedding"].shape[-1]
    patch = state["vision.embeddings.patch_embedding.weight"].shape[-1]
    tokens = state["vision.embeddings.position_embedding"].shape[1] - 1
    text_hidden = state["text.embeddings.word_embeddings.weight"].shape[1]
    return {
        "vision": {"hidden_size": hidden, "intermediate_size": state["vision.encoder.layers.0.mlp.fc1.weight"].shape[0],
                   "num_hidden_layers": _count(state, r"vision\.encoder\.layers\.(\d+)\."),
                   "num_attention_heads": max(1, hidden // 64), "patch_size": patch,
                   "image_size": int(round(tokens ** 0.5)) * patch, "layer_norm_eps": 1e-6},
        "text": {"vocab_size": state["text.embeddings.word_embeddings.weight"].shape[0], "hidden_size": text_hidden,
                 "encoder_hidden_size": state["text.encoder.layer.0.crossattention.self.key.weight"].shape[1],
                 "intermediate_size": state["text.encoder.layer.0.intermediate.dense.weight"].shape[0],
                 "num_hidden_layers": _count(state, r"text\.encoder\.layer\.(\d+)\."),
                 "num_attention_heads": max(1, text_hidden // 64),
                 "max_position_embeddings": state["text.embeddings.position_embeddings.weight"].shape[0],
                 "layer_norm_eps": 1e-12},
        "mean": SCORE_MEAN, "std": SCORE_STD,
    }


def convert_release(source: Path, tokenizer_dir: Path, out: Path, allow_pickle: bool, overwrite: bool = False) -> Path:
    """Write an ImageReward folder from the released pickle checkpoint and a BERT tokenizer folder."""
    from safetensors.torch import save_file
    from transformers import BertTokenizer

    source, out = Path(source), Path(out)
    require(source.is_file(), f"checkpoint not found: {source}")
    if not allow_pickle and source.suffix != ".safetensors":
        raise UserError(f"{source} is a pickle file; pass --allow-pickle if you trust it")
    try:
        if source.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(source))
        else:
            state = torch.load(source, map_location="cpu", weights_only=True)
        tokenizer = BertTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for any unreadable input
        raise UserError(f"cannot read the checkpoint or tokenizer: {str(exc).splitlines()[0]}") from None
    converted, config = convert_release_state(state.get("state_dict", state) if isinstance(state, dict) else {})
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    require(len(tokenizer) == config["text"]["vocab_size"],
            f"the tokenizer has {len(tokenizer)} tokens with [DEC]/[ENC], the checkpoint's text encoder "
            f"{config['text']['vocab_size']}: not the BERT vocabulary ImageReward was trained with")
    try:
        ImageRewardNet(config).load_state_dict(converted)  # refuses a mismatched architecture before writing
    except RuntimeError as exc:
        raise UserError(f"checkpoint does not fit the ImageReward architecture: {str(exc).splitlines()[0]}") from None
    with atomic_dir(out, overwrite) as tmp:
        require_finite(converted, f"ImageReward weights {out}")
        save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(tmp)
    return out
