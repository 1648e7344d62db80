"""Negative prompts and recommended settings at inference (issue 16): a CFG-preserved LoRA takes a
negative prompt (command line or .jsonl), which reaches the pipeline and is recorded; a folded one at
guidance 0 refuses it with the reason; a model folder's own settings, else its pipeline's defaults."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from hypersd.inference.prompts import read_prompt_records
from hypersd.inference.settings import pipeline_defaults, resolve_settings
from hypersd.lora.adapters import STUDENT, add_lora
from hypersd.lora.files import LoraSpec, save_lora

PRESERVED = {"scheduler": "ddim-trailing", "steps": 2, "guidance": 5.0, "eta": 0.0, "guidance_mode": "preserved"}
FOLDED = {"scheduler": "ddim-trailing", "steps": 2, "guidance": 0.0, "eta": 0.0, "guidance_mode": "folded"}


@pytest.fixture(scope="module")
def loras(tiny_pipeline_dir, tmp_path_factory):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cfg-loras")
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    add_lora(unet, 2, 2, ["to_q", "to_v"], name=STUDENT)
    return {"preserved": save_lora(folder / "preserved.safetensors", unet, STUDENT, inference=PRESERVED),
            "folded": save_lora(folder / "folded.safetensors", unet, STUDENT, inference=FOLDED)}


def run(monkeypatch, capsys, *args):
    from hypersd.cli import main

    monkeypatch.setattr(sys, "argv", ["hypersd", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code or 0, capsys.readouterr().err


def _images(folder):
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return np.stack([np.asarray(Image.open(folder / r["file"]), dtype=int) for r in records]), records


def test_negative_prompt_changes_a_preserved_loras_images_from_the_same_noise(tiny_pipeline_dir, loras, tmp_path,
                                                                               monkeypatch, capsys):
    common = ["sample", "--model", tiny_pipeline_dir, "--lora", loras["preserved"], "--prompt", "a red circle",
              "--prompt", "a blue square"]
    assert run(monkeypatch, capsys, *common, "--out", tmp_path / "plain")[0] == 0
    assert run(monkeypatch, capsys, *common, "--negative-prompt", "a large red circle", "--out", tmp_path / "neg")[0] == 0
    plain, plain_records = _images(tmp_path / "plain")
    neg, neg_records = _images(tmp_path / "neg")
    assert np.abs(plain - neg).mean() > 0.5
    assert "negative_prompt" not in plain_records[0] and plain_records[0]["guidance"] == 5.0
    assert [r["negative_prompt"] for r in neg_records] == ["a large red circle"] * 2


def test_jsonl_negative_prompts_are_per_line(tiny_pipeline_dir, loras, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red circle", "negative_prompt": "a small red circle"}\n'
                       '{"prompt": "a blue square"}\n')
    assert read_prompt_records(prompts) == [("a red circle", "a small red circle"), ("a blue square", None)]
    code, _ = run(monkeypatch, capsys, "sample", "--model", tiny_pipeline_dir, "--lora", loras["preserved"],
                  "--prompts", prompts, "--out", tmp_path / "out")
    assert code == 0
    records = _images(tmp_path / "out")[1]
    assert records[0]["negative_prompt"] == "a small red circle" and "negative_prompt" not in records[1]


def test_a_folded_lora_at_guidance_zero_refuses_a_negative_prompt(tiny_pipeline_dir, loras, tmp_path, monkeypatch,
                                                                  capsys):
    for command in (["sample", "--model", tiny_pipeline_dir, "--prompt", "a red circle"],
                    ["generate", "a red circle", "--base", tiny_pipeline_dir]):
        code, err = run(monkeypatch, capsys, *command, "--lora", loras["folded"], "--negative-prompt", "a blue square",
                        "--out", tmp_path / "never")
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "folded.safetensors folds guidance into the model" in err and "would be ignored" in err
    assert not (tmp_path / "never").exists()


def test_a_bad_negative_prompt_field_is_one_clear_error(tmp_path):
    from hypersd.errors import UserError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a red circle", "negative_prompt": 3}\n')
    with pytest.raises(UserError, match="bad.jsonl:1: 'negative_prompt' must be a string"):
        read_prompt_records(bad)


def test_model_folder_settings_else_the_pipelines_defaults(tiny_pipeline_dir, tiny_sdxl_dir, loras):
    from hypersd.assets import TEACHER
    from hypersd.lora.files import copy_lora

    assert resolve_settings({}, [], TEACHER) == {"steps": 50, "scheduler": "ddim", "guidance": 5.0, "eta": None,
                                                      "timesteps": None}
    assert pipeline_defaults(tiny_pipeline_dir) == {"scheduler": "default", "steps": 50, "guidance": 7.5}
    assert pipeline_defaults(tiny_sdxl_dir)["guidance"] == 5.0  # StableDiffusionXLPipeline's own default
    assert resolve_settings({"steps": 8}, [], tiny_pipeline_dir)["steps"] == 8
    bare = loras["folded"].with_name("bare.safetensors")
    copy_lora(loras["folded"], bare)
    _strip_settings(bare)
    lora_only = resolve_settings({}, [LoraSpec(bare)], tiny_pipeline_dir)
    assert lora_only["scheduler"] == "ddim-trailing" and lora_only["guidance"] == 0.0  # a distilled LoRA's defaults


def _strip_settings(path):
    from safetensors.torch import load_file, save_file

    from hypersd.lora.files import INFERENCE_KEY, read_metadata

    meta = {k: v for k, v in read_metadata(path).items() if k != INFERENCE_KEY}
    save_file(load_file(path), path, metadata=meta)
