"""Every shipped recipe resolves, and the baselines spend the same teacher evaluations as TSCD."""

from pathlib import Path

import pytest

from hypersd.distill.loop import estimate_teacher_evaluations
from hypersd.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_resolves(path):
    assert load_recipe(path).stages


def test_baselines_match_the_tscd_budget():
    budgets = {name: estimate_teacher_evaluations(load_recipe(CONFIGS / f"{name}.yaml"))
               for name in ("tscd", "lcm", "tcd")}
    assert budgets["lcm"] == budgets["tcd"] == budgets["tscd"], budgets
    lcm, tcd = load_recipe(CONFIGS / "lcm.yaml").stages, load_recipe(CONFIGS / "tcd.yaml").stages
    assert (lcm[0].segments, lcm[0].t_end, lcm[0].ema_decay) == (1, "edge", 0.0)
    assert (tcd[0].segments, tcd[0].t_end) == (1, "uniform")
