"""The TSCD training step (Algorithm 1) and the distillation run: loss sanity, one UNet, resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hypersd.lora.adapters import STUDENT
from hypersd.lora.files import inference_settings
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.objectives.tscd import TSCD
from hypersd.train.recipe import Stage, load_recipe
from hypersd.train.run import Run


@pytest.fixture
def model(student_target_model):
    return student_target_model


def _batch(m, n=4):
    x0 = torch.randn(n, 4, 8, 8)
    cond = m.encode_prompts(["a red circle"] * n)
    return x0, cond, m.unconditional(n)


def test_one_segment_per_grid_step_is_teacher_distillation_with_zero_loss_at_init(model):
    # k = 40 with skip 25: every pair is a boundary step (t_end = t_{n-1}); the zero-initialised
    # LoRA student equals the teacher, so with guidance 1 its jump equals the teacher's jump.
    method = TSCD(model, Stage(segments=40, skip=25, guidance_min=1.0, guidance_max=1.0))
    parts = method.losses(*_batch(model))
    assert parts["loss"].item() < 1e-10


def test_loss_is_positive_with_guidance_or_wider_segments(model):
    assert TSCD(model, Stage(segments=40, skip=25, guidance_min=5, guidance_max=5)).losses(*_batch(model))["loss"] > 1e-6
    assert TSCD(model, Stage(segments=1, guidance_min=1, guidance_max=1)).losses(*_batch(model))["loss"] > 1e-6


def test_only_the_student_adapter_gets_gradients(model):
    parts = TSCD(model, Stage(segments=4)).losses(*_batch(model))
    parts["loss"].backward()
    grads = {k: p.grad for k, p in model.unet.named_parameters()}
    student = [g for k, g in grads.items() if f".{STUDENT}." in k]
    assert student and any(g is not None and g.abs().sum() > 0 for g in student)
    assert all(g is None for k, g in grads.items() if f".{STUDENT}." not in k)


def test_times_respect_the_segments(model):
    method = TSCD(model, Stage(segments=4, skip=20))
    times = method.sample_times(5000, "cpu")
    assert (times["t_end"] >= times["t_b"]).all() and (times["t_end"] <= times["t_prev"]).all()
    assert (times["t_prev"] < times["t_n"]).all() and times["w"].min() >= 3 and times["w"].max() <= 8


def _tiny_recipe(tmp_path, adversarial=0.0, **training):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: tiny\n"
        "stages:\n"
        "  - {segments: 2, iterations: 3, learning_rate: 1.0e-3, ema_decay: 0.5, huber_weight: 0.5}\n"
        "  - {segments: 1, iterations: 3, learning_rate: 1.0e-3, teacher: previous, ema_decay: 0.0,\n"
        f"     adversarial_weight: {adversarial}}}\n"
        "lora: {rank: 2, alpha: 2, targets: [to_q, to_k, to_v, conv1]}\n"
        "data: {pool_size: 32}\n"
        "samples: {prompts: 4}\n")
    overrides = [f"training.{k}={v}" for k, v in {"batch_size": 4, "checkpoint_every": 2, **training}.items()]
    return load_recipe(path, overrides)


def test_run_holds_one_unet_and_writes_stage_loras(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    recipe = _tiny_recipe(tmp_path)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    run.train()
    base = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    base_count = sum(p.numel() for m in (base.unet, base.vae, base.text_encoder) for p in m.parameters())
    held = sum(p.numel() for m in (run.model.unet, run.model.vae, run.model.text_encoder) for p in m.parameters())
    lora = sum(p.numel() for k, p in run.model.unet.named_parameters() if "lora_" in k)
    assert held == base_count + lora and lora < 0.2 * base_count  # student, target, teacher: adapters only
    for k in (2, 1):
        path = tmp_path / "run" / "loras" / f"tscd-k{k}.safetensors"
        assert inference_settings(path)["steps"] == k
        assert (tmp_path / "run" / "samples" / f"k{k}" / "grid.png").is_file()
    assert (tmp_path / "run" / "recipe.yaml").is_file() and (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("stop_after,adversarial", [
    (2, 0.0), pytest.param(5, 0.0, marks=pytest.mark.slow), (5, 0.5)])  # (5, 0.5) covers (5, 0.0) and adds the heads
def test_a_killed_and_resumed_run_ends_with_the_same_lora(tiny_pipeline_dir, tmp_path, stop_after, adversarial):
    # stop 2: inside stage 1; stop 5: inside stage 2 (teacher "previous", optimizer state, discriminator)
    recipe = _tiny_recipe(tmp_path, adversarial=adversarial)
    Run(recipe, tiny_pipeline_dir, tmp_path / "whole").train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=stop_after)
    assert not (tmp_path / "killed" / "loras" / "tscd-k1.safetensors").exists()
    position = json.loads((latest_checkpoint(tmp_path / "killed") / "state.json").read_text())
    assert (position["stage"], position["step"]) == (stop_after // 4, 2)
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(resume=True)
    for k in (2, 1):
        a = load_file(tmp_path / "whole" / "loras" / f"tscd-k{k}.safetensors")
        b = load_file(tmp_path / "killed" / "loras" / f"tscd-k{k}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    changed = load_file(tmp_path / "whole" / "loras" / "tscd-k1.safetensors")
    assert any(v.abs().sum() > 0 for k, v in changed.items() if "lora_B" in k)  # it did learn


def test_nan_loss_stops_with_a_clear_message(tiny_pipeline_dir, tmp_path, monkeypatch):
    from hypersd.errors import UserError

    recipe = _tiny_recipe(tmp_path)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "nan")
    original = TSCD.losses

    def poisoned(self, *args):
        parts = original(self, *args)
        parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(TSCD, "losses", poisoned)
    with pytest.raises(UserError, match="loss became nan at k2 step 0"):
        run.train()


def test_adversarial_hybrid_trains_the_heads(model):
    from hypersd.models.discriminator import LatentDiscriminator

    disc = LatentDiscriminator(model.unet)
    method = TSCD(model, Stage(segments=2, mse_weight=0.5, adversarial_weight=0.5), disc)
    parts = method.losses(*_batch(model))
    assert {"mse", "adversarial", "d_loss", "loss"} <= parts.keys()
    torch.testing.assert_close(parts["loss"], 0.5 * parts["mse"] + 0.5 * parts["adversarial"])
    parts["d_loss"].backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_accumulation_bf16_and_checkpointing_options_train(tiny_pipeline_dir, tmp_path):
    import json

    recipe = _tiny_recipe(tmp_path, gradient_accumulation=2, mixed_precision="bf16", gradient_checkpointing="true")
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "opts")
    run.train()
    dtypes = {k: p.dtype for k, p in run.model.unet.named_parameters()}
    assert {d for k, d in dtypes.items() if "lora_" not in k} == {torch.bfloat16}  # the frozen base is stored bf16
    assert {d for k, d in dtypes.items() if "lora_" in k} == {torch.float32}  # the adapters train in fp32
    assert run.model.text_encoder.dtype == torch.bfloat16 and run.model.vae.use_slicing
    weights = load_file(tmp_path / "opts" / "loras" / "tscd-k1.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "opts" / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert losses and all(v == v and v < 1e3 for v in losses)


def test_v_prediction_models_are_refused_with_one_line(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    """SD2-style v-prediction teachers: TSCD's solver assumes epsilon prediction, so `distill` says so."""
    import json
    import shutil
    import sys

    from hypersd.cli import main

    model = tmp_path / "sd2-like"
    shutil.copytree(tiny_pipeline_dir, model)
    config_file = model / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": "v_prediction"}))
    monkeypatch.setattr(sys, "argv", ["hypersd", "distill", "--model", str(model), "--out", str(tmp_path / "run"),
                                      "--set", "stages.0.iterations=1"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "'v_prediction'" in err and "only epsilon-prediction" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # nothing half-written


def test_eight_bit_adam_without_bitsandbytes_is_one_clear_error(monkeypatch):
    import builtins

    from hypersd.errors import UserError
    from hypersd.train.optim import make_optimizer

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "bitsandbytes" else real_import(name, *a, **k))
    with pytest.raises(UserError, match="bitsandbytes"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], "adamw8bit", 1e-3)
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(2))], "adamw", 1e-3), torch.optim.AdamW)


