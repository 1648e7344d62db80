import numpy as np
import pytest

from hypersd.core.metrics import frechet_distance, mean_finite, psnr_uint8


def test_fd_of_a_set_with_itself_is_zero_and_shift_adds_its_square():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.zeros(8)
    shift[0] = 3.0
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-6)


def test_fd_of_scaled_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 4)), 2.0 * rng.normal(size=(20000, 4))
    # N(0, I) vs N(0, 4I): 4 * (1 + 4 - 2 * 2) = 4
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)


def test_psnr_known_value_and_identity():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] += 10
    values = psnr_uint8(a, b)
    assert np.isinf(values[0])
    assert values[1] == pytest.approx(10 * np.log10(255**2 / 100))
    assert mean_finite(values) == pytest.approx((100 + values[1]) / 2)
