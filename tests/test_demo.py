import json

import pytest
from PIL import Image

from hypersd.assets import DEMO_RECIPE
from hypersd.embedded.demo import run_demo

TINY = ["data.pool_size=32", "training.batch_size=4", "training.checkpoint_every=2", "samples.prompts=4",
        "lora.rank=2", "lora.alpha=2"] + [f"stages.{i}.iterations=2" for i in range(4)]


def test_demo_report_on_a_tiny_model(tiny_pipeline_dir, tiny_evaluator_dir, tmp_path):
    report = run_demo(tmp_path, n_prompts=12, n_real=24, model=tiny_pipeline_dir,
                      evaluator=tiny_evaluator_dir, steps=(1, 2, 50), recipe=None, log=lambda *_: None)
    text = report.read_text()
    assert "| teacher DDIM @1 |" in text and "| teacher DDIM @50 |" in text
    assert "![metrics against steps](metrics.png)" in text
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["steps"] for r in summary["rows"]] == [1, 2, 50]
    assert summary["rows"][-1]["psnr_vs_teacher"] == 100.0
    grid = Image.open(tmp_path / "steps_comparison.png")
    assert grid.width == 8 * 128 and grid.height > 3 * 128
    for row in summary["rows"]:
        assert (tmp_path / row["samples"] / "grid.png").is_file()


@pytest.mark.slow  # the full-recipe test below covers the same rows (and more) in the default suite
def test_demo_distills_and_adds_the_lora_rows(tiny_pipeline_dir, tiny_evaluator_dir, tmp_path):
    from hypersd.assets import ROOT

    report = run_demo(tmp_path, n_prompts=8, n_real=16, model=tiny_pipeline_dir, evaluator=tiny_evaluator_dir,
                      steps=(1, 50), recipe=ROOT / "configs" / "demo-tscd.yaml", recipe_overrides=TINY,
                      log=lambda *_: None)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    labels = [r["label"] for r in summary["rows"]]
    assert labels == ["teacher DDIM @1", "teacher DDIM @50", "TSCD @1", "TSCD @2", "TSCD @4", "TSCD @8",
                      "TSCD stage k8 @8", "TSCD stage k4 @4", "TSCD stage k2 @2"]
    assert [r["steps"] for r in summary["rows"][2:]] == [1, 2, 4, 8, 8, 4, 2]
    assert sorted(summary["distill"]["stages"]) == ["k1", "k2", "k4", "k8"]
    assert (tmp_path / "tscd" / "loras" / "tscd-k1.safetensors").is_file()
    text = report.read_text()
    assert "| TSCD @4 |" in text and "demo-tscd.yaml" in text
    # distilled rows differ from the teacher at the same step count: the LoRA is applied
    by_label = {r["label"]: r for r in summary["rows"]}
    assert by_label["TSCD @1"]["psnr_vs_teacher"] != by_label["teacher DDIM @1"]["psnr_vs_teacher"]


def test_demo_with_the_full_recipe_adds_the_unified_rows(tiny_pipeline_dir, tiny_evaluator_dir, tmp_path):
    assert DEMO_RECIPE.name == "demo-hyper.yaml"  # `make demo` runs the full recipe
    overrides = TINY + ["stages.4.iterations=2", "stages.5.iterations=2", "stages.4.feedback.batch_size=2",
                        "stages.5.feedback.batch_size=2", "stages.5.dmd.fake_rank=2", "stages.4.feedback.rank=2"]
    run_demo(tmp_path, n_prompts=8, n_real=16, model=tiny_pipeline_dir, evaluator=tiny_evaluator_dir,
             steps=(1, 50), recipe=DEMO_RECIPE, recipe_overrides=overrides,
             log=lambda *_: None)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    unified = [r for r in summary["rows"] if r["label"].startswith("Hyper-SD unified")]
    assert [r["steps"] for r in unified] == [1, 2, 4, 8]
    assert all(r["scheduler"] == "tcd" and r["eta"] == 0.3 for r in unified)
    assert sorted(summary["distill"]["stages"]) == ["feedback", "k1", "k2", "k4", "k8", "unified"]
    labels = [r["label"] for r in summary["rows"]]
    assert labels[:9] == ["teacher DDIM @1", "teacher DDIM @50", "TSCD @1", "TSCD @2", "TSCD @4", "TSCD @8",
                          "TSCD stage k8 @8", "TSCD stage k4 @4", "TSCD stage k2 @2"]
    assert "TSCD + feedback @4" in labels
    assert (tmp_path / "tscd" / "loras" / "tscd-k1.safetensors").is_file()
    by_label = {r["label"]: r for r in summary["rows"]}  # the LoRA is applied: rows differ from the teacher
    assert by_label["TSCD @1"]["psnr_vs_teacher"] != by_label["teacher DDIM @1"]["psnr_vs_teacher"]
