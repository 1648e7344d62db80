"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing half-written."""

import sys

import pytest

from hypersd.cli import main


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hypersd", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def assert_one_line_error(code, err, needle):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


@pytest.fixture
def sample_args(tiny_pipeline_dir, tmp_path):
    return ["sample", "--model", str(tiny_pipeline_dir), "--prompt", "a red circle", "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("extra,needle", [
    (["--steps", "0"], "steps must be a positive integer"),
    (["--steps", "-3"], "steps must be a positive integer"),
    (["--eta", "1.5"], "eta must be in [0, 1]"),
    (["--eta", "-0.1"], "eta must be in [0, 1]"),
    (["--scheduler", "heun2"], "unknown scheduler 'heun2'"),
    (["--lora", "/nonexistent/x.safetensors"], "LoRA file not found"),
    (["--timesteps", "800,abc"], "--timesteps must be comma-separated integers"),
])
def test_bad_sampling_options(sample_args, extra, needle, capsys, monkeypatch, tmp_path):
    code, err = run_cli(sample_args + extra, capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_missing_model_folder(capsys, monkeypatch, tmp_path):
    code, err = run_cli(["sample", "--model", str(tmp_path / "nope"), "--prompt", "x",
                         "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert_one_line_error(code, err, "model folder not found")
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_a_pipeline(capsys, monkeypatch, tmp_path):
    code, err = run_cli(["sample", "--model", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o")],
                        capsys, monkeypatch)
    assert_one_line_error(code, err, "not a diffusers pipeline folder")


def test_malformed_lora_file(sample_args, capsys, monkeypatch, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 this is not safetensors")
    code, err = run_cli(sample_args + ["--lora", str(bad)], capsys, monkeypatch)
    assert_one_line_error(code, err, "cannot load LoRA")
    assert not (tmp_path / "out").exists()


def test_unparsable_prompt_file(tiny_pipeline_dir, capsys, monkeypatch, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("{oops\n")
    code, err = run_cli(["sample", "--model", str(tiny_pipeline_dir), "--prompts", str(prompts),
                         "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert_one_line_error(code, err, "expected a JSON object with a 'prompt' field")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder(sample_args, capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should go")
    args = sample_args[:-1] + [str(blocker / "out")]
    code, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, "cannot write output folder")


def test_eval_refuses_non_shapes_prompts(tiny_pipeline_dir, tiny_evaluator_dir, capsys, monkeypatch, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a cat\n")
    code, err = run_cli(["eval", "--model", str(tiny_pipeline_dir), "--prompts", str(prompts),
                         "--evaluator", str(tiny_evaluator_dir), "--out", str(tmp_path / "e")],
                        capsys, monkeypatch)
    assert_one_line_error(code, err, "ShapesEval needs Shapes-world prompts")


def test_eval_bad_steps(capsys, monkeypatch, tmp_path):
    code, err = run_cli(["eval", "--steps", "1,x", "--out", str(tmp_path / "e")], capsys, monkeypatch)
    assert_one_line_error(code, err, "--steps must be comma-separated integers")


@pytest.mark.parametrize("extra,needle", [
    (["--unet-steps", "0"], "step counts must be positive"),
    (["--unet-lr", "0"], "--unet-lr must be > 0"),
    (["--unet-stop-at", "0"], "--unet-stop-at must be positive"),
])
def test_bad_pretrain_options(extra, needle, capsys, monkeypatch, tmp_path):
    code, err = run_cli(["pretrain", "--out", str(tmp_path / "m"), *extra], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "m").exists()


def test_distill_dry_run_prints_the_resolved_recipe(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hypersd", "distill", "--recipe", "configs/tscd.yaml", "--dry-run",
                                      "--set", "stages.1.t_end=edge"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)
    import yaml

    resolved = yaml.safe_load(capsys.readouterr().out)
    assert [s["segments"] for s in resolved["stages"]] == [8, 4, 2, 1]
    assert resolved["stages"][1]["t_end"] == "edge" and resolved["stages"][0]["t_end"] == "uniform"


@pytest.mark.parametrize("extra,needle", [
    (["--set", "stages.0.segmnts=3"], "unknown key 'segmnts'"),
    (["--set", "stages.0.teacher=mine"], "teacher must be original or previous"),
    (["--model", "/nonexistent/model"], "model folder not found"),
])
def test_bad_distill_options(extra, needle, capsys, monkeypatch, tmp_path, tiny_pipeline_dir):
    args = ["distill", "--out", str(tmp_path / "run"), "--set", "data.pool_size=8"]
    if "--model" not in extra:
        args += ["--model", str(tiny_pipeline_dir)]
    code, err = run_cli(args + extra, capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run" / "loras").exists()


def test_pickle_weights_are_refused_without_the_flag(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from diffusers import UNet2DConditionModel

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline_dir, folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=False)  # diffusion_pytorch_model.bin
    args = ["sample", "--model", str(folder), "--prompt", "a red circle", "--steps", "1", "--out", str(tmp_path / "o")]
    code, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, "pickle checkpoints are refused")
    code, _ = run_cli(["--allow-pickle", *args], capsys, monkeypatch)
    assert code in (0, None) and (tmp_path / "o" / "grid.png").is_file()
