import pytest

from hypersd.errors import UserError
from hypersd.train.recipe import Recipe, load_recipe


def test_defaults_are_the_four_stage_tscd():
    recipe = load_recipe(None)
    assert [s.segments for s in recipe.stages] == [8, 4, 2, 1]
    assert recipe.stages[0].t_end == "uniform" and recipe.stages[0].teacher == "original"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: short\nstages:\n  - {segments: 4, iterations: 5}\n  - {segments: 1, t_end: edge}\n"
                    "lora: {rank: 4}\n")
    recipe = load_recipe(path, ["stages.1.iterations=7", "training.batch_size=3", "stages.0.learning_rate=2e-4"])
    assert recipe.name == "short" and [s.segments for s in recipe.stages] == [4, 1]
    assert recipe.stages[0].iterations == 5 and recipe.stages[1].iterations == 7
    assert recipe.stages[1].t_end == "edge" and recipe.stages[0].learning_rate == 2e-4
    assert recipe.lora.rank == 4 and recipe.lora.alpha == 16.0 and recipe.training.batch_size == 3


def test_resolved_yaml_round_trips(tmp_path):
    recipe = load_recipe(None, ["stages.2.mse_weight=0.5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path) == recipe


@pytest.mark.parametrize("text,needle", [
    ("stages:\n  - {segmnts: 4}\n", "unknown key 'segmnts'"),
    ("stages:\n  - {segments: 0}\n", "stages[0]: segments must be >= 1"),
    ("stages:\n  - {t_end: sometimes}\n", "t_end must be uniform or edge"),
    ("stages:\n  - {iterations: ten}\n", "stages[0].iterations: expected int"),
    ("training: {mixed_precision: fp8}\n", "mixed_precision must be"),
    ("stages: []\n", "at least one stage"),
    ("- 1\n- 2\n", "mapping at the top level"),
    ("stages: [\n", "not valid YAML"),
    ("stages:\n  - {mse_weight: 0}\n", "at least one loss weight must be > 0"),
    ("stages:\n  - {method: dmd, mse_weight: 0, dmd: {dmd_weight: 0}}\n", "needs dmd.dmd_weight, dmd.regression_weight or mse_weight > 0"),
    ("stages:\n  - {method: dmd, dmd: {batch_size: -1}}\n", "batch_size must be >= 0"),
    ("stages:\n  - {method: dmd, dmd: {backward_simulation: [0, 2]}}\n", "backward_simulation lists step counts"),
    ("stages:\n  - {method: dmd, dmd: {backward_simulation: 4}}\n", "expected a list"),
    ("stages:\n  - {method: dmd, dmd: {gan_classifier_weight: 0.1}}\n", "needs both gan_weight"),
    ("stages:\n  - {method: dmd, dmd: {gan_weight: -1, gan_classifier_weight: 1}}\n", "must be >= 0"),
    ("training: {eval_every: -1}\n", "eval_every and save_lora_every must be >= 0"),
    ("training: {save_lora_every: -2}\n", "eval_every and save_lora_every must be >= 0"),
    ("stages:\n  - {method: dmd, dmd: {generator: full}}\n", "generator must be lora or unet"),
    ("stages:\n  - {method: dmd, huber_weight: 1.0}\n", "set huber_weight and adversarial_weight to 0"),
    ("stages:\n  - {method: dmd, mse_weight: 0, dmd: {generator: unet}}\n", "the unified model (generator_timestep 999) is a LoRA"),
    ("stages:\n  - {method: dmd, dmd: {generator: unet, generator_timestep: 800}}\n", "set mse_weight: 0"),
    ("stages:\n  - {method: dmd, mse_weight: 0, dmd: {generator: unet, generator_timestep: 800}}\n  - {segments: 1}\n",
     "must be the last stage"),
])
def test_bad_recipes_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=__import__("re").escape(needle)):
        load_recipe(path)


@pytest.mark.parametrize("override,needle", [
    ("stages.iterations=3", "name a list item by its index"),
    ("training.batch_size", "KEY=VALUE"),
    ("stages.9.iterations=3", "name a list item by its index"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(UserError, match=needle):
        load_recipe(None, [override])


def test_score_distillation_alone_needs_no_consistency_term(tmp_path):
    path = tmp_path / "dmd.yaml"
    path.write_text("stages:\n  - {method: dmd, segments: 1, mse_weight: 0}\n")
    assert load_recipe(path).stages[0].mse_weight == 0  # DMD alone (Table 5's first row)


def test_missing_file():
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_recipe_is_plain_data():
    assert "stages" in Recipe().to_yaml()
