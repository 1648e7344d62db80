import json

import numpy as np
from PIL import Image

from hypersd.embedded.evaluator.evaluate import Row, evaluate
from hypersd.inference.settings import SampleSettings

PROMPTS = ["a red circle", "two blue squares", "a green cross in the center",
           "a red circle and a blue square", "a cyan cross above a red square", "a yellow circle and a purple circle"]


def test_eval_writes_tables_plots_and_samples(tiny_pipeline_dir, tiny_evaluator_dir, tmp_path):
    rows = [Row(f"tiny @{s}", SampleSettings(steps=s, scheduler="ddim", guidance=5.0)) for s in (1, 50)]
    summary = evaluate(tiny_pipeline_dir, rows, PROMPTS, tiny_evaluator_dir, tmp_path, n_real=30,
                       log=lambda *_: None)
    one, fifty = summary["rows"]
    # the 50-step DDIM row at the teacher's guidance *is* the reference: PSNR capped at 100 (identical)
    assert fifty["psnr_vs_teacher"] == 100.0
    assert one["psnr_vs_teacher"] < 60
    assert np.isfinite(one["fd"]) and one["fd"] > 0
    assert set(one["shapes_eval"]) >= {"single", "counting", "overall"}
    for name in ("metrics.json", "metrics.md", "metrics.png", "reference.npz"):
        assert (tmp_path / name).is_file()
    lines = (tmp_path / one["samples"] / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    assert record["prompt"] == PROMPTS[2] and record["seed"] == 2 and record["steps"] == 1
    assert Image.open(tmp_path / one["samples"] / record["file"]).size == (32, 32)
    assert "| tiny @1 |" in (tmp_path / "metrics.md").read_text()


def test_a_row_can_sample_another_model_folder_against_the_same_reference(tiny_pipeline_dir, tiny_evaluator_dir,
                                                                           tmp_path):
    """A distilled full UNet is a pipeline folder of its own: its row samples it, and its PSNR is
    measured against the evaluated teacher's 50-step reference (same settings, other weights: < 100 dB)."""
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    other = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, other)
    unet = UNet2DConditionModel.from_pretrained(other / "unet")
    with torch.no_grad():
        unet.conv_out.bias.add_(0.3)
    unet.save_pretrained(other / "unet")
    fifty = SampleSettings(steps=50, scheduler="ddim", guidance=5.0)
    summary = evaluate(tiny_pipeline_dir, [Row("same weights elsewhere", fifty, model=other)], PROMPTS[:2],
                       tiny_evaluator_dir, tmp_path / "eval", n_real=20, log=lambda *_: None)
    row = summary["rows"][0]
    assert row["model"] == str(other) and row["psnr_vs_teacher"] < 60
