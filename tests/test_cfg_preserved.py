"""CFG-preserved TSCD (recipe key guidance_mode, issue 16): the captions dropped in the distillation
batch reach the student, the EMA target and the teacher alike; folded stays as it was; the LoRA's
metadata says how it is sampled."""

import pytest
import torch

from hypersd.models.sd import Conditioning
from hypersd.train.objectives.tscd import TSCD
from hypersd.train.outputs import stage_inference
from hypersd.train.recipe import Stage


@pytest.fixture
def model(student_target_model):
    return student_target_model


def _is_empty_prompt(model, cond: Conditioning) -> torch.Tensor:
    """(batch,) True where the sample's conditioning is the empty prompt's."""
    empty = model.unconditional(1).hidden_states[0]
    return (cond.hidden_states == empty).flatten(1).all(1)


def test_dropout_rate_and_what_a_dropped_sample_holds(model):
    cond = model.encode_prompts(["a red circle"] * 2000)
    uncond = model.unconditional(2000)
    torch.manual_seed(1)
    mixed = TSCD(model, Stage(guidance_mode="preserved", caption_dropout=0.2)).condition(cond, uncond)
    dropped = _is_empty_prompt(model, mixed)
    assert 0.17 < dropped.float().mean() < 0.23
    assert torch.equal(mixed.hidden_states[~dropped], cond.hidden_states[~dropped])  # the rest keep their caption
    folded = TSCD(model, Stage(caption_dropout=0.2)).condition(cond, uncond)
    assert folded is cond


def test_every_network_of_the_step_sees_the_same_dropped_captions(model, monkeypatch):
    n = 64
    x0 = torch.randn(n, 4, 8, 8)
    cond, uncond = model.encode_prompts(["a red circle"] * n), model.unconditional(n)
    seen = []
    eps, guided = model.eps, model.guided_eps
    monkeypatch.setattr(model, "eps", lambda x, t, c: seen.append(("eps", c)) or eps(x, t, c))
    monkeypatch.setattr(model, "guided_eps", lambda x, t, c, u, w: seen.append(("guided", c)) or guided(x, t, c, u, w))
    torch.manual_seed(3)
    TSCD(model, Stage(segments=4, guidance_mode="preserved", caption_dropout=0.5, guidance_min=1.0,
                      guidance_max=2.0)).losses(x0, cond, uncond)
    assert seen[0][0] == "guided"  # the teacher, then the EMA target and the student
    masks = [_is_empty_prompt(model, c) for k, c in seen if len(c.hidden_states) == n]
    assert len(masks) == 3 and 10 < masks[0].sum() < 54
    assert all(torch.equal(m, masks[0]) for m in masks)


def test_teacher_at_guidance_one_is_its_conditional_prediction(model):
    x = torch.randn(4, 4, 8, 8)
    t = torch.tensor([900, 600, 300, 50])
    cond, uncond = model.encode_prompts(["a red circle"] * 4), model.unconditional(4)
    with torch.no_grad():
        guided = model.guided_eps(x, t, cond, uncond, torch.ones(4))
        plain = model.eps(x, t, cond)
    assert torch.allclose(guided, plain, atol=1e-5)


def test_metadata_of_a_preserved_stage_and_of_a_folded_one():
    preserved = stage_inference(Stage(segments=4, guidance_mode="preserved", recommended_guidance=6.0,
                                      recommended_steps=8))
    assert preserved == {"scheduler": "ddim-trailing", "timestep_spacing": "trailing", "steps": 8, "eta": 0.0,
                         "guidance": 6.0, "guidance_mode": "preserved"}
    folded = stage_inference(Stage(segments=4))
    assert folded["guidance"] == 0.0 and folded["guidance_mode"] == "folded" and folded["steps"] == 4


@pytest.mark.parametrize("stage, message", [
    (Stage(guidance_mode="cfg"), "guidance_mode must be folded or preserved"),
    (Stage(method="dmd", guidance_mode="preserved", mse_weight=0), "a TSCD option"),
    (Stage(guidance_mode="preserved", caption_dropout=1.0), "caption_dropout must be in [0, 1)"),
])
def test_bad_keys_are_refused(stage, message):
    from hypersd.errors import UserError

    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")):
        stage.validate("stages[0]")
