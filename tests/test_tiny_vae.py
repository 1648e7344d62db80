"""The tiny VAE (hypersd.models.tiny_vae, `hypersd tiny-vae train`, `generate --tiny-vae`): its shape fits the
model's VAE, distillation lowers the decoder's error, pipelines decode with it, bad folders are refused."""

import json
import sys

import numpy as np
import pytest
import torch

from hypersd.cli import main
from hypersd.errors import UserError
from hypersd.inference.sample import generate
from hypersd.inference.settings import SampleSettings
from hypersd.models.pipelines import load_pipeline
from hypersd.models.tiny_vae import (
    TinyVaeConfig,
    build_tiny_vae,
    decoder_psnr,
    save_tiny_vae,
    teacher_pool,
    tiny_vae_loss,
    train_tiny_vae,
    with_tiny_vae,
)
from hypersd.shapes.batches import ShapesStream

CFG = TinyVaeConfig(channels=8, steps=80, batch_size=16, pool=64, learning_rate=3e-3)


@pytest.fixture(scope="module")
def trained(tiny_pipeline_dir, tmp_path_factory):
    pipe = load_pipeline(tiny_pipeline_dir)
    size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    images = ShapesStream(0, canvas=size).batch(CFG.pool)[0]
    tiny = train_tiny_vae(pipe.vae, images, CFG)
    folder = save_tiny_vae(tiny, tmp_path_factory.mktemp("tv") / "tiny-vae", CFG, {"test": True})
    return pipe, images, tiny, folder


def test_tiny_vae_has_the_vaes_latent_shape_and_scale(tiny_pipeline_dir):
    vae = load_pipeline(tiny_pipeline_dir).vae
    tiny = build_tiny_vae(vae.config, CFG)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = vae.encode(x).latent_dist.mean
    assert tiny.encode(x).latents.shape == z.shape
    assert tiny.decode(z).sample.shape == x.shape
    assert tiny.config.scaling_factor == vae.config.scaling_factor
    with pytest.raises(UserError, match="one entry per resolution level"):
        build_tiny_vae(vae.config, TinyVaeConfig(blocks=(1, 1)))


def test_distillation_lowers_the_decoder_error(trained):
    pipe, images, tiny, _ = trained
    pool = teacher_pool(pipe.vae, images[:32], CFG, torch.Generator().manual_seed(5))
    fresh = build_tiny_vae(pipe.vae.config, CFG)
    with torch.no_grad():
        _, before = tiny_vae_loss(fresh, pool, "mse")
        _, after = tiny_vae_loss(tiny, pool, "mse")
    assert after["decoder"] < 0.5 * before["decoder"] and after["encoder"] < before["encoder"]
    latents = pool[2]
    assert decoder_psnr(tiny, pipe.vae, latents) > decoder_psnr(fresh, pipe.vae, latents) + 3


def test_pipeline_decodes_with_the_tiny_vae(trained):
    pipe, _, _, folder = trained
    fast = with_tiny_vae(pipe, folder)
    assert fast.vae is not pipe.vae and fast.unet is pipe.unet and fast.vae_scale_factor == pipe.vae_scale_factor
    settings = SampleSettings(steps=1, scheduler="lcm", timesteps=[800])
    a, b = generate(pipe, ["a red circle"], settings, [0]), generate(fast, ["a red circle"], settings, [0])
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert json.loads((folder / "hypersd_tiny_vae.json").read_text())["config"]["channels"] == CFG.channels


def test_bad_tiny_vae_folders_are_refused(trained, tmp_path):
    pipe = trained[0]
    with pytest.raises(UserError, match="tiny VAE not found"):
        with_tiny_vae(pipe, tmp_path / "absent")
    from diffusers import AutoencoderTiny

    AutoencoderTiny(latent_channels=8, encoder_block_out_channels=(8,) * 3, decoder_block_out_channels=(8,) * 3,
                    num_encoder_blocks=(1,) * 3, num_decoder_blocks=(1,) * 3).save_pretrained(tmp_path / "eight")
    with pytest.raises(UserError, match="latent channels"):
        with_tiny_vae(pipe, tmp_path / "eight")


