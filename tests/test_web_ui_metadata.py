"""kohya / ModelSpec metadata of exported LoRAs (issue 16): what A1111, Forge and ComfyUI's model
browsers read to list a LoRA under its base model."""

import pytest
import torch

from hypersd.lora.adapters import STUDENT, add_lora
from hypersd.lora.export import base_model_of, export_kohya
from hypersd.lora.files import BASE_MODEL_KEY, read_metadata, save_lora


def _export(unet_dir, tmp_path, name, base="auto"):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(unet_dir / "unet")
    add_lora(unet, 4, 2, ["to_q", "to_k", "to_v"], name=STUDENT)
    native = save_lora(tmp_path / f"{name}.safetensors", unet, STUDENT, inference={"steps": 8})
    return native, read_metadata(export_kohya(native, tmp_path / f"{name}-kohya.safetensors", base))


def test_sd15_export_is_listed_as_sd1(tiny_pipeline_dir, tmp_path):
    native, meta = _export(tiny_pipeline_dir, tmp_path, "sd15")
    assert read_metadata(native)[BASE_MODEL_KEY] == "sd1"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["modelspec.sai_model_spec"] == "1.0.0" and meta["modelspec.title"] == "sd15-kohya"
    assert meta["hypersd_inference"] == '{"steps": 8}'  # our own settings travel along


def test_sdxl_export_is_listed_as_sdxl(tiny_sdxl_dir, tmp_path):
    native, meta = _export(tiny_sdxl_dir, tmp_path, "xl")
    assert read_metadata(native)[BASE_MODEL_KEY] == "sdxl"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.resolution"] == "1024x1024"
    assert _export(tiny_sdxl_dir, tmp_path, "forced", base="sd1")[1]["ss_base_model_version"] == "sd_v1"


def test_a_file_without_its_record_is_read_from_the_cross_attention_width():
    def adapter(width):
        return {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(4, width)}

    assert base_model_of(adapter(2048), {}) == "sdxl"
    assert base_model_of(adapter(768), {}) == "sd1"
    assert base_model_of(adapter(768), {BASE_MODEL_KEY: "sdxl"}) == "sdxl"


def test_an_unknown_base_is_refused():
    from hypersd.errors import UserError

    with pytest.raises(UserError, match="base model must be auto, sd1 or sdxl"):
        export_kohya("x.safetensors", "y.safetensors", "sd3")
