"""Outputs are written whole or not at all, never over what the project did not make, and every
fault or bad input ends in one `error:` line and exit status 2 (issue: crash-safe runs)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from hypersd.cli import main
from hypersd.io import OUTPUT_MARK, atomic_dir, folder_lock, save_tensors


def run_cli(args, capsys, monkeypatch, cwd: Path | None = None):
    monkeypatch.setattr("sys.argv", ["hypersd", *args])
    if cwd is not None:
        monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code, err, needle):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def no_temporaries(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob("*") if ".tmp" in p.name or ".old-" in p.name]


@pytest.fixture
def users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    return folder


def _sample(tiny_pipeline_dir, out, *extra):
    return ["sample", "--model", str(tiny_pipeline_dir), "--prompt", "a red circle", "--steps", "1",
            "--out", str(out), *extra]


def test_sample_refuses_a_folder_it_did_not_write_and_replaces_it_when_asked(tiny_pipeline_dir, users_folder,
                                                                              capsys, monkeypatch):
    code, err = run_cli(_sample(tiny_pipeline_dir, users_folder), capsys, monkeypatch)
    assert_one_line_error(code, err, "holds files hypersd did not write; pass --overwrite")
    assert (users_folder / "notes.txt").read_text() == "my notes"
    code, _ = run_cli(_sample(tiny_pipeline_dir, users_folder, "--overwrite"), capsys, monkeypatch)
    assert code in (0, None) and (users_folder / "grid.png").is_file() and (users_folder / OUTPUT_MARK).is_file()
    code, _ = run_cli(_sample(tiny_pipeline_dir, users_folder), capsys, monkeypatch)  # its own output now
    assert code in (0, None) and not (users_folder / "notes.txt").exists() and no_temporaries(users_folder.parent)


@pytest.mark.parametrize("where", [".", "..", "~", "/"])
def test_the_working_folder_its_parents_home_and_root_are_never_replaced(tiny_pipeline_dir, tmp_path, where,
                                                                         capsys, monkeypatch):
    sub = tmp_path / "work" / "sub"
    sub.mkdir(parents=True)
    (sub / "keep.txt").write_text("x")
    (tmp_path / "work" / "keep.txt").write_text("y")
    code, err = run_cli(_sample(tiny_pipeline_dir, Path(where).expanduser(), "--overwrite"), capsys, monkeypatch,
                        cwd=sub)
    assert_one_line_error(code, err, "refusing to replace")
    assert (sub / "keep.txt").is_file() and (tmp_path / "work" / "keep.txt").is_file()


def test_data_shapes_and_lora_fuse_refuse_a_users_folder(users_folder, tiny_pipeline_dir, tmp_path, capsys,
                                                         monkeypatch):
    code, err = run_cli(["data", "shapes", "--n", "2", "--out", str(users_folder)], capsys, monkeypatch)
    assert_one_line_error(code, err, "pass --overwrite")
    lora = _lora_file(tiny_pipeline_dir, tmp_path / "l.safetensors")
    code, err = run_cli(["lora", "fuse", "--model", str(tiny_pipeline_dir), "--lora", str(lora),
                         "--out", str(users_folder)], capsys, monkeypatch)
    assert_one_line_error(code, err, "pass --overwrite")
    assert sorted(p.name for p in users_folder.iterdir()) == ["notes.txt"]


def _lora_file(pipeline_dir, path, rank=2):
    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import save_lora
    from hypersd.models.sd import load_model

    model = load_model(pipeline_dir)
    torch.manual_seed(0)
    add_lora(model.unet, rank, rank, ["to_q", "to_v"], name="student")
    for name, p in model.unet.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    return save_lora(path, model.unet, "student")


@pytest.mark.parametrize("extra,needle", [
    (["--steps", "100000"], "steps must be at most the model's 1000 training timesteps"),
    (["--scheduler", "lcm", "--timesteps", "200,800"], "timesteps must be distinct and decreasing"),
    (["--scheduler", "lcm", "--timesteps", "800,800"], "timesteps must be distinct and decreasing"),
    (["--guidance", "inf"], "guidance must be >= 0"),
    (["--lora", "x.safetensors:nan"], "LoRA scale must be a finite number"),
])
def test_sampling_input_that_used_to_end_in_a_traceback(tiny_pipeline_dir, tmp_path, extra, needle, capsys,
                                                        monkeypatch):
    code, err = run_cli(_sample(tiny_pipeline_dir, tmp_path / "o", *extra), capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists() and no_temporaries(tmp_path)


def test_sample_out_an_existing_file(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    target = tmp_path / "file"
    target.write_text("x")
    code, err = run_cli(_sample(tiny_pipeline_dir, target), capsys, monkeypatch)
    assert_one_line_error(code, err, "is a file, not a folder")
    assert target.read_text() == "x" and no_temporaries(tmp_path)


def test_prompt_file_out_a_folder_and_evaluator_check_zero(tmp_path, capsys, monkeypatch):
    code, err = run_cli(["data", "prompts", "--out", str(tmp_path)], capsys, monkeypatch)
    assert_one_line_error(code, err, "is a folder; give a file name")
    code, err = run_cli(["evaluator", "check", "--n", "0"], capsys, monkeypatch)
    assert_one_line_error(code, err, "--n must be positive")


def test_merge_refuses_nan_and_loras_of_different_unets(tiny_pipeline_dir, tiny_sdxl_dir, tmp_path, capsys,
                                                        monkeypatch):
    a = _lora_file(tiny_pipeline_dir, tmp_path / "a.safetensors")
    b = _lora_file(tiny_sdxl_dir, tmp_path / "b.safetensors")
    out = tmp_path / "m.safetensors"
    code, err = run_cli(["lora", "merge", str(a), str(a), "--ratio", "nan", "--out", str(out)], capsys, monkeypatch)
    assert_one_line_error(code, err, "--ratio must be a finite number")
    code, err = run_cli(["lora", "merge", str(a), str(b), "--out", str(out)], capsys, monkeypatch)
    assert_one_line_error(code, err, "made for different UNets")
    assert not out.exists() and no_temporaries(tmp_path)


def test_no_weight_file_is_written_with_nan_or_inf(tmp_path):
    from hypersd.errors import UserError

    with pytest.raises(UserError, match="1 of 2 tensors hold NaN or inf"):
        save_tensors({"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_lora_made_for_another_unet_is_one_line_naming_the_shape(tiny_pipeline_dir, tiny_sdxl_dir, tmp_path,
                                                                     capsys, monkeypatch):
    other = _lora_file(tiny_sdxl_dir, tmp_path / "xl.safetensors")
    code, err = run_cli(_sample(tiny_pipeline_dir, tmp_path / "o", "--lora", str(other)), capsys, monkeypatch)
    assert_one_line_error(code, err, "does not fit this model's UNet")
    assert "shape" in err or "key" in err


def test_a_truncated_unet_weights_file_is_named_as_damaged(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = run_cli(_sample(folder, tmp_path / "o"), capsys, monkeypatch)
    assert_one_line_error(code, err, "unet/diffusion_pytorch_model.safetensors is damaged or truncated")
    weights.unlink()
    code, err = run_cli(_sample(folder, tmp_path / "o"), capsys, monkeypatch)
    assert_one_line_error(code, err, "unet has no weights file")


def test_disk_full_while_sampling_is_one_line_and_leaves_nothing(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "000000.png")

    monkeypatch.setattr(Image.Image, "save", full)
    code, err = run_cli(_sample(tiny_pipeline_dir, tmp_path / "o"), capsys, monkeypatch)
    assert_one_line_error(code, err, "No space left on device")
    assert not (tmp_path / "o").exists() and no_temporaries(tmp_path)


def test_disk_full_in_a_safetensors_writer_is_one_user_error(tmp_path, monkeypatch):
    import safetensors.torch

    from hypersd.errors import UserError

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(UserError, match="cannot write .*StorageFull"):
        save_tensors({"a": torch.ones(2)}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_removes_its_temporary_on_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_live_lock_refuses_a_second_writer_and_a_dead_holders_lock_is_free(tmp_path):
    import subprocess
    import sys

    from hypersd.errors import UserError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hypersd.io import folder_lock\n"
                               f"with folder_lock({str(tmp_path)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: its lock file stays, the kernel's lock goes
        holder.wait()
    assert (tmp_path / ".hypersd-lock").read_text().strip() == str(holder.pid)
    with folder_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".hypersd-lock").exists()


@pytest.fixture
def full_disk(tmp_path):
    """A tiny tmpfs (the test runs as root, as CI does), else skipped."""
    import subprocess

    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_lora_merge_onto_a_full_disk_is_one_line_and_leaves_nothing(tiny_pipeline_dir, tmp_path, full_disk,
                                                                    capsys, monkeypatch):
    a = _lora_file(tiny_pipeline_dir, tmp_path / "a.safetensors", rank=16)
    assert a.stat().st_size > 48 * 1024
    code, err = run_cli(["lora", "merge", str(a), str(a), "--out", str(full_disk / "m.safetensors")], capsys,
                        monkeypatch)
    assert_one_line_error(code, err, "cannot write")
    assert list(full_disk.iterdir()) == []


def test_sampling_onto_a_full_disk_is_one_line_and_leaves_nothing(tiny_pipeline_dir, full_disk, capsys,
                                                                  monkeypatch):
    (full_disk / "filler").write_bytes(b"\0" * 40 * 1024)
    prompts = ["a red circle", "two blue squares", "a green cross", "a large cyan triangle"] * 4
    args = ["sample", "--model", str(tiny_pipeline_dir), "--steps", "1", "--out", str(full_disk / "o")]
    for prompt in prompts:
        args += ["--prompt", prompt]
    code, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, "No space left on device")
    assert [p.name for p in full_disk.iterdir()] == ["filler"]


def test_a_checkpoint_on_a_full_disk_keeps_the_last_good_one(tiny_pipeline_dir, tmp_path, monkeypatch):
    from hypersd.errors import UserError
    from hypersd.train import checkpoint
    from hypersd.train.recipe import load_recipe
    from hypersd.train.run import Run

    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [{segments: 1, iterations: 6, learning_rate: 1.0e-3}]\n"
                      "lora: {rank: 2, alpha: 2, targets: [to_q, to_v]}\ndata: {pool_size: 8}\n"
                      "samples: {prompts: 1}\ntraining: {batch_size: 2, checkpoint_every: 2}\n")
    saves, real_save = [], torch.save

    def full_after_two(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 2:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed (No space left)")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_after_two)
    with pytest.raises(UserError, match="cannot write .*s00-0000006.*No space left"):
        Run(load_recipe(recipe), tiny_pipeline_dir, tmp_path / "run").train()
    kept = checkpoint.latest_checkpoint(tmp_path / "run")
    assert kept.name == "s00-0000004" and checkpoint.verify(kept) is None
    assert no_temporaries(tmp_path / "run")
