"""Uncertainty of the benchmark figures: percentile bootstrap over prompts, stratified by category
(Efron & Tibshirani 1993, ch. 13), paired when two models were sampled on the same prompts and seeds, and the spread of the
Frechet distance over resamples of the generated set.

A difference whose 95% interval holds 0 is a tie (`verdict`).
"""

from __future__ import annotations

import numpy as np

from hypersd.core.metrics import frechet_distance

RESAMPLES = 1000
FD_RESAMPLES = 5


def category_mean(passed: np.ndarray, categories: np.ndarray) -> float:
    """ShapesEval overall: the mean over the categories present of each category's pass rate."""
    return float(np.mean([passed[categories == c].mean() for c in np.unique(categories)]))


def _indices(categories: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) prompt indices drawn with replacement within each category (a stratified
    bootstrap: every resample keeps the prompt set's category sizes, as the overall score weights them)."""
    rng = np.random.default_rng(seed)
    columns = []
    for c in np.unique(categories):
        members = np.flatnonzero(categories == c)
        columns.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(columns, axis=1)


def bootstrap_interval(passed, categories, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ShapesEval overall over prompts drawn with replacement."""
    passed, categories = np.asarray(passed, dtype=float), np.asarray(categories)
    stats = [category_mean(passed[i], categories[i]) for i in _indices(categories, resamples, seed)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_difference(passed_a, passed_b, categories, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(a - b, interval low, interval high) of ShapesEval overall for two models judged on the same
    prompts (and seeds): one resample of prompts serves both, so the shared prompt difficulty cancels."""
    a, b = np.asarray(passed_a, dtype=float), np.asarray(passed_b, dtype=float)
    categories = np.asarray(categories)
    diffs = [category_mean(a[i], categories[i]) - category_mean(b[i], categories[i])
             for i in _indices(categories, resamples, seed)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return category_mean(a, categories) - category_mean(b, categories), float(lo), float(hi)


def slope_interval(x, passed_rows, categories, resamples: int = RESAMPLES, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float, float]:
    """(slope, intercept, interval low, interval high) of the least-squares line through ShapesEval overall
    against x (e.g. training iterations), one row of per-prompt passes per x. The rows were judged on the same
    prompts, so one resample of prompts serves every row (as in `paired_difference`), and the interval is that
    of the slope over the resamples."""
    x, rows = np.asarray(x, dtype=float), np.asarray(passed_rows, dtype=float)
    categories = np.asarray(categories)
    slope, intercept = np.polyfit(x, [category_mean(r, categories) for r in rows], 1)
    slopes = [np.polyfit(x, [category_mean(r[i], categories[i]) for r in rows], 1)[0]
              for i in _indices(categories, resamples, seed)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(slopes, [tail, 100 - tail])
    return float(slope), float(intercept), float(lo), float(hi)


def seed_mean(passed_per_seed) -> np.ndarray:
    """Per prompt, the fraction of training seeds whose image passed: one row per seed in, one row out.
    Fed to `paired_difference`, a resample of prompts then keeps every seed's image of a prompt together,
    and the difference is the mean of the per-seed differences (ShapesEval overall is linear in passes)."""
    return np.asarray(passed_per_seed, dtype=float).mean(axis=0)


def paired_ratio(passed_a, passed_b, categories, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(a / b, interval low, interval high) for two models judged on the same prompts: a target such
    as "a >= 0.9x b" is met beyond doubt when the interval's low end clears it. Resamples where b
    is 0 are left out."""
    a, b = np.asarray(passed_a, dtype=float), np.asarray(passed_b, dtype=float)
    categories = np.asarray(categories)
    ratios = []
    for i in _indices(categories, resamples, seed):
        denominator = category_mean(b[i], categories[i])
        if denominator > 0:
            ratios.append(category_mean(a[i], categories[i]) / denominator)
    whole = category_mean(b, categories)
    value = category_mean(a, categories) / whole if whole > 0 else float("nan")
    if not ratios:
        return value, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return value, float(lo), float(hi)


def verdict(low: float, high: float) -> str:
    """'better' / 'worse' when the interval of a - b excludes 0, else 'tie'."""
    return "better" if low > 0 else "worse" if high < 0 else "tie"


def fd_spread(features: np.ndarray, real_features: np.ndarray, resamples: int = FD_RESAMPLES,
              seed: int = 0) -> float:
    """Standard deviation of the FD over `resamples` bootstrap resamples of the generated set."""
    rng = np.random.default_rng(seed)
    values = [frechet_distance(features[rng.integers(0, len(features), len(features))], real_features)
              for _ in range(resamples)]
    return float(np.std(values, ddof=1))


def plus_minus(value: float, low: float, high: float, digits: int = 3) -> str:
    """'0.427 ± 0.020': the value and the half-width of its interval."""
    return f"{value:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def stratified_normal_interval(category_rates, per_category: int, level: float = 0.95) -> tuple[float, float]:
    """The normal approximation of `bootstrap_interval` from the categories' pass rates alone, for tables whose
    per-prompt judgements were not kept: ShapesEval overall is the mean of K independent binomial rates over
    `per_category` prompts each, so its variance is sum_c p_c (1 - p_c) / n / K^2 (clipped to [0, 1])."""
    from statistics import NormalDist

    rates = np.asarray(list(category_rates), dtype=float)
    mean = float(rates.mean())
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(np.sqrt(np.sum(rates * (1 - rates)) / per_category)) / len(rates)
    return max(0.0, mean - half), min(1.0, mean + half)
