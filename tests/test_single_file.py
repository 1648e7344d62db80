"""Single-file checkpoints (the original Stable Diffusion layout of one .safetensors file): loaded
through diffusers' from_single_file with a local config folder, equal to the folder they came from,
and usable by distill and generate; one-line errors when the configs are missing."""

import sys

import numpy as np
import pytest
import torch
from ldm_layout import to_ldm_checkpoint
from safetensors.torch import save_file

from hypersd import cli
from hypersd.models.pipelines import load_pipeline


@pytest.fixture(scope="module")
def single_file(tiny_pipeline_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "tiny-sd.safetensors"
    save_file(to_ldm_checkpoint(load_pipeline(tiny_pipeline_dir)), str(path))
    return path


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_single_file_loads_the_same_weights_as_its_folder(arch, tiny_pipeline_dir, tiny_sdxl_dir, tmp_path):
    """SD1.x in the LDM layout; SDXL in the SGM layout (its second text encoder in OpenCLIP's)."""
    model_dir = tiny_pipeline_dir if arch == "sd15" else tiny_sdxl_dir
    folder = load_pipeline(model_dir)
    save_file(to_ldm_checkpoint(folder), str(tmp_path / "model.safetensors"))
    single = load_pipeline(tmp_path / "model.safetensors", model_config=model_dir)
    assert type(single) is type(folder)
    names = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if arch == "sdxl" else ())
    for name in names:
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key].reshape(a[key].shape), a[key], rtol=0, atol=0)


def _cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["hypersd", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return done.value.code or 0


def test_generate_and_distill_take_a_single_file(single_file, tiny_pipeline_dir, tmp_path, monkeypatch):
    from PIL import Image

    args = ["generate", "a red circle", "--steps", "2", "--scheduler", "ddim-trailing"]
    assert _cli(monkeypatch, "--model-config", tiny_pipeline_dir, *args, "--base", single_file,
                "--out", tmp_path / "a") == 0
    assert _cli(monkeypatch, *args, "--base", tiny_pipeline_dir, "--out", tmp_path / "b") == 0
    a, b = (np.asarray(Image.open(tmp_path / x / "000000.png")) for x in "ab")
    assert np.array_equal(a, b)
    assert _cli(monkeypatch, "--model-config", tiny_pipeline_dir, "distill", "--model", single_file,
                "--out", tmp_path / "run", "--set", "stages=[{segments: 2, iterations: 2}]",
                "--set", "training.batch_size=2", "--set", "data.pool_size=4", "--set", "samples.prompts=0") == 0
    assert (tmp_path / "run" / "loras" / "tscd-k2.safetensors").is_file()


def test_single_file_without_configs_is_one_line(single_file, tmp_path, capsys, monkeypatch):
    assert _cli(monkeypatch, "generate", "a red circle", "--base", single_file, "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model-config" in err[0]
    assert _cli(monkeypatch, "--model-config", tmp_path, "distill", "--model", tmp_path / "none.safetensors",
                "--out", tmp_path / "y") == 2
    assert "model checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_a_unet_file_in_the_original_layout_loads_like_its_diffusers_weights(prefix, tiny_pipeline_dir, tmp_path):
    """The release's ComfyUI one-step UNet is in the original layout (with or without the checkpoint
    prefix): `--unet` converts it through diffusers and gets exactly the same weights."""
    from ldm_layout import to_ldm_checkpoint

    from hypersd.models.pipelines import load_unet_file

    source = load_pipeline(tiny_pipeline_dir)
    with torch.no_grad():
        source.unet.conv_out.bias.add_(0.5)  # differs from the base it is loaded into
    unet_only = {k[len("model.diffusion_model."):]: v for k, v in to_ldm_checkpoint(source).items()
                 if k.startswith("model.diffusion_model.")}
    save_file({prefix + k: v for k, v in unet_only.items()}, str(tmp_path / "unet-comfyui.safetensors"))
    target = load_pipeline(tiny_pipeline_dir)
    load_unet_file(target, tmp_path / "unet-comfyui.safetensors")
    expected = source.unet.state_dict()
    for key, value in target.unet.state_dict().items():
        torch.testing.assert_close(value, expected[key].reshape(value.shape), rtol=0, atol=0)
