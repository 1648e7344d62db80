"""SDXL through the same training code: the adapter conditions the UNet exactly as diffusers'
StableDiffusionXLPipeline does, size/crop conditioning reaches the UNet, every phase trains on a
tiny random SDXL, and its LoRA exports in both layouts and samples identically in plain diffusers."""

import json
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline, TCDScheduler

from hypersd.core.solver import predict_x0
from hypersd.models.sd import SDXLModel, load_model
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir):
    return load_model(tiny_sdxl_dir)


def test_sdxl_is_detected_and_encodes_pooled_and_size_conditions(sdxl):
    assert isinstance(sdxl, SDXLModel)
    cond = sdxl.encode_prompts(["a red circle", "two blue squares"])
    hidden = sdxl.pipe.text_encoder.config.hidden_size + sdxl.pipe.text_encoder_2.config.hidden_size
    assert cond.hidden_states.shape == (2, sdxl.tokenizer.model_max_length, hidden)
    assert cond.extra["text_embeds"].shape == (2, sdxl.pipe.text_encoder_2.config.projection_dim)
    assert cond.extra["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    uncond = sdxl.unconditional(cond)
    assert uncond.hidden_states.abs().sum() == 0 and uncond.extra["text_embeds"].abs().sum() == 0  # forced zeros
    assert torch.equal(uncond.extra["time_ids"], cond.extra["time_ids"])


def test_guided_eps_equals_the_sdxl_pipeline(sdxl):
    """One trailing DDIM step of the pipeline (CFG 5) = x0 from the adapter's guided eps, re-noised."""
    from diffusers import DDIMScheduler

    pipe = sdxl.pipe
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    latents = pipe(["a red circle"], num_inference_steps=1, guidance_scale=5.0, output_type="latent",
                   generator=torch.Generator().manual_seed(3)).images
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    cond = sdxl.encode_prompts(["a red circle"])
    t = torch.tensor([999])
    eps = sdxl.guided_eps(noise, t, cond, sdxl.unconditional(cond), torch.tensor([5.0]))
    a0 = sdxl.alphas_cumprod[0]
    expected = a0.sqrt() * predict_x0(noise, eps, t, sdxl.alphas_cumprod) + (1 - a0).sqrt() * eps
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-5)


def test_crop_conditioning_reaches_the_unet(sdxl):
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    plain = sdxl.eps(x, t, sdxl.encode_prompts(["a red circle"]))
    cropped = sdxl.eps(x, t, sdxl.encode_prompts(["a red circle"], time_ids=torch.tensor([[64., 48, 16, 0, 32, 32]])))
    assert not torch.allclose(plain, cropped, atol=1e-5)
    with pytest.raises(ValueError, match="time_ids"):
        sdxl.encode_prompts(["a", "b"], time_ids=torch.zeros(1, 6))


def _recipe(tmp_path, segmenter_dir, *overrides):
    feedback = ("{rewards: [shapes-clean], reward_alpha: [9.0], perceptual_weight: 1.0, pretrain_weight: 0.5, "
                f"segmenter: '{segmenter_dir}', sampling_steps: 2, rank: 2, merge_ratio: 0.5, batch_size: 2}}")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: tiny-sdxl-hyper\nstages:\n"
        "  - {segments: 2, iterations: 2, learning_rate: 1.0e-3}\n"
        f"  - {{method: feedback, iterations: 2, learning_rate: 1.0e-3, feedback: {feedback}}}\n"
        f"  - {{method: dmd, segments: 1, iterations: 2, learning_rate: 1.0e-3, feedback: {feedback}, "
        "dmd: {with_feedback: true, fake_rank: 2, fake_updates: 1, batch_size: 1}}\n"
        "lora: {rank: 2, alpha: 4, targets: [to_q, to_v, conv1]}\ndata: {pool_size: 8}\nsamples: {prompts: 2}\n")
    return load_recipe(path, ["training.batch_size=2", "training.checkpoint_every=1", *overrides])


