"""Bootstrap intervals of the benchmark tables (hypersd.core.intervals) and how tables show them."""

import numpy as np
import pytest

from hypersd.core.intervals import (
    bootstrap_interval,
    category_mean,
    fd_spread,
    paired_difference,
    paired_ratio,
    plus_minus,
    seed_mean,
    slope_interval,
    stratified_normal_interval,
    verdict,
)
from hypersd.embedded.evaluator.evaluate import fd_cell, overall_cell

CATS = np.array(["single", "counting", "position"] * 200)


def test_interval_of_a_coin_has_the_binomial_width():
    passed = np.random.default_rng(1).random(600) < 0.5
    lo, hi = bootstrap_interval(passed, CATS)
    value = category_mean(passed, CATS)
    assert lo < value < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.sqrt(0.25 / 600), rel=0.2)  # ~0.040


def test_interval_narrows_with_more_prompts():
    rng = np.random.default_rng(2)
    few, many = rng.random(60) < 0.4, rng.random(6000) < 0.4
    w_few = np.subtract(*bootstrap_interval(few, CATS[:60])[::-1])
    w_many = np.subtract(*bootstrap_interval(many, np.resize(CATS, 6000))[::-1])
    assert w_many < w_few / 5


def test_normal_interval_from_category_rates_matches_the_bootstrap():
    """Old tables kept only the categories' pass rates: the normal approximation gives the stratified bootstrap's
    interval from those (6 categories of 100 prompts, rates from 0.1 to 0.86, as the teacher's)."""
    rates = [0.81, 0.10, 0.27, 0.86, 0.72, 0.10]
    categories = np.repeat(np.arange(6), 100)
    passed = np.concatenate([np.arange(100) < round(r * 100) for r in rates])
    lo, hi = bootstrap_interval(passed, categories)
    nlo, nhi = stratified_normal_interval(rates, 100)
    assert (nlo + nhi) / 2 == pytest.approx(np.mean(rates))
    assert nlo == pytest.approx(lo, abs=0.006) and nhi == pytest.approx(hi, abs=0.006)
    assert (nhi - nlo) / 2 == pytest.approx(0.030, abs=0.002)  # the teacher's ± 0.031 in one_step_table.md
    assert stratified_normal_interval([0.0] * 6, 100) == (0.0, 0.0)


def test_category_mean_weights_categories_equally():
    passed = np.array([1, 1, 1, 0], dtype=float)
    cats = np.array(["a", "a", "a", "b"])
    assert category_mean(passed, cats) == 0.5


def test_paired_difference_decides_win_tie_and_loss():
    rng = np.random.default_rng(3)
    a = rng.random(600) < 0.5
    d, lo, hi = paired_difference(a, a, CATS)
    assert (d, lo, hi) == (0.0, 0.0, 0.0) and verdict(lo, hi) == "tie"
    b = a.copy()
    b[np.flatnonzero(a)[:3]] = False  # three prompts apart: within the noise
    assert verdict(*paired_difference(a, b, CATS)[1:]) == "tie"
    c = a & (rng.random(600) < 0.6)  # loses ~20% of its passes
    d, lo, hi = paired_difference(a, c, CATS)
    assert d > 0 and verdict(lo, hi) == "better" and verdict(*paired_difference(c, a, CATS)[1:]) == "worse"


def test_seed_mean_pools_seeds_per_prompt():
    rng = np.random.default_rng(5)
    a0, a1, b0, b1 = (rng.random(600) < p for p in (0.5, 0.45, 0.4, 0.35))
    assert list(seed_mean([[True, False, True], [True, True, False]])) == [1.0, 0.5, 0.5]
    pooled, lo, hi = paired_difference(seed_mean([a0, a1]), seed_mean([b0, b1]), CATS)
    per_seed = [paired_difference(a, b, CATS)[0] for a, b in ((a0, b0), (a1, b1))]
    assert pooled == pytest.approx(np.mean(per_seed))  # the mean of the per-seed differences
    assert lo < pooled < hi
    # one seed given twice is that seed: same difference and same interval
    assert paired_difference(seed_mean([a0, a0]), seed_mean([b0, b0]), CATS) == paired_difference(a0, b0, CATS)


def test_paired_ratio_holds_the_true_ratio_and_separates_a_real_gap():
    rng = np.random.default_rng(5)
    b = rng.random(600) < 0.6
    same, lo, hi = paired_ratio(b, b, CATS)
    assert (same, lo, hi) == (1.0, 1.0, 1.0)
    a = b & (rng.random(600) < 0.7)  # keeps ~70% of b's passes
    value, lo, hi = paired_ratio(a, b, CATS)
    assert lo < value < hi and lo < 0.7 < hi and hi < 0.9  # "a >= 0.9x b" is refuted beyond doubt
    assert np.isnan(paired_ratio(a, np.zeros(600), CATS)[0])


def test_fd_spread_is_small_against_a_real_shift():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(2000, 8)), rng.normal(size=(600, 8)) + 0.5
    spread = fd_spread(fake, real)
    assert 0 < spread < 0.5  # the FD itself is ~2 (8 dims x 0.25)


def test_cells_show_value_and_half_width():
    row = {"shapes_eval": {"overall": 0.4271}, "shapes_eval_ci95": [0.407, 0.447], "fd": 67.21, "fd_spread": 3.14}
    assert overall_cell(row) == "**0.427** ± 0.020" and fd_cell(row) == "67.2 ± 3.1"
    assert plus_minus(0.4271, 0.407, 0.447) == "0.427 ± 0.020"
    assert overall_cell({"shapes_eval": {"overall": 0.5}}) == "**0.500**"  # old results without intervals


def test_slope_interval_finds_a_rising_curve_and_no_trend_in_a_flat_one():
    rng = np.random.default_rng(5)
    u = rng.random(600)
    x = [0, 100, 200, 300]
    rising = [u < 0.2 + 0.1 * k for k in range(4)]  # pass rate up 0.1 per 100 on the same prompts
    slope, intercept, lo, hi = slope_interval(x, rising, CATS)
    assert slope == pytest.approx(0.001, abs=2e-4) and intercept == pytest.approx(0.2, abs=0.03)
    assert 0 < lo < slope < hi
    flat = [rng.random(600) < 0.4 for _ in x]  # fresh noise at every x, no trend
    slope, _, lo, hi = slope_interval(x, flat, CATS)
    assert lo < 0 < hi and abs(slope) < 5e-4
