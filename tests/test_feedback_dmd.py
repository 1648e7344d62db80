"""Feedback learning (ReFL, perceptual, regulariser), score distillation (DMD) and the full
TSCD -> feedback -> DMD run on a tiny model: maths, frozen/trainable adapters, files, resume."""

import json

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from hypersd.core.losses import dmd_gradient, dmd_loss
from hypersd.core.segments import trailing_timesteps
from hypersd.errors import UserError
from hypersd.lora.files import inference_settings, read_metadata
from hypersd.rewards.base import RewardModel
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.objectives.feedback import aesthetic_loss, refl_stop_index
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8])
def test_trailing_timesteps_match_diffusers(steps):
    scheduler = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    assert trailing_timesteps(steps) == scheduler.timesteps.tolist()


def test_refl_stop_index_stays_in_the_window():
    ts = trailing_timesteps(4)  # 999, 749, 499, 249
    seen = {refl_stop_index(ts, 300, 800) for _ in range(200)}
    assert seen == {1, 2}
    assert refl_stop_index(ts, 100, 200) == 3  # no step inside: the nearest one


def test_dmd_loss_gradient_is_the_normalised_score_difference():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8, requires_grad=True)
    real, fake = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    grad = dmd_gradient(x.detach(), real, fake)
    dmd_loss(x, grad).backward()
    torch.testing.assert_close(x.grad, grad / x.numel())
    scale = (x.detach() - real).abs().mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(grad * scale, fake - real)
    assert dmd_gradient(x.detach(), real, real).abs().max() == 0  # fake = real: nothing to learn


def _gaussian_x0(x_t, a, sigma, mean, std):
    """E[x0 | x_t] for data N(mean, std^2) noised as x_t = a x0 + sigma eps (an exact denoiser)."""
    return mean + a * std**2 / (a**2 * std**2 + sigma**2) * (x_t - a * mean)


def test_dmd_moves_a_toy_generator_onto_the_real_distribution():
    """Toy check of sign and normaliser: a generator of i.i.d. N(mu, s^2) vectors trained with
    dmd_gradient/dmd_loss against exact real (N(2, 0.3^2)) and fake (its own current law) denoisers
    ends at the real law (16 dimensions, so the per-sample normaliser is an average, as for images)."""
    torch.manual_seed(0)
    mu, log_s = torch.tensor(-1.0, requires_grad=True), torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_s], lr=0.02)
    ac = torch.linspace(0.999, 0.01, 100)
    for _ in range(600):
        x = mu + log_s.exp() * torch.randn(256, 16)
        a = ac[torch.randint(0, 100, (256, 1))].sqrt()
        sigma = (1 - a**2).sqrt()
        x_t = a * x.detach() + sigma * torch.randn_like(x)
        real = _gaussian_x0(x_t, a, sigma, 2.0, 0.3)
        fake = _gaussian_x0(x_t, a, sigma, mu.detach(), log_s.detach().exp())
        optimizer.zero_grad()
        dmd_loss(x, dmd_gradient(x.detach(), real, fake)).backward()
        optimizer.step()
    assert abs(mu.item() - 2.0) < 0.1 and abs(log_s.exp().item() - 0.3) < 0.1


class _Constant(RewardModel):
    name = "constant"

    def __init__(self, value):
        super().__init__()
        self.value = value

    def score(self, images, prompts):
        return images.mean((1, 2, 3)) * 0 + self.value


def test_aesthetic_hinge_stops_pushing_above_alpha():
    images = torch.zeros(2, 3, 8, 8, requires_grad=True)
    low, _ = aesthetic_loss(images, ["", ""], [_Constant(3.0)], [5.0])
    high, scores = aesthetic_loss(images, ["", ""], [_Constant(6.0)], [5.0])
    assert low.item() == pytest.approx(2.0) and high.item() == 0.0 and scores["constant"] == 6.0


