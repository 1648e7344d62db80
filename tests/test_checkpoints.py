"""Crash-safe runs: numbered, verified checkpoints; resume with the run's own recipe; a run killed
anywhere (inside every step of a checkpoint write included) resumes to the same LoRA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypersd.cli import main
from hypersd.errors import UserError
from hypersd.train import checkpoint
from hypersd.train.checkpoint import candidates, latest_checkpoint, read_position
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run

RECIPE = ("name: crash\n"
          "stages:\n"
          "  - {segments: 2, iterations: 4, learning_rate: 1.0e-3, ema_decay: 0.5}\n"
          "  - {segments: 1, iterations: 4, learning_rate: 1.0e-3}\n"
          "lora: {rank: 2, alpha: 2, targets: [to_q, to_v]}\n"
          "data: {pool_size: 16}\n"
          "samples: {prompts: 2}\n"
          "training: {batch_size: 2, checkpoint_every: 2}\n")


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "crash.yaml"
    path.write_text(RECIPE)
    return path


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["hypersd", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


def final_lora(run: Path) -> dict:
    return load_file(run / "loras" / "tscd-k1.safetensors")


def test_checkpoints_are_numbered_verified_and_two_are_kept(tiny_pipeline_dir, recipe_file, tmp_path):
    Run(load_recipe(recipe_file), tiny_pipeline_dir, tmp_path / "run").train()
    names = [p.name for p in candidates(tmp_path / "run")]
    assert names == ["s01-0000004", "s01-0000002"]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "s01-0000004"
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "s01-0000004" / "manifest.json").read_text())
    assert {"adapters.safetensors", "optimizer-student.pt", "rng.safetensors", "state.json"} <= manifest["files"].keys()
    assert checkpoint.verify(tmp_path / "run" / "checkpoints" / "s01-0000004") is None


@pytest.mark.parametrize("damage", ["truncated adapters", "truncated optimizer", "invalid state.json", "missing rng"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(tiny_pipeline_dir, recipe_file, tmp_path, damage, capsys):
    recipe = load_recipe(recipe_file)
    Run(recipe, tiny_pipeline_dir, tmp_path / "whole").train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=7)  # checkpoints (1, 0) and (1, 2)
    newest = latest_checkpoint(tmp_path / "killed")
    assert {k: read_position(newest)[k] for k in ("stage", "step")} == {"stage": 1, "step": 2}
    file = {"truncated adapters": "adapters.safetensors", "truncated optimizer": "optimizer-student.pt",
            "invalid state.json": "state.json", "missing rng": "rng.safetensors"}[damage]
    if damage == "missing rng":
        (newest / file).unlink()
    elif damage == "invalid state.json":
        (newest / file).write_text("{not json")
    else:
        (newest / file).write_bytes((newest / file).read_bytes()[:100])
    warnings = []
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed", warn=warnings.append).train(resume=True)
    assert len(warnings) == 1 and "s01-0000002" in warnings[0] and "resuming from" in warnings[0]
    a, b = final_lora(tmp_path / "whole"), final_lora(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_usable_checkpoint_is_one_line(tiny_pipeline_dir, recipe_file, tmp_path, capsys, monkeypatch):
    Run(load_recipe(recipe_file), tiny_pipeline_dir, tmp_path / "run").train(stop_after=2)
    only = latest_checkpoint(tmp_path / "run")
    (only / "adapters.safetensors").write_bytes(b"")
    capsys.readouterr()  # the in-process run's own progress bars
    code, err = run_cli(["distill", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "run"), "--resume"],
                        capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "no usable checkpoint" in err and "adapters.safetensors" in err


def test_resume_without_recipe_uses_the_runs_own_and_refuses_another(tiny_pipeline_dir, recipe_file, tmp_path,
                                                                    capsys, monkeypatch):
    run = tmp_path / "run"
    base = ["distill", "--model", str(tiny_pipeline_dir), "--out", str(run)]
    Run(load_recipe(recipe_file), tiny_pipeline_dir, run).train(stop_after=3)
    stored = (run / "recipe.yaml").read_text()
    other = tmp_path / "other.yaml"
    other.write_text(RECIPE.replace("iterations: 4, learning_rate: 1.0e-3}", "iterations: 5, learning_rate: 1.0e-3}"))
    capsys.readouterr()
    code, err = run_cli([*base, "--resume", "--recipe", str(other)], capsys, monkeypatch)
    assert code == 2 and "differs at stages.1.iterations (4 in the run, 5 given)" in err and err.count("\n") == 1
    code, err = run_cli([*base, "--resume"], capsys, monkeypatch)
    assert code == 0, err
    assert (run / "recipe.yaml").read_text() == stored
    Run(load_recipe(recipe_file), tiny_pipeline_dir, tmp_path / "whole").train()
    a, b = final_lora(tmp_path / "whole"), final_lora(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((run / "metrics.json").read_text())["stages"]
    assert metrics["k2"]["steps"] == 4 and metrics["k1"]["steps"] == 4  # whole stages, not the steps since resume


def test_extend_to_trains_a_finished_run_on_to_the_lora_of_a_run_that_long_from_the_start(
        tiny_pipeline_dir, recipe_file, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    base = ["distill", "--model", str(tiny_pipeline_dir), "--out", str(run)]
    Run(load_recipe(recipe_file), tiny_pipeline_dir, run).train()  # finished: k1 ran its 4 iterations
    four = final_lora(run)
    capsys.readouterr()
    code, err = run_cli([*base, "--extend-to", "6"], capsys, monkeypatch)
    assert code == 2 and "pass --resume" in err and err.count("\n") == 1
    code, err = run_cli([*base, "--resume", "--extend-to", "3"], capsys, monkeypatch)
    assert code == 2 and "shorter than the run's last stage (4 iterations)" in err
    code, err = run_cli([*base, "--resume", "--extend-to", "6"], capsys, monkeypatch)
    assert code == 0, err
    assert load_recipe(run / "recipe.yaml").stages[1].iterations == 6
    longer = tmp_path / "longer.yaml"
    longer.write_text(RECIPE.replace("{segments: 1, iterations: 4,", "{segments: 1, iterations: 6,"))
    Run(load_recipe(longer), tiny_pipeline_dir, tmp_path / "whole").train()
    a, b = final_lora(tmp_path / "whole"), final_lora(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], four[k]) for k in a)  # it did train on
    assert json.loads((run / "metrics.json").read_text())["stages"]["k1"]["steps"] == 6


def test_resume_with_nothing_to_resume_writes_nothing(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    code, err = run_cli(["distill", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "run"), "--resume"],
                        capsys, monkeypatch)
    assert code == 2 and "nothing to resume" in err and not (tmp_path / "run").exists()


def test_nan_before_any_checkpoint_says_so(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch):
    from hypersd.train.objectives.tscd import TSCD

    original = TSCD.losses
    monkeypatch.setattr(TSCD, "losses", lambda self, *a: {**original(self, *a),
                                                          "loss": original(self, *a)["loss"] * float("nan")})
    with pytest.raises(UserError, match="no checkpoint was written yet"):
        Run(load_recipe(recipe_file), tiny_pipeline_dir, tmp_path / "nan").train()
    assert not (tmp_path / "nan").exists()  # a new run that failed before its first checkpoint leaves nothing


# ------------------------------------------------------------------------------------ kill anywhere
KILLER = '''
import os, signal, sys
import hypersd.train.checkpoint as checkpoint
calls, target = [0], int(sys.argv.pop(1))

def hook(point):
    calls[0] += 1
    if calls[0] == target:
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint.fault_hook = hook
from hypersd.cli import main
sys.argv = ["hypersd", *sys.argv[1:]]
main()
'''


def _distill(script: Path, kill_at: int, model: Path, recipe: Path, out: Path, resume: bool = False):
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(script), str(kill_at), "distill", "--model", str(model), "--out", str(out)]
    args += ["--resume"] if resume else ["--recipe", str(recipe)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def _fault_points(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch) -> tuple[int, dict]:
    """How many fault points an uninterrupted run passes, and its final LoRA."""
    seen = []
    monkeypatch.setattr(checkpoint, "fault_hook", seen.append)
    Run(load_recipe(recipe_file), tiny_pipeline_dir, tmp_path / "whole").train()
    monkeypatch.setattr(checkpoint, "fault_hook", None)
    assert seen.count("step") == 8 and seen.count("published") == 5
    return len(seen), final_lora(tmp_path / "whole")


def _kill_and_resume(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch, kills: int):
    total, whole = _fault_points(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    moments = sorted({round(1 + i * (total - 1) / (kills - 1)) for i in range(kills)})
    assert len(moments) == kills
    resumed = 0
    for moment in moments:
        out = tmp_path / f"killed-{moment}"
        killed = _distill(script, moment, tiny_pipeline_dir, recipe_file, out)
        assert killed.returncode == -9, killed.stderr[-2000:]
        again = _distill(script, 0, tiny_pipeline_dir, recipe_file, out, resume=checkpoint.has_checkpoint(out))
        assert again.returncode == 0, (moment, again.stderr[-2000:])
        lora = final_lora(out)
        assert lora.keys() == whole.keys() and all(torch.equal(lora[k], whole[k]) for k in whole), moment
        resumed += checkpoint.has_checkpoint(out)
    return resumed


def test_a_run_killed_at_3_moments_resumes_to_the_same_lora(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch):
    """The first fault point, one in the middle of the run and the last; 20 moments: the slow test below."""
    assert _kill_and_resume(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch, kills=3) >= 2


@pytest.mark.slow
def test_a_run_killed_at_20_moments_resumes_to_the_same_lora(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch):
    """20 moments spread over all the run's fault points: between steps and inside every step of a
    checkpoint write (files, manifest, flush, rename, publish, prune)."""
    assert _kill_and_resume(tiny_pipeline_dir, recipe_file, tmp_path, monkeypatch, kills=20) >= 18
