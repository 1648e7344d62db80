"""Every shipped recipe resolves, and the baselines spend the same teacher evaluations as TSCD."""

from pathlib import Path

import pytest

from hypersd.train.recipe import load_recipe
from hypersd.train.run import estimate_teacher_evaluations

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


@pytest.mark.parametrize("name", ["sd15-hyper", "sdxl-hyper"])
def test_real_model_recipes(name, tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    """Mixed precision with a bf16 frozen base, checkpointing, no Shapes-only terms; placeholder reward
    paths stop the run at once, in one line, with nothing left behind."""
    import sys

    from hypersd import cli

    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    assert (recipe.training.mixed_precision, recipe.training.frozen_precision) == ("bf16", "auto")
    assert recipe.training.gradient_checkpointing and recipe.data.source != "shapes"
    assert all(st.feedback.perceptual_weight == 0 for st in recipe.stages if st.uses_feedback())
    assert [st.method for st in recipe.stages] == ["tscd"] * 4 + ["feedback", "dmd"]
    monkeypatch.setattr(sys, "argv", ["hypersd", "distill", "--recipe", str(CONFIGS / f"{name}.yaml"),
                                      "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and "reward laion-aesthetic" in err[0] and "not found" in err[0]
    assert not (tmp_path / "run").exists()
