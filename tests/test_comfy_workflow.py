"""ComfyUI workflow files beside exported LoRAs (issue 16): their structure pinned here (the node and
input names were checked against ComfyUI 0.3.64's node definitions by bench/comfy_check.py)."""

import json
import sys

import pytest

from hypersd.errors import UserError
from hypersd.lora.comfy_workflow import COMFYUI_CHECKED, workflow_for

NODES = {"1": "CheckpointLoaderSimple", "2": "LoraLoaderModelOnly", "3": "CLIPTextEncode", "4": "CLIPTextEncode",
         "5": "EmptyLatentImage", "6": "KSampler", "7": "VAEDecode", "8": "SaveImage"}
INPUTS = {"CheckpointLoaderSimple": {"ckpt_name"}, "LoraLoaderModelOnly": {"model", "lora_name", "strength_model"},
          "CLIPTextEncode": {"text", "clip"}, "EmptyLatentImage": {"width", "height", "batch_size"},
          "KSampler": {"model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                       "latent_image", "denoise"}, "VAEDecode": {"samples", "vae"},
          "SaveImage": {"images", "filename_prefix"}}
OUTPUTS = {"CheckpointLoaderSimple": 3, "LoraLoaderModelOnly": 1, "CLIPTextEncode": 1, "EmptyLatentImage": 1,
           "KSampler": 1, "VAEDecode": 1}


def _check_graph(graph):
    assert {k: v["class_type"] for k, v in graph.items()} == NODES
    for node in graph.values():
        assert set(node["inputs"]) == INPUTS[node["class_type"]]
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [node id, output index] to an existing node's output
                assert value[0] in graph and 0 <= value[1] < OUTPUTS[graph[value[0]]["class_type"]]


def test_n_step_and_cfg_preserved_loras_sample_with_ddim_sgm_uniform():
    folded = workflow_for({"scheduler": "ddim-trailing", "steps": 8, "guidance": 0.0}, "sd1", "hyper-8.safetensors")
    _check_graph(folded)
    k = folded["6"]["inputs"]
    assert (k["sampler_name"], k["scheduler"], k["steps"], k["cfg"]) == ("ddim", "sgm_uniform", 8, 1.0)
    assert folded["2"]["inputs"]["lora_name"] == "hyper-8.safetensors"
    assert folded["5"]["inputs"]["width"] == 512
    cfg = workflow_for({"scheduler": "ddim-trailing", "steps": 12, "guidance": 6.0}, "sdxl", "cfg.safetensors",
                       negative="blurry")
    assert (cfg["6"]["inputs"]["steps"], cfg["6"]["inputs"]["cfg"]) == (12, 6.0)
    assert cfg["5"]["inputs"]["width"] == 1024 and cfg["4"]["inputs"]["text"] == "blurry"
    assert cfg["1"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"


def test_unified_lora_samples_with_tcd_at_eta_one():
    graph = workflow_for({"scheduler": "tcd", "steps": 4, "guidance": 0.0, "eta": 0.3}, "sd1", "u.safetensors")
    _check_graph(graph)
    assert graph["6"]["inputs"]["sampler_name"] == "lcm" and "eta 1" in graph["6"]["_meta"]["title"]
    tabled = workflow_for({"scheduler": "tcd", "steps": 4, "eta": 0.3, "step_timesteps": {"1": [700]}}, "sd1", "u")
    assert "1 steps [700] need a custom scheduler node" in tabled["6"]["_meta"]["title"]


def test_models_core_comfyui_cannot_sample_are_refused():
    with pytest.raises(UserError, match="custom timesteps"):
        workflow_for({"scheduler": "lcm", "steps": 1, "timesteps": [800]}, "sd1", "one.safetensors")
    with pytest.raises(UserError, match="no ComfyUI workflow for scheduler"):
        workflow_for({"scheduler": "euler", "steps": 4}, "sd1", "e.safetensors")
    assert COMFYUI_CHECKED == "0.3.64"


def test_export_writes_the_workflow_beside_the_file(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    import torch
    from diffusers import UNet2DConditionModel

    from hypersd.cli import main
    from hypersd.lora.adapters import STUDENT, add_lora
    from hypersd.lora.files import save_lora

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    add_lora(unet, 2, 2, ["to_q", "to_v"], name=STUDENT)
    lora = save_lora(tmp_path / "l.safetensors", unet, STUDENT,
                     inference={"scheduler": "ddim-trailing", "steps": 8, "guidance": 5.0})
    monkeypatch.setattr(sys, "argv", ["hypersd", "lora", "export", str(lora), "--out", str(tmp_path / "k.safetensors"),
                                      "--workflow"])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    graph = json.loads((tmp_path / "k.workflow.json").read_text())
    _check_graph(graph)
    assert graph["6"]["inputs"]["cfg"] == 5.0 and graph["2"]["inputs"]["lora_name"] == "k.safetensors"
