import pytest
import torch
from diffusers import DDIMScheduler

from hypersd.core.solver import ddim_jump, predict_x0, training_grid
from hypersd.models.tiny_sd import build_noise_scheduler


@pytest.fixture(scope="module")
def alphas_cumprod():
    return build_noise_scheduler().alphas_cumprod


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 50])
def test_ddim_jump_equals_diffusers_ddim_step(alphas_cumprod, steps):
    ddim = DDIMScheduler.from_config(build_noise_scheduler().config, timestep_spacing="trailing",
                                     set_alpha_to_one=False)
    ddim.set_timesteps(steps)
    gen = torch.Generator().manual_seed(steps)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    for i, t in enumerate(ddim.timesteps):
        eps = torch.randn(x.shape, generator=gen)
        expected = ddim.step(eps, t, x, eta=0.0).prev_sample
        t_next = ddim.timesteps[i + 1] if i + 1 < len(ddim.timesteps) else torch.tensor(0)
        got = ddim_jump(x, eps, t.repeat(3), t_next.repeat(3), alphas_cumprod)
        torch.testing.assert_close(got, expected, rtol=2e-6, atol=2e-6)  # float32 precision
        x = expected


def test_jump_to_minus_one_is_the_x0_prediction(alphas_cumprod):
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([999, 500])
    clean = ddim_jump(x, eps, t, torch.tensor([-1, -1]), alphas_cumprod)
    torch.testing.assert_close(clean, predict_x0(x, eps, t, alphas_cumprod))


def test_exact_eps_reaches_the_true_noisy_point(alphas_cumprod):
    x0, eps = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    ac = alphas_cumprod.double()
    x_t = ac[700].sqrt() * x0 + (1 - ac[700]).sqrt() * eps
    x_s = ddim_jump(x_t, eps, torch.tensor([700, 700]), torch.tensor([300, 300]), ac)
    torch.testing.assert_close(x_s, ac[300].sqrt() * x0 + (1 - ac[300]).sqrt() * eps)


def test_training_grid():
    grid = training_grid(1000, 20)
    assert len(grid) == 50 and grid[0] == 19 and grid[-1] == 999
    assert set((grid[1:] - grid[:-1]).tolist()) == {20}