def test_eight_bit_adam_trains_and_resumes_exactly(tiny_pipeline_dir, tmp_path):
    """bitsandbytes' AdamW8bit (optional; runs where it is installed, CPU included): quantised states
    in the checkpoint, and a killed run resumed ends with the same LoRA."""
    bnb = pytest.importorskip("bitsandbytes")
    recipe = _tiny_recipe(tmp_path, optimizer="adamw8bit")
    recipe.lora.rank = recipe.lora.alpha = 32  # tensors of >= 4096 elements: bitsandbytes quantises those
    whole = Run(recipe, tiny_pipeline_dir, tmp_path / "whole")
    whole.train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=5)
    saved = torch.load(latest_checkpoint(tmp_path / "killed") / "optimizer-student.pt", weights_only=True)
    states = [s.get("__bnb_optimizer_quant_state__", s) for s in saved["state"].values()]  # bnb's own packing
    assert any(s.get("state1") is not None and s["state1"].dtype == torch.uint8 for s in states)  # 8-bit states
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(resume=True)
    a = load_file(tmp_path / "whole" / "loras" / "tscd-k1.safetensors")
    b = load_file(tmp_path / "killed" / "loras" / "tscd-k1.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    from hypersd.train.optim import make_optimizer

    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(2))], "adamw8bit", 1e-3), bnb.optim.AdamW8bit)
