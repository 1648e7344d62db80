"""A distilled full UNet as one file (hypersd.inference.unet_file, `hypersd unet export`): export with its
settings in the metadata, `generate --unet` reading them, the app's and the demo's one-step model as a UNet."""

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hypersd.app.service import AppService, offered_models
from hypersd.cli import main
from hypersd.embedded.rows import shipped_rows
from hypersd.errors import UserError
from hypersd.inference.sample import generate
from hypersd.inference.unet_file import export_unet, is_unet_file, unet_file_settings
from hypersd.models.pipelines import INFERENCE_FILE, load_pipeline, with_unet_file

ONE_STEP = {"scheduler": "lcm", "steps": 1, "timesteps": [800], "guidance": 0.0}


@pytest.fixture(scope="module")
def one_step_folder(tiny_pipeline_dir, tmp_path_factory):
    """The tiny pipeline with changed UNet weights and one-step settings: a full-UNet run's output."""
    pipe = load_pipeline(tiny_pipeline_dir)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.mul_(1.05)
    folder = tmp_path_factory.mktemp("one-step") / "one-step-t800-unet"
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / INFERENCE_FILE).write_text(json.dumps(ONE_STEP))
    return folder


def test_export_keeps_weights_and_settings(one_step_folder, tmp_path):
    out = export_unet(one_step_folder, tmp_path / "x-1step-unet.safetensors", "fp16")
    source = load_file(str(one_step_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    written = load_file(str(out))
    assert set(written) == set(source) and all(t.dtype == torch.float16 for t in written.values())
    assert torch.equal(written["conv_in.weight"], source["conv_in.weight"].half())
    assert is_unet_file(out) and unet_file_settings(out) == ONE_STEP
    export_unet(one_step_folder, out, "fp32")  # its own file may be replaced
    assert load_file(str(out))["conv_in.weight"].dtype == torch.float32
    weights = one_step_folder / "unet" / "diffusion_pytorch_model.safetensors"  # a bare weight file: no settings
    assert unet_file_settings(export_unet(weights, tmp_path / "bare.safetensors")) == {}
    assert unet_file_settings(export_unet(weights, tmp_path / "b.safetensors", settings_from=one_step_folder)) == ONE_STEP


def test_export_refuses_foreign_files_and_a_lora_is_no_unet(one_step_folder, tmp_path):
    foreign = tmp_path / "mine.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(UserError, match="hypersd did not write it"):
        export_unet(one_step_folder, foreign)
    assert not is_unet_file(foreign) and load_file(str(foreign))  # untouched
    with pytest.raises(UserError, match="no UNet weights in"):
        export_unet(tmp_path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_generate_reads_the_files_settings_and_weights(tiny_pipeline_dir, one_step_folder, tmp_path, monkeypatch,
                                                       capsys):
    unet = export_unet(one_step_folder, tmp_path / "model.safetensors", "fp32")  # no convention in the name
    monkeypatch.setattr(sys, "argv", ["hypersd", "generate", "a red circle", "--base", str(tiny_pipeline_dir),
                                      "--unet", str(unet), "--out", str(tmp_path / "g")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "g" / "samples.jsonl").read_text().splitlines()[0])
    assert (record["scheduler"], record["steps"], record["timesteps"]) == ("lcm", 1, [800])


def test_app_and_demo_use_a_unet_one_step_model(tiny_pipeline_dir, one_step_folder, tmp_path):
    unet = export_unet(one_step_folder, tmp_path / "model.safetensors", "fp32")
    models = offered_models(unet, None, 5.0)
    choice = models[0]
    assert choice.unet == unet and choice.loras == [] and choice.fixed_steps == 1
    settings = choice.settings(4, None)
    assert (settings.scheduler, settings.steps, settings.timesteps) == ("lcm", 1, [800])
    service = AppService(tiny_pipeline_dir, models)
    [(image, _)] = service.text_to_image("a red circle", choice.label, 4, None, 3, 1)
    base = load_pipeline(tiny_pipeline_dir)
    expected = generate(with_unet_file(base, unet), ["a red circle"], settings, [3])[0]
    plain = generate(base, ["a red circle"], settings, [3])[0]
    assert np.array_equal(image, expected) and not np.array_equal(image, plain)
    [row] = shipped_rows(unet, tmp_path / "absent.safetensors")
    assert row.unet == unet and row.settings.timesteps == [800] and row.settings.loras == []