@pytest.fixture(scope="module")
def sdxl_run(tiny_sdxl_dir, segmenter_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl-run")
    metrics = Run(_recipe(out, segmenter_dir), tiny_sdxl_dir, out / "run").train()
    return out / "run", metrics


def test_every_phase_trains_on_sdxl(sdxl_run):
    run, metrics = sdxl_run
    assert set(metrics["stages"]) == {"k2", "feedback", "unified"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for stage in ("k2", "feedback", "unified"):
        losses = [r["loss"] for r in log if r.get("stage") == stage and "loss" in r]
        assert losses and all(np.isfinite(losses))
    for name in ("tscd-k2", "feedback-merged", "dmd-unified"):
        assert (run / "loras" / f"{name}.safetensors").is_file()
    assert (run / "samples" / "unified" / "grid.png").is_file()


def _amplified(path, out):
    """The run's LoRA (two steps barely move it) with random up-projections, metadata kept, so that
    a wrongly loaded LoRA shows in the images."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    gen = torch.Generator().manual_seed(0)
    for key, value in tensors.items():
        if "lora_B" in key:
            tensors[key] = value + 0.3 * torch.randn(value.shape, generator=gen)
    save_file(tensors, out, metadata=metadata)
    return out


def test_every_phase_trains_in_bf16_with_a_bf16_base(tiny_sdxl_dir, segmenter_dir, tmp_path):
    """Mixed precision as the real recipes use it: frozen SDXL stored in bf16, LoRAs trained in fp32."""
    recipe = _recipe(tmp_path, segmenter_dir, "training.mixed_precision=bf16", "training.gradient_checkpointing=true")
    run = Run(recipe, tiny_sdxl_dir, tmp_path / "run")
    metrics = run.train()
    assert run.model.pipe.text_encoder_2.dtype == torch.bfloat16 and run.model.unet.conv_in.weight.dtype == torch.bfloat16
    assert set(metrics["stages"]) == {"k2", "feedback", "unified"}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)


@pytest.mark.parametrize("layout", ["diffusers", "kohya"])
def test_exported_sdxl_lora_samples_in_plain_diffusers_like_hypersd_generate(sdxl_run, tiny_sdxl_dir, tmp_path,
                                                                             layout, monkeypatch):
    from PIL import Image

    from hypersd import cli

    run, _ = sdxl_run
    source = _amplified(run / "loras" / "dmd-unified.safetensors", tmp_path / "unified.safetensors")
    exported = tmp_path / f"unified-{layout}.safetensors"
    monkeypatch.setattr(sys, "argv", ["hypersd", "lora", "export", str(source), "--format", layout,
                                      "--out", str(exported)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None)
    monkeypatch.setattr(sys, "argv", ["hypersd", "generate", "a red circle", "--base", str(tiny_sdxl_dir),
                                      "--lora", str(exported), "--seed", "5", "--out", str(tmp_path / "gen")])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None)
    ours = np.asarray(Image.open(tmp_path / "gen" / "000000.png")).astype(int)

    plain = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    plain.load_lora_weights(str(exported))
    plain.scheduler = TCDScheduler.from_config(plain.scheduler.config, timestep_spacing="trailing")
    image = plain("a red circle", num_inference_steps=4, guidance_scale=0.0, eta=0.3, output_type="np",
                  generator=torch.Generator().manual_seed(5)).images[0]
    theirs = (np.clip(image, 0, 1) * 255).round().astype(int)
    assert np.abs(ours - theirs).max() <= 1
    base = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    base.scheduler = plain.scheduler
    without = base("a red circle", num_inference_steps=4, guidance_scale=0.0, eta=0.3, output_type="np",
                   generator=torch.Generator().manual_seed(5)).images[0]
    assert np.abs((np.clip(without, 0, 1) * 255).round().astype(int) - theirs).max() > 1  # the LoRA counts


def test_unconditional_for_a_batch_size_uses_the_default_sizes(sdxl):
    uncond = sdxl.unconditional(3)
    assert uncond.hidden_states.shape[0] == 3 and uncond.extra["text_embeds"].shape[0] == 3
    assert uncond.extra["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 3