def test_generate_with_tiny_vae(trained, tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    _, _, _, folder = trained
    monkeypatch.setattr(sys, "argv", ["hypersd", "generate", "a red circle", "--base", str(tiny_pipeline_dir),
                                      "--steps", "1", "--tiny-vae", str(folder), "--out", str(tmp_path / "g")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "g" / "samples.jsonl").read_text().splitlines()[0])
    assert record["tiny_vae"] == str(folder)


def test_generated_latents_join_the_decoders_pool_only(tiny_pipeline_dir):
    vae = load_pipeline(tiny_pipeline_dir).vae
    images = ShapesStream(1, canvas=32).batch(6)[0]
    generated = torch.randn(4, 4, 8, 8)
    cfg = TinyVaeConfig(noise_share=0.0)
    imgs, means, latents, decodes = teacher_pool(vae, images, cfg, torch.Generator().manual_seed(0), generated=generated)
    assert len(imgs) == len(means) == 6 and len(latents) == len(decodes) == 10
    assert torch.equal(latents[6:], generated)  # no noise share: the generated latents as given
    with torch.no_grad():
        torch.testing.assert_close(decodes[6:], vae.decode(generated).sample.clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_cli_trains_with_generated_latents(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    from hypersd.data.pairs import sample_pairs, save_pairs

    pipe = load_pipeline(tiny_pipeline_dir)
    pairs = save_pairs(tmp_path / "p.safetensors", sample_pairs(pipe, ["a red circle"] * 2, 2, 3.0, 0))
    monkeypatch.setattr(sys, "argv", ["hypersd", "tiny-vae", "train", "--model", str(tiny_pipeline_dir), "--steps", "2",
                                      "--pool", "64", "--channels", "4", "--latents", str(pairs),
                                      "--out", str(tmp_path / "tv")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "tv" / "hypersd_tiny_vae.json").read_text())
    assert record["generated_latents"] == str(pairs) and len(record["log"]) == 2


def test_generate_latents_are_what_generate_decodes(tiny_pipeline_dir):
    from hypersd.inference.sample import generate_latents

    pipe = load_pipeline(tiny_pipeline_dir)
    settings = SampleSettings(steps=1, scheduler="lcm", timesteps=[800], guidance=0.0)
    prompts, seeds = ["a red circle", "two blue squares"], [3, 4]
    latents = generate_latents(pipe, prompts, settings, seeds)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    with torch.no_grad():
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    mine = ((decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    theirs = generate(pipe, prompts, settings, seeds).astype(np.float64)
    assert np.abs(mine - theirs).max() <= 1  # the same images, up to rounding
    assert not torch.allclose(latents[0], generate_latents(pipe, prompts[:1], settings, [5])[0])  # seeds count


def test_l1_decoder_loss_is_the_mean_absolute_error():
    tiny = build_tiny_vae(type("C", (), {"block_out_channels": (8, 8, 8), "latent_channels": 4,
                                         "scaling_factor": 1.0})(), CFG)
    gen = torch.Generator().manual_seed(0)
    batch = [torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1, torch.randn(2, 4, 8, 8, generator=gen),
             torch.randn(2, 4, 8, 8, generator=gen), torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1]
    with torch.no_grad():
        out = tiny.decode(batch[2]).sample
        _, l1 = tiny_vae_loss(tiny, batch, "l1")
        _, mse = tiny_vae_loss(tiny, batch, "mse")
    assert l1["decoder"] == pytest.approx((out - batch[3]).abs().mean().item(), rel=1e-5)
    assert mse["decoder"] == pytest.approx((out - batch[3]).square().mean().item(), rel=1e-5)
    with pytest.raises(UserError, match="decoder_loss"):
        TinyVaeConfig(decoder_loss="l2").validate()
    with pytest.raises(UserError, match="upsample"):
        TinyVaeConfig(upsample="cubic").validate()


def test_cli_trains_on_a_one_step_models_latents(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    from hypersd.inference.unet_file import export_unet

    unet = export_unet(tiny_pipeline_dir, tmp_path / "tiny-1step-unet.safetensors", "fp32")
    monkeypatch.setattr(sys, "argv", ["hypersd", "tiny-vae", "train", "--model", str(tiny_pipeline_dir), "--steps", "2",
                                      "--pool", "64", "--channels", "4", "--blocks", "1,1,0", "--decoder-loss", "mse",
                                      "--one-step-model", str(unet), "--model-latents", "3",
                                      "--out", str(tmp_path / "tv")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "tv" / "hypersd_tiny_vae.json").read_text())
    assert record["one_step_model"] == str(unet) and record["model_latents"] == 3
    assert isinstance(record["held_out_model_psnr_db"], float)
    assert record["config"]["blocks"] == [1, 1, 0] and record["config"]["decoder_loss"] == "mse"


@pytest.mark.parametrize("extra, message", [(["--blocks", "2,x,1"], "--blocks must be whole numbers"),
                                            (["--one-step-model", "absent.safetensors"], "one-step model not found"),
                                            (["--decoder-loss", "l3"], "decoder_loss must be one of")])
def test_cli_refuses_bad_tiny_vae_options(tiny_pipeline_dir, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(sys, "argv", ["hypersd", "tiny-vae", "train", "--model", str(tiny_pipeline_dir), "--steps", "1",
                                      "--out", str(tmp_path / "tv"), *extra])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "tv").exists()


def test_cli_trains_on_a_one_step_lora_s_latents(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """A LoRA goes into the pipeline once: its training latents and its held-out latents come from one sampler."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = load_pipeline(tiny_pipeline_dir).unet
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    unet.add_adapter(config, adapter_name="made")
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="made"),
                                              unet_lora_adapter_metadata=config.to_dict())
    lora = tmp_path / "pytorch_lora_weights.safetensors"
    monkeypatch.setattr(sys, "argv", ["hypersd", "tiny-vae", "train", "--model", str(tiny_pipeline_dir), "--steps", "2",
                                      "--pool", "64", "--channels", "4", "--one-step-model", str(lora),
                                      "--model-latents", "2", "--out", str(tmp_path / "tv")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "tv" / "hypersd_tiny_vae.json").read_text())
    assert record["one_step_model"] == str(lora) and isinstance(record["held_out_model_psnr_db"], float)
