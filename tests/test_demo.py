import json

from PIL import Image

from hypersd.report import run_demo


def test_demo_report_on_a_tiny_model(tiny_pipeline_dir, tiny_evaluator_dir, tmp_path):
    report = run_demo(tmp_path, n_prompts=12, n_real=24, model=tiny_pipeline_dir,
                      evaluator=tiny_evaluator_dir, steps=(1, 2, 50), log=lambda *_: None)
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