def _recipe(tmp_path, segmenter_dir, stages, lora="{rank: 2, alpha: 2, targets: [to_q, to_v, conv1]}"):
    feedback = ("{rewards: [shapes-clean], reward_alpha: [9.0], perceptual_weight: 1.0, pretrain_weight: 0.5, "
                f"segmenter: '{segmenter_dir}', sampling_steps: 2, rank: 2, merge_ratio: 0.5, batch_size: 2}}")
    lines = {
        "tscd": "  - {segments: 2, iterations: 2, learning_rate: 1.0e-3}",
        "feedback": f"  - {{method: feedback, iterations: 3, learning_rate: 1.0e-3, feedback: {feedback}}}",
        "dmd": ("  - {method: dmd, segments: 1, iterations: 3, learning_rate: 1.0e-3, feedback: " + feedback
                + ", dmd: {with_feedback: true, fake_rank: 2, fake_updates: 2, batch_size: 1}}"),
        "unet": ("  - {method: dmd, segments: 1, iterations: 3, learning_rate: 1.0e-3, mse_weight: 0, feedback: "
                 + feedback + ", dmd: {generator: unet, generator_timestep: 800, with_feedback: true, fake_rank: 2, fake_updates: 1}}"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text("name: tiny-hyper\nstages:\n" + "\n".join(lines[s] for s in stages) + "\n"
                    f"lora: {lora}\ndata: {{pool_size: 16}}\nsamples: {{prompts: 2}}\n")
    return load_recipe(path, ["training.batch_size=2", "training.checkpoint_every=1"])


def _adapter(run, name):
    return {k: p.detach().clone() for k, p in run.model.unet.named_parameters() if f".{name}." in k}


def test_feedback_stage_trains_only_the_feedback_lora(tiny_pipeline_dir, segmenter_dir, tmp_path):
    run = Run(_recipe(tmp_path, segmenter_dir, ["tscd", "feedback"]), tiny_pipeline_dir, tmp_path / "run")
    metrics = run.train()
    out = tmp_path / "run" / "loras"
    after_tscd = load_file(out / "tscd-k2.safetensors")
    student = _adapter(run, "student")
    for key, value in after_tscd.items():  # the TSCD LoRA did not move in the feedback stage
        name = key[len("unet."):].replace(".lora_A.weight", ".lora_A.student.weight").replace(
            ".lora_B.weight", ".lora_B.student.weight")
        torch.testing.assert_close(student[name], value, rtol=0, atol=0)
    assert any(v.abs().sum() > 0 for k, v in _adapter(run, "feedback").items() if "lora_B" in k)
    merged = load_file(out / "feedback-merged.safetensors")
    assert merged["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"].shape[0] == 4
    assert json.loads(read_metadata(out / "feedback-merged.safetensors")["hypersd_merge"])["ratio"] == 0.5
    assert inference_settings(out / "feedback-merged.safetensors")["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    fb = [r for r in log if r.get("stage") == "feedback" and "loss" in r]
    assert fb and all(k in fb[0] for k in ("aesthetic", "perceptual", "pretrain", "reward/shapes-clean"))
    assert "feedback" in metrics["stages"]


def test_full_recipe_writes_a_unified_tcd_lora_and_resumes_exactly(tiny_pipeline_dir, segmenter_dir, tmp_path,
                                                                   monkeypatch):
    from hypersd.train.objectives import dmd

    generated = []
    original = dmd.generate_x0
    monkeypatch.setattr(dmd, "generate_x0", lambda m, s, noise, *a: generated.append(len(noise)) or original(m, s, noise, *a))
    recipe = _recipe(tmp_path, segmenter_dir, ["tscd", "feedback", "dmd"])
    Run(recipe, tiny_pipeline_dir, tmp_path / "whole").train()
    assert generated and set(generated) == {1}  # dmd.batch_size 1 of training.batch_size 2
    unified = tmp_path / "whole" / "loras" / "dmd-unified.safetensors"
    settings = inference_settings(unified)
    assert settings["scheduler"] == "tcd" and settings["eta"] == 0.3
    assert (tmp_path / "whole" / "samples" / "unified" / "grid.png").is_file()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=6)  # inside the DMD stage
    position = json.loads((latest_checkpoint(tmp_path / "killed") / "state.json").read_text())
    assert (position["stage"], position["step"]) == (2, 1) and position["elapsed"] > 0
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(resume=True)
    a, b = load_file(unified), load_file(tmp_path / "killed" / "loras" / "dmd-unified.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_one_step_model_as_a_full_unet_saves_a_pipeline_and_resumes_exactly(tiny_pipeline_dir, segmenter_dir,
                                                                            tmp_path, capsys, monkeypatch):
    import sys

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file as load

    from hypersd.cli import main

    recipe = _recipe(tmp_path, segmenter_dir, ["tscd", "unet"])
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "whole")
    run.train()
    folder = tmp_path / "whole" / "one-step-t800-unet"
    assert json.loads((folder / "hypersd_inference.json").read_text())["timesteps"] == [800]
    trained = UNet2DConditionModel.from_pretrained(folder / "unet")
    base = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert any("lora" not in k and ".to_k." in k for k in moved)  # beyond the LoRA targets: the whole UNet trains
    assert all(not torch.equal(p, base.state_dict()[k]) for k, p in trained.state_dict().items() if k.endswith("to_q.weight"))
    for name, param in run.model.unet.named_parameters():  # the frozen base (the teacher) did not move
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            torch.testing.assert_close(param, base.state_dict()[key], rtol=0, atol=0)
    a = load(folder / "unet" / "diffusion_pytorch_model.safetensors")
    for stop in (2, 4):  # killed at the stage boundary (no UNet in the checkpoint yet), and inside the stage
        Run(recipe, tiny_pipeline_dir, tmp_path / f"killed{stop}").train(stop_after=stop)
        Run(recipe, tiny_pipeline_dir, tmp_path / f"killed{stop}").train(resume=True)
        b = load(tmp_path / f"killed{stop}" / "one-step-t800-unet" / "unet" / "diffusion_pytorch_model.safetensors")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    monkeypatch.setattr(sys, "argv", ["hypersd", "sample", "--model", str(folder), "--prompt", "a red circle",
                                      "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    record = json.loads((tmp_path / "s" / "samples.jsonl").read_text().splitlines()[0])
    assert record["scheduler"] == "lcm" and record["timesteps"] == [800] and record["steps"] == 1


def test_a_phase_runs_alone_from_a_given_lora(tiny_pipeline_dir, segmenter_dir, tmp_path):
    first = Run(_recipe(tmp_path, segmenter_dir, ["tscd"]), tiny_pipeline_dir, tmp_path / "a")
    first.train()
    given = tmp_path / "a" / "loras" / "tscd-k2.safetensors"
    run = Run(_recipe(tmp_path, segmenter_dir, ["feedback"]), tiny_pipeline_dir, tmp_path / "b", init_lora=given)
    before = _adapter(run, "student")
    assert any(v.abs().sum() > 0 for k, v in before.items() if "lora_B" in k)  # loaded, not fresh
    run.train()
    assert (tmp_path / "b" / "loras" / "feedback-merged.safetensors").is_file()
    for lora, problem in (("{rank: 1, alpha: 1, targets: [to_q, to_v, conv1]}", "rank or above"),  # smaller
                          ("{rank: 4, alpha: 2, targets: [to_q, to_v, conv1]}", "alpha/r")):  # other scale
        with pytest.raises(UserError, match=problem):
            Run(_recipe(tmp_path, segmenter_dir, ["feedback"], lora=lora), tiny_pipeline_dir, tmp_path / "c",
                init_lora=given)


def test_perceptual_loss_needs_shapes_data(tiny_pipeline_dir, segmenter_dir, tmp_path):
    recipe = _recipe(tmp_path, segmenter_dir, ["feedback"])
    recipe.data.source = str(tmp_path / "folder")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError):
        Run(recipe, tiny_pipeline_dir, tmp_path / "run").train()


@pytest.mark.parametrize("timestep,extra,expected", [
    (999, [], {"scheduler": "tcd", "eta": 0.3, "steps": 4}),
    (999, ["--eta", "1.0", "--steps", "2"], {"scheduler": "tcd", "eta": 1.0, "steps": 2}),
    (800, [], {"scheduler": "lcm", "steps": 1, "timesteps": [800]}),
])
def test_sample_applies_the_unified_and_one_step_settings(tiny_pipeline_dir, tmp_path, timestep, extra, expected,
                                                          capsys, monkeypatch):
    import sys

    from diffusers import StableDiffusionPipeline

    from hypersd.cli import main
    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import save_lora
    from hypersd.train.outputs import stage_inference
    from hypersd.train.recipe import Stage

    stage = Stage(method="dmd", segments=1)
    stage.dmd.generator_timestep = timestep
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q", "to_v"])
    lora = save_lora(tmp_path / "u.safetensors", pipe.unet, "student", inference=stage_inference(stage))
    monkeypatch.setattr(sys, "argv", ["hypersd", "sample", "--model", str(tiny_pipeline_dir), "--lora", str(lora),
                                      "--prompt", "a red circle", "--out", str(tmp_path / "s"), *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    record = json.loads((tmp_path / "s" / "samples.jsonl").read_text().splitlines()[0])
    assert {k: record[k] for k in expected} == expected
