"""The released Hyper-SD files' sampling conventions, from their names."""

import numpy as np
import pytest
from PIL import Image

from hypersd.inference.conventions import released_settings


@pytest.mark.parametrize("name,expected", [
    ("Hyper-SD15-8steps-lora.safetensors", {"scheduler": "ddim-trailing", "steps": 8, "guidance": 0.0}),
    ("Hyper-SDXL-2steps-lora.safetensors", {"scheduler": "ddim-trailing", "steps": 2, "guidance": 0.0}),
    ("Hyper-SD15-12steps-CFG-lora.safetensors", {"scheduler": "ddim-trailing", "steps": 12, "guidance": 5.0}),
    ("Hyper-SD15-1step-lora.safetensors", {"scheduler": "tcd", "steps": 1, "eta": 1.0, "guidance": 0.0}),
    ("Hyper-SDXL-1step-Unet-Comfyui.fp16.safetensors",
     {"scheduler": "lcm", "steps": 1, "timesteps": [800], "guidance": 0.0}),
    ("my-style-lora.safetensors", {}),
    ("lcm-4steps.safetensors", {}),  # not a Hyper-SD file: no guess
])
def test_released_file_names(name, expected):
    assert released_settings(name) == expected


def test_released_names_tell_the_guidance_mode(tmp_path):
    import torch
    from safetensors.torch import save_file

    from hypersd.inference.settings import lora_guidance_mode

    for name, mode in (("Hyper-SD15-8steps-CFG-lora.safetensors", "preserved"),
                       ("Hyper-SDXL-4steps-lora.safetensors", "folded"), ("mine.safetensors", None)):
        path = tmp_path / name
        save_file({"x": torch.zeros(1)}, path)  # no settings in its metadata: the name decides
        assert lora_guidance_mode(path) == mode


def test_sample_uses_the_convention_when_the_file_has_no_settings(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from hypersd.inference.settings import resolve_settings
    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import LoraSpec, save_lora

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q"])
    plain = save_lora(tmp_path / "Hyper-SD15-4steps-lora.safetensors", pipe.unet, "student")
    given = {"steps": None, "scheduler": None, "guidance": None, "eta": None, "timesteps": None}
    chosen = resolve_settings(given, [LoraSpec(plain)])
    assert (chosen["scheduler"], chosen["steps"], chosen["guidance"]) == ("ddim-trailing", 4, 0.0)
    stored = save_lora(tmp_path / "Hyper-SD15-1step-lora.safetensors", pipe.unet, "student",
                       inference={"scheduler": "tcd", "steps": 2, "eta": 0.3})
    assert resolve_settings(given, [LoraSpec(stored)])["eta"] == 0.3  # metadata wins over the name


def test_generate_with_a_released_style_one_step_unet_file(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import json
    import sys

    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from hypersd.cli import main

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    with torch.no_grad():
        unet.conv_out.bias.add_(0.5)
    weights = tmp_path / "Hyper-SD15-1step-Unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(weights))

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["hypersd", "generate", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code or 0, capsys.readouterr()

    code, printed = cli("a red circle", "--base", tiny_pipeline_dir, "--unet", weights, "--out", tmp_path / "a")
    assert code == 0, printed.err
    record = json.loads((tmp_path / "a" / "samples.jsonl").read_text().splitlines()[0])
    assert (record["scheduler"], record["steps"], record["timesteps"]) == ("lcm", 1, [800])
    untouched = tmp_path / "base" / weights.name  # same name and settings, the base's own weights
    untouched.parent.mkdir()
    save_file(UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet").state_dict(), str(untouched))
    code, _ = cli("a red circle", "--base", tiny_pipeline_dir, "--unet", untouched, "--out", tmp_path / "b")
    with_unet = np.asarray(Image.open(tmp_path / "a" / record["file"]), dtype=int)
    base = np.asarray(Image.open(tmp_path / "b" / record["file"]), dtype=int)
    assert code == 0 and abs(with_unet - base).max() > 8  # the file's weights were used
    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    code, printed = cli("x", "--base", tiny_pipeline_dir, "--unet", tmp_path / "wrong.safetensors", "--out", tmp_path / "c")
    assert code == 2 and "does not fit this model" in printed.err and "Traceback" not in printed.err
