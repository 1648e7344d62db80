import json

import torch
from conftest import TINY
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from hypersd.embedded.pretrain import PretrainConfig, pretrain


def _tiny_config(**kw):
    return PretrainConfig(model=TINY, vae_steps=3, vae_batch=4, latent_pool=500, unet_steps=4,
                          unet_batch=4, unet_warmup=1, checkpoint_every=2, threads=1, device="cpu", **kw)


def test_pretrain_writes_a_plain_diffusers_pipeline_and_can_continue(tmp_path):
    first = tmp_path / "first"
    record = pretrain(_tiny_config(), first)
    assert record["vae_psnr_db"] > 0 and record["config"]["unet_steps"] == 4
    assert json.loads((first / "hypersd_pretrain.json").read_text())["config"]["seed"] == 0
    pipe = StableDiffusionPipeline.from_pretrained(first)
    assert pipe.scheduler.config.set_alpha_to_one is False
    scale = pipe.vae.config.scaling_factor
    assert scale > 0 and scale != 0.18215
    steps = [json.loads(x).get("step") for x in (tmp_path / "first.work" / "log.jsonl").read_text().splitlines()
             if json.loads(x)["phase"] == "checkpoint"]
    assert steps == [2, 4]

    second = tmp_path / "second"
    pretrain(_tiny_config(init=str(first), unet_stop_at=2), second)
    record = json.loads((second / "hypersd_pretrain.json").read_text())
    assert record["continued_from"]["config"]["init"] is None and record["config"]["unet_stop_at"] == 2
    steps = [json.loads(x).get("step") for x in (tmp_path / "second.work" / "log.jsonl").read_text().splitlines()
             if json.loads(x)["phase"] == "checkpoint"]
    assert steps == [2]
    again = StableDiffusionPipeline.from_pretrained(second)
    assert again.vae.config.scaling_factor == scale  # a continued model keeps its latent scale
    before = load_file(first / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(second / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(load_file(first / "vae" / "diffusion_pytorch_model.safetensors")["encoder.conv_in.weight"],
                       load_file(second / "vae" / "diffusion_pytorch_model.safetensors")["encoder.conv_in.weight"])
