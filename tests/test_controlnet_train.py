"""Training the scribble ControlNet (hypersd.embedded.controlnet_train) on a tiny teacher: a diffusers
folder that fits the teacher, maps prepared like a user's drawing, exact resume."""

import random

import torch
from safetensors.torch import load_file

from hypersd.embedded.controlnet_train import FOLDER, ControlNetTrainConfig, control_images, train_controlnet
from hypersd.shapes.world import sample_scene


def test_control_maps_are_binary_strokes_at_the_generation_size():
    rng = random.Random(0)
    maps = control_images([sample_scene(rng) for _ in range(4)], rng, 32, 256)
    assert maps.shape == (4, 3, 32, 32) and set(maps.unique().tolist()) <= {0.0, 1.0}
    assert all(0 < m.mean() < 0.5 for m in maps)  # strokes, not blank, not filled


def test_trains_a_fitting_controlnet_and_resumes_exactly(tiny_pipeline_dir, tmp_path):
    from hypersd.inference.controlnet import check_fits, load_controlnet
    from hypersd.models.pipelines import load_pipeline

    cfg = ControlNetTrainConfig(steps=3, batch=2, checkpoint_every=1, learning_rate=1e-3)
    whole = train_controlnet(tiny_pipeline_dir, tmp_path / "whole", cfg, log=lambda *_: None)
    controlnet = load_controlnet(whole)
    check_fits(controlnet, load_pipeline(tiny_pipeline_dir).unet, whole)
    weights = load_file(whole / "diffusion_pytorch_model.safetensors")
    assert weights["controlnet_mid_block.weight"].abs().sum() > 0  # the zero convolutions learned
    short = ControlNetTrainConfig(steps=2, batch=2, checkpoint_every=1, learning_rate=1e-3)
    train_controlnet(tiny_pipeline_dir, tmp_path / "killed", short, log=lambda *_: None)
    resumed = train_controlnet(tiny_pipeline_dir, tmp_path / "killed", cfg, resume=True, log=lambda *_: None)
    again = load_file(resumed / "diffusion_pytorch_model.safetensors")
    for key, value in weights.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0)
    assert (tmp_path / "whole" / FOLDER / "config.json").is_file()


def test_controlnet_train_command(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import sys

    import pytest

    from hypersd.cli import main

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["hypersd", "controlnet", "train", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code or 0, capsys.readouterr()

    code, printed = cli("--model", tiny_pipeline_dir, "--steps", 1, "--batch", 2, "--out", tmp_path / "run")
    assert code == 0 and (tmp_path / "run" / FOLDER / "config.json").is_file(), printed.err
    code, printed = cli("--model", tiny_pipeline_dir, "--steps", 1, "--out", tmp_path / "run")
    assert code == 2 and "already holds a run" in printed.err
    code, printed = cli("--control", "canny", "--out", tmp_path / "other")
    assert code == 2 and "--control must be scribble" in printed.err and "Traceback" not in printed.err
