"""Hand-written pieces replaced by the libraries' own, each pinned to the numbers of what it replaced."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup

from hypersd.core.segments import segment_edges, trailing_timesteps
from hypersd.embedded.pretrain import constant_ema, min_snr_weights


def _factors(total: int, warmup: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
    factors = []
    for _ in range(total):
        factors.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return factors


def test_teacher_schedule_is_the_old_cosine_one_step_later_in_warm_up():
    """pretrain's old _cosine_lr: (s + 1) / warmup, then the same cosine after warm-up."""
    total, warmup = 500, 20
    old = [(s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
           for s in range(total)]
    new = _factors(total, warmup)
    np.testing.assert_allclose(new[warmup:], old[warmup:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(new[1:warmup], old[: warmup - 1], rtol=0, atol=1e-12)


def test_evaluator_schedule_stays_within_0_031_of_the_old_one():
    """The evaluator's and segmenter's old warmup_cosine decayed over the whole run; diffusers' decays
    after warm-up. The shipped evaluator and segmenter were trained with the old one (assets/README)."""
    total, warmup = 3000, 100
    old = [min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    diff = np.abs(np.array(_factors(total, warmup)) - np.array(old))
    assert diff[warmup:].max() < 0.031 and diff[-1] < 1e-3  # measured: 0.0308 at mid-run


def test_constant_ema_follows_the_old_hand_written_average():
    """pretrain's old _ema_update: lerp with decay 0 up to step `warmup`, then the constant decay."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema, old = constant_ema(model, 0.9, warmup=3), copy.deepcopy(model)
    for step in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.step(model.parameters())
        with torch.no_grad():
            for e, p in zip(old.parameters(), model.parameters()):
                e.lerp_(p, 1 - (0.9 if step > 3 else 0.0))
        for shadow, e in zip(ema.shadow_params, old.parameters()):
            torch.testing.assert_close(shadow, e, rtol=0, atol=1e-6)


def test_min_snr_weights_from_compute_snr_equal_the_old_formula():
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.arange(0, 1000, 7)
    ac = scheduler.alphas_cumprod[t]
    snr = ac / (1 - ac)
    torch.testing.assert_close(min_snr_weights(scheduler, t, 5.0), torch.clamp(snr, max=5.0) / snr,
                               rtol=1e-5, atol=0)
    assert torch.equal(min_snr_weights(scheduler, t, 0.0), torch.ones(len(t)))


def test_scheduler_add_noise_is_bit_identical_to_the_old_formula():
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, noise = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    t = torch.tensor([0, 1, 250, 499, 800, 999])
    ac = scheduler.alphas_cumprod.clone().float()[t].view(-1, 1, 1, 1)
    assert torch.equal(scheduler.add_noise(x0, noise, t), ac.sqrt() * x0 + (1 - ac).sqrt() * noise)


def test_one_trailing_timestep_function_matches_diffusers_and_the_old_edges():
    old_feedback = lambda k: [round(1000 - i * 1000 / k) - 1 for i in range(k)]  # noqa: E731
    for k in range(1, 48):
        assert trailing_timesteps(k) == old_feedback(k)
    assert segment_edges(4).tolist() == [-1, 249, 499, 749]
    scheduler = DDIMScheduler(timestep_spacing="trailing")
    for k in (48, 61, 96):  # where the old feedback formula drifted from diffusers by one
        scheduler.set_timesteps(k)
        assert trailing_timesteps(k) == scheduler.timesteps.tolist() != old_feedback(k)


def test_preserved_rng_leaves_the_stream_where_it_was():
    from hypersd.train.checkpoint import preserved_rng

    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    with preserved_rng():
        torch.rand(100)
    assert torch.equal(torch.rand(3), expected)


def test_the_models_add_noise_is_ddpms_forward_process_whatever_sampler_the_pipeline_ships():
    """SDXL ships an Euler sampler whose add_noise scales by sigma: training must not use that one."""
    from types import SimpleNamespace

    from diffusers import EulerDiscreteScheduler

    from hypersd.models.sd import SDModel

    euler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    model = SDModel(SimpleNamespace(unet=None, vae=None, text_encoder=None, tokenizer=None, scheduler=euler))
    x0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    ac = euler.alphas_cumprod.clone().float()[t].view(-1, 1, 1, 1)
    assert torch.equal(model.add_noise(x0, noise, t), ac.sqrt() * x0 + (1 - ac).sqrt() * noise)
    low = model.add_noise(x0.bfloat16(), noise.bfloat16(), t)  # bf16 latents: fp32 maths, as before
    assert low.dtype == torch.float32
    assert torch.equal(low, ac.sqrt() * x0.bfloat16() + (1 - ac).sqrt() * noise.bfloat16())
