"""DMD2's additions to score distillation (hypersd.train.objectives.dmd): the update ratio of the
two time-scale rule, the GAN head on the fake score's encoder (its loss signs), backward simulation's
timesteps, exact resume with the head and its optimizer; the quick evaluation and progress plot."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hypersd.lora.adapters import FAKE, STUDENT
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.curves import plot_progress, progress_series
from hypersd.train.objectives import dmd
from hypersd.train.objectives.dmd import backward_simulate, simulation_timesteps
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run


def _recipe(tmp_path, dmd_keys: str, iterations: int = 3, extra: list[str] = ()):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: tiny-dmd2\nstages:\n"
        f"  - {{method: dmd, segments: 1, iterations: {iterations}, learning_rate: 1.0e-3, mse_weight: 0, "
        f"dmd: {{fake_rank: 2, batch_size: 2, {dmd_keys}}}}}\n"
        "lora: {rank: 2, alpha: 2, targets: [to_q, to_v, conv1]}\ndata: {pool_size: 16}\nsamples: {prompts: 2}\n")
    return load_recipe(path, ["training.batch_size=2", "training.checkpoint_every=1", *extra])


# ------------------------------------------------------------------ backward simulation
def test_simulation_timesteps_are_the_trailing_schedule_from_the_generator_timestep():
    assert simulation_timesteps(1, 999) == [999]
    assert simulation_timesteps(2, 999) == [999, 499]
    assert simulation_timesteps(4, 999) == [999, 749, 499, 249]
    assert simulation_timesteps(2, 800) == [800, 499]


def test_a_step_count_listed_twice_in_backward_simulation_is_drawn_twice_as_often():
    from types import SimpleNamespace

    objective = SimpleNamespace(cfg=SimpleNamespace(backward_simulation=[1, 2, 2, 4], generator_timestep=999))
    torch.manual_seed(0)
    draws = [dmd.ScoreDistillation.simulation_point(objective) for _ in range(4000)]
    counts = {n: sum(len(timesteps) == n for timesteps, _ in draws) / len(draws) for n in (1, 2, 4)}
    assert counts[2] == pytest.approx(0.5, abs=0.03)
    assert counts[1] == pytest.approx(0.25, abs=0.03) and counts[4] == pytest.approx(0.25, abs=0.03)
    assert all(0 <= stop < len(timesteps) for timesteps, stop in draws)


def test_the_quick_evaluation_samples_each_simulated_step_count_once(tmp_path):
    from hypersd.train.stages import monitor_settings

    stage = _recipe(tmp_path, "backward_simulation: [1, 2, 2, 4]").stages[0]
    assert [s.steps for s in monitor_settings(stage)] == [1, 2, 4]


def test_backward_simulate_runs_the_sampler_up_to_the_drawn_step():
    calls = []

    def jump(x, t):
        calls.append(("jump", t))
        return x + 1

    def renoise(x0, t):
        calls.append(("renoise", t))
        return x0 * 10

    x = backward_simulate(jump, renoise, torch.zeros(2), [999, 749, 499, 249], stop=2)
    assert calls == [("jump", 999), ("renoise", 749), ("jump", 749), ("renoise", 499)]
    assert x.tolist() == [110.0, 110.0]  # ((0 + 1) * 10 + 1) * 10
    calls.clear()
    assert backward_simulate(jump, renoise, torch.zeros(2), [999], stop=0).tolist() == [0.0, 0.0] and not calls


def test_generator_reads_backward_simulated_inputs(tiny_pipeline_dir, tmp_path, monkeypatch):
    """With backward_simulation [4], each generator sample is preceded, without gradient, by the
    student's own steps at the earlier timesteps of the 4-step schedule, and reads its input at a
    timestep of that schedule; every step of it is drawn over a few calls."""
    seen = []
    original = dmd.generate_x0

    def spy(model, student, x_t, t, cond):
        seen.append((int(t), torch.is_grad_enabled()))
        return original(model, student, x_t, t, cond)

    monkeypatch.setattr(dmd, "generate_x0", spy)
    recipe = _recipe(tmp_path, "backward_simulation: [4], fake_updates: 1", iterations=12)
    Run(recipe, tiny_pipeline_dir, tmp_path / "run").train()
    schedule = [999, 749, 499, 249]
    assert {t for t, _ in seen} <= set(schedule)
    graded = [t for t, grad in seen if grad]  # the generator's own call, one per iteration
    assert len(graded) == 12 and len(set(graded)) >= 3


def test_backward_simulation_prefix_is_exactly_the_schedule(tiny_pipeline_dir, monkeypatch):
    """One generator input: the student is called at 999, 749, ... (no gradient) before the drawn step."""
    from hypersd.models.sd import load_model
    from hypersd.train.recipe import Stage

    model = load_model(tiny_pipeline_dir, device="cpu")
    from hypersd.lora.adapters import add_lora

    add_lora(model.unet, 2, 2, ["to_q"], name=STUDENT)
    stage = Stage(method="dmd", segments=1, mse_weight=0)
    stage.dmd.backward_simulation = [4]
    objective = dmd.ScoreDistillation(model, stage, [STUDENT], [STUDENT], fake_optimizer=None)
    calls = []
    monkeypatch.setattr(dmd, "generate_x0", lambda m, s, x, t, c: calls.append(int(t)) or x * 0.5)
    cond = model.encode_prompts(["a red circle"])
    for stop in range(4):
        monkeypatch.setattr(objective, "simulation_point", lambda stop=stop: ([999, 749, 499, 249], stop))
        calls.clear()
        _, t = objective.generator_input(torch.randn(1, 4, 4, 4), cond)
        assert calls == [999, 749, 499, 249][:stop] and t == [999, 749, 499, 249][stop]


# ------------------------------------------------------------------ two time-scale update rule
@pytest.mark.parametrize("ratio", [1, 3])
def test_fake_score_takes_fake_updates_steps_per_generator_step(tiny_pipeline_dir, tmp_path, ratio):
    run = Run(_recipe(tmp_path, f"fake_updates: {ratio}", iterations=2), tiny_pipeline_dir, tmp_path / "run")
    run.train()
    steps = {int(s["step"]) for s in run.fake_optimizer.state_dict()["state"].values()}
    assert steps == {2 * ratio}


def test_fake_learning_rate_is_its_own(tiny_pipeline_dir, tmp_path):
    recipe = _recipe(tmp_path, "fake_learning_rate: 3.0e-5", iterations=1)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    assert [g["lr"] for g in run.fake_optimizer.param_groups] == [3e-5]


# ------------------------------------------------------------------ the GAN head
def test_gan_head_learns_to_tell_real_from_generated(tiny_pipeline_dir, tmp_path):
    """update_fake's head loss makes the head score real latents above generated ones; with the
    sign flipped (real and fake swapped) the ordering would come out the other way."""
    recipe = _recipe(tmp_path, "gan_weight: 0.1, gan_classifier_weight: 1.0, fake_learning_rate: 1.0e-3")
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    objective = dmd.ScoreDistillation(run.model, recipe.stages[0], run.roles(0)[0], run.roles(0)[1],
                                      run.fake_optimizer, classifier=run.score_classifier)
    torch.manual_seed(0)
    real, fake = torch.randn(8, 4, 4, 4) * 0.3 + 1.0, torch.randn(8, 4, 4, 4) * 0.3 - 1.0
    cond = run.model.encode_prompts(["a red circle"] * 8)
    t = torch.full((8,), 300)

    def margin():
        with torch.no_grad():
            m = run.model
            d_real = run.score_classifier(m, m.add_noise(real, torch.randn_like(real), t), t, cond)
            d_fake = run.score_classifier(m, m.add_noise(fake, torch.randn_like(fake), t), t, cond)
        return (d_real - d_fake).mean().item()

    before = margin()
    for _ in range(30):
        parts = objective.update_fake(fake, cond, real)
    assert "classifier" in parts and margin() > before + 0.5


def test_generator_gan_term_raises_the_heads_score_of_its_samples(tiny_pipeline_dir, tmp_path):
    """The generator's GAN loss is softplus(-D): its gradient with respect to the head's logit is negative."""
    from hypersd.core.losses import generator_loss

    logit = torch.zeros(4, requires_grad=True)
    generator_loss(logit).mean().backward()
    assert (logit.grad < 0).all()


def test_gan_term_needs_both_weights(tmp_path):
    from hypersd.errors import UserError

    with pytest.raises(UserError, match="gan_weight"):
        _recipe(tmp_path, "gan_weight: 0.1")


def test_resume_with_gan_head_and_backward_simulation_is_exact(tiny_pipeline_dir, tmp_path):
    keys = "gan_weight: 0.1, gan_classifier_weight: 1.0, fake_updates: 2, backward_simulation: [1, 2]"
    recipe = _recipe(tmp_path, keys, iterations=4)
    whole = Run(recipe, tiny_pipeline_dir, tmp_path / "whole")
    whole.train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=2)
    position = json.loads((latest_checkpoint(tmp_path / "killed") / "state.json").read_text())
    assert (position["stage"], position["step"]) == (0, 2) and position["elapsed"] > 0
    resumed = Run(recipe, tiny_pipeline_dir, tmp_path / "killed")
    resumed.train(resume=True)
    a = load_file(tmp_path / "whole" / "loras" / "dmd-unified.safetensors")
    b = load_file(tmp_path / "killed" / "loras" / "dmd-unified.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for (k, p), (_, q) in zip(whole.score_classifier.state_dict().items(), resumed.score_classifier.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=k)
    fake_a = {k: v for k, v in whole.model.unet.state_dict().items() if f".{FAKE}." in k}
    fake_b = {k: v for k, v in resumed.model.unet.state_dict().items() if f".{FAKE}." in k}
    for key in fake_a:
        torch.testing.assert_close(fake_a[key], fake_b[key], rtol=0, atol=0)


# ------------------------------------------------------------------ quick evaluation and progress plot
def test_quick_eval_logs_every_learned_step_count_and_draws_progress(tiny_pipeline_dir, tmp_path):
    asked = []

    def monitor(pipe, settings):
        asked.append((settings.steps, settings.scheduler))
        return 0.25

    recipe = _recipe(tmp_path, "backward_simulation: [1, 2], fake_updates: 1", iterations=4,
                     extra=["training.eval_every=2", "training.log_every=1", "training.save_lora_every=2"])
    Run(recipe, tiny_pipeline_dir, tmp_path / "run", monitor=monitor).train()
    snaps = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snaps == ["unified-0000002.safetensors", "unified-0000004.safetensors"]
    last, final = (load_file(tmp_path / "run" / f) for f in ("snapshots/unified-0000004.safetensors",
                                                            "loras/dmd-unified.safetensors"))
    assert all(torch.equal(last[k], final[k]) for k in final)
    first = load_file(tmp_path / "run" / "snapshots" / "unified-0000002.safetensors")
    assert any(not torch.equal(first[k], final[k]) for k in final)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r.get("event") == "quick_eval"]
    assert [r["step"] for r in evals] == [2, 4] and evals[0]["scores"] == {"@1": 0.25, "@2": 0.25}
    assert asked == [(1, "tcd"), (2, "tcd")] * 2
    steps = [r for r in log if "loss" in r and "event" not in r]
    assert all(r["eta_s"] >= 0 for r in steps) and steps[-1]["eta_s"] == 0
    assert [r["elapsed_s"] for r in steps] == sorted(r["elapsed_s"] for r in steps)
    losses, series = progress_series(log)
    assert set(series) == {"unified @1", "unified @2"} and len(series["unified @1"]) == 2
    assert {"loss", "dmd", "fake"} <= set(losses)
    assert (tmp_path / "run" / "progress.png").stat().st_size > 1000


def test_progress_series_keeps_the_last_value_of_a_step_logged_twice():
    log = [{"stage": "k1", "step": 0, "loss": 2.0, "elapsed_s": 1.0},
           {"stage": "k1", "step": 10, "loss": 1.0, "elapsed_s": 5.0},
           {"stage": "k1", "step": 10, "loss": 0.5, "elapsed_s": 5.5},  # a resumed stretch
           {"event": "quick_eval", "stage": "k1", "step": 10, "elapsed_s": 5.5, "scores": {"@1": 0.3}}]
    losses, evals = progress_series(log)
    assert losses["loss"] == [(1.0 / 3600, 2.0), (5.5 / 3600, 0.5)]
    assert evals == {"k1 @1": [(5.5 / 3600, 0.3)]}


def test_plot_progress_without_a_log_draws_nothing(tmp_path):
    assert plot_progress(tmp_path) is None and not (tmp_path / "progress.png").exists()


def test_shipped_rows_follow_the_files_metadata(tiny_pipeline_dir, tmp_path):
    """`make demo` rows of the shipped models sample at the settings written into the files."""
    from diffusers import UNet2DConditionModel

    from hypersd.embedded.rows import shipped_rows
    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import save_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    add_lora(unet, 2, 2, ["to_q"], name=STUDENT)
    one = save_lora(tmp_path / "one.safetensors", unet, STUDENT,
                    inference={"scheduler": "lcm", "steps": 1, "timesteps": [800], "guidance": 0.0})
    uni = save_lora(tmp_path / "uni.safetensors", unet, STUDENT,
                    inference={"scheduler": "tcd", "steps": 4, "guidance": 0.0, "eta": 0.3})
    rows = shipped_rows(one, uni)
    assert [r.label for r in rows] == ["shipped one-step model @1"] + [f"shipped unified LoRA @{s}" for s in (1, 2, 4, 8)]
    assert (rows[0].settings.scheduler, rows[0].settings.timesteps) == ("lcm", [800])
    assert [(r.settings.scheduler, r.settings.steps, r.settings.eta) for r in rows[1:]] == [
        ("tcd", s, 0.3) for s in (1, 2, 4, 8)]
    assert shipped_rows(tmp_path / "missing.safetensors", tmp_path / "missing2.safetensors") == []


def test_gan_gradient_is_right_with_gradient_checkpointing(tiny_pipeline_dir):
    """The head's features run with the fake adapter, backward after the student is active again:
    with gradient checkpointing on, a recomputed block would use the wrong adapters. The gradient into
    x must equal the one without checkpointing."""
    from hypersd.lora.adapters import add_lora
    from hypersd.models.discriminator import LatentDiscriminator
    from hypersd.models.sd import load_model

    model = load_model(tiny_pipeline_dir, device="cpu")
    targets = ["to_q", "to_v", "conv1", "conv2"]
    add_lora(model.unet, 2, 2, targets, name=STUDENT)
    add_lora(model.unet, 3, 3, targets, name=FAKE)
    torch.manual_seed(1)
    for name, p in model.unet.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    model.unet.set_adapter(STUDENT)
    head = LatentDiscriminator(model.unet, adapter=FAKE)
    cond = model.encode_prompts(["a red circle", "a blue square"])
    t = torch.tensor([300, 600])

    def grad(checkpointing: bool):
        model.unet.enable_gradient_checkpointing() if checkpointing else model.unet.disable_gradient_checkpointing()
        model.unet.train()
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        logit = head(model, x, t, cond)  # the fake adapter inside, the student's again afterwards
        logit.sum().backward()
        return x.grad

    torch.testing.assert_close(grad(True), grad(False))
