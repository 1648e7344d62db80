"""`hypersd distill` launched data-parallel on 2 CPU processes (gloo), as users launch it:

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no -m hypersd.cli distill ...

A small probe script wraps `hypersd.cli.main` (so the real CLI path runs) and, per process, records
the batches it drew, its LoRA weights after training and every write it made under the run folder
(Python audit events: open for writing, mkdir, rename, remove) into a probe folder beside the run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypersd.errors import UserError
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run

ROOT = Path(__file__).resolve().parents[1]

PROBE = r'''
import json, os, sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import hypersd.train.run as run_module
from hypersd.cli import main

probe, run_dir = Path(os.environ["PROBE_DIR"]), os.path.abspath(os.environ["PROBE_RUN"])
record = {"captions": [], "latents": [], "writes": []}
watching = []


def audit(event, args):  # every write this process makes under the run folder, once train() runs
    if not watching or event not in ("open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink",
                                     "shutil.rmtree", "os.rmdir"):
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if not writing:
            return
    else:
        path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(path))
        if path == run_dir or path.startswith(run_dir + os.sep):
            record["writes"].append([event, os.path.relpath(path, run_dir)])


sys.addaudithook(audit)
build = run_module.batch_source


def build_pool(*args, **kwargs):
    pool = build(*args, **kwargs)
    draw = pool.draw

    def recording_draw(batch):
        drawn = draw(batch)
        record["captions"].append(list(drawn.captions))
        record["latents"].append(drawn.latents.flatten()[:16].tolist())
        return drawn

    pool.draw = recording_draw
    return pool


run_module.batch_source = build_pool
train = run_module.Run.train


def recording_train(self, *args, **kwargs):
    stop = os.environ.get("PROBE_STOP_AFTER")
    if stop:
        kwargs["stop_after"] = int(stop)
    watching.append(True)
    try:
        result = train(self, *args, **kwargs)
    finally:
        watching.clear()
    acc, unet = self.accelerator, self.model.unet
    rank = acc.process_index
    weights = {k: p.detach().cpu().contiguous() for k, p in unet.named_parameters() if "lora_" in k}
    if self.discriminator is not None:
        weights.update({"discriminator." + k: v.detach().cpu().contiguous()
                        for k, v in self.discriminator.state_dict().items()})
    save_file(weights, str(probe / f"rank{rank}.safetensors"))
    info = {"rank": rank, "world": acc.num_processes, "type": acc.distributed_type.value, **record}
    (probe / f"rank{rank}.json").write_text(json.dumps(info))
    return result


run_module.Run.train = recording_train
sys.argv = ["hypersd", *sys.argv[1:]]
main()
'''

RECIPE = """name: tiny-ddp
stages:
  - {segments: 2, iterations: 2, learning_rate: 1.0e-3, ema_decay: 0.5}
  - {segments: 1, iterations: 2, learning_rate: 1.0e-3, teacher: previous, ema_decay: 0.0, adversarial_weight: 0.5}
  - {method: dmd, segments: 1, iterations: 2, learning_rate: 1.0e-3, dmd: {fake_rank: 2, fake_updates: 1}}
lora: {rank: 2, alpha: 2, targets: [to_q, to_k, to_v, conv1]}
data: {pool_size: 16}
samples: {prompts: 1}
training: {batch_size: 2, checkpoint_every: 1, log_every: 1}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path, model: Path, name: str, launch: list[str], resume: bool = False,
            stop_after: int | None = None) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run the probe under `accelerate launch`; returns (run folder, probe folder, process)."""
    script, recipe = tmp / "probe_distill.py", tmp / "recipe.yaml"
    script.write_text(PROBE)
    recipe.write_text(RECIPE)
    out, probe = tmp / name, tmp / f"{name}-probe{'-resume' if resume else ''}"
    probe.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PROBE_DIR": str(probe), "PROBE_RUN": str(out), "PROBE_STOP_AFTER": str(stop_after or ""),
           "PYTHONPATH": str(ROOT / "src")}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *launch, "--main_process_port", str(_free_port()), str(script),
           "distill", "--recipe", str(recipe), "--model", str(model), "--out", str(out), "--device", "cpu",
           *(["--resume"] if resume else [])]
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, probe, proc


LAUNCH_LINE = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def launched(tiny_pipeline_dir, tmp_path_factory):
    out, probe, proc = _launch(tmp_path_factory.mktemp("ddp"), tiny_pipeline_dir, "run", LAUNCH_LINE)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(2)]
    return out, probe, proc, ranks


def test_both_processes_ran_data_parallel_on_gloo(launched):
    _, probe, proc, ranks = launched
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["type"] == "MULTI_CPU" for r in ranks)
    assert all(len(r["captions"]) == 6 for r in ranks)  # 3 stages x 2 steps, one batch each
    assert proc.stdout.count("run: ") == 1  # one report, from process 0


def test_processes_draw_different_batches(launched):
    _, _, _, (r0, r1) = launched
    assert r0["latents"][0] != r1["latents"][0]
    assert r0["captions"] != r1["captions"]  # 6 batches of 2 from a pool of 16: equal by chance ~ 16^-12


def test_trained_weights_are_identical_on_every_process(launched):
    out, probe, _, _ = launched
    a, b = load_file(probe / "rank0.safetensors"), load_file(probe / "rank1.safetensors")
    # student, target, teacher, the DMD fake score (own optimizer), the discriminator heads (own optimizer)
    assert a.keys() == b.keys()
    assert all(any(f".{name}." in k for k in a) for name in ("student", "target", "teacher", "fake"))
    assert any(k.startswith("discriminator.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    for name in ("student", "fake"):  # they learned
        assert any(v.abs().sum() > 0 for k, v in a.items() if f".{name}." in k and "lora_B" in k)
    # the checkpoint (process 0) holds those same weights
    saved = load_file(latest_checkpoint(out) / "adapters.safetensors")
    saved.update({"discriminator." + k: v for k, v in load_file(latest_checkpoint(out) / "discriminator.safetensors").items()})
    assert saved.keys() == a.keys()
    assert all(torch.equal(saved[k], a[k]) for k in a)


def test_only_process_0_writes_the_run_folder(launched):
    out, _, _, (r0, r1) = launched
    assert r1["writes"] == []  # process 1 opened nothing for writing, made/renamed/removed nothing there
    # atomic writes go through hidden temporaries (.NAME.tmp-XXXX) renamed to NAME
    written = {re.sub(r"^\.(.+)\.(tmp|old)-\w+$", r"\1", path.split(os.sep)[0]) for _, path in r0["writes"]}
    assert {"recipe.yaml", "log.jsonl", "checkpoints", "loras", "samples", "metrics.json"} <= written
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "log.jsonl", "loras", "metrics.json",
                                                     "progress.png", "recipe.yaml", "samples"]
    assert sorted(p.name for p in (out / "loras").iterdir()) == [
        "dmd-unified.safetensors", "tscd-k1.safetensors", "tscd-k2.safetensors"]
    assert sorted(p.name for p in latest_checkpoint(out).iterdir()) == [
        "adapters.safetensors", "discriminator.safetensors", "manifest.json", "optimizer-discriminator.pt",
        "optimizer-fake.pt", "optimizer-student.pt", "rng-rank1.safetensors", "rng.safetensors", "state.json"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".old" in p.name or "probe" in p.name]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [(r["stage"], r["step"]) for r in records if "step" in r and "event" not in r]
    assert steps == [("k2", 0), ("k2", 1), ("k1", 0), ("k1", 1), ("unified", 0), ("unified", 1)]  # once each
    assert [r["stage"] for r in records if r.get("event") == "stage_end"] == ["k2", "k1", "unified"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)


def test_checkpoint_keeps_every_process_random_state(launched):
    out, _, _, _ = launched
    rng0 = load_file(latest_checkpoint(out) / "rng.safetensors")["torch_rng"]
    rng1 = load_file(latest_checkpoint(out) / "rng-rank1.safetensors")["torch_rng"]
    assert not torch.equal(rng0, rng1)


@pytest.mark.slow
def test_a_killed_and_resumed_two_process_run_ends_with_the_same_loras(tiny_pipeline_dir, tmp_path):
    """Same as the single-process resume test, on 2 processes through configs/accelerate/ddp-cpu-2.yaml:
    the per-process random states in the checkpoint make the resumed run exact."""
    config = ["--config_file", str(ROOT / "configs" / "accelerate" / "ddp-cpu-2.yaml")]
    whole, _, _ = _launch(tmp_path, tiny_pipeline_dir, "whole", config)
    killed, _, _ = _launch(tmp_path, tiny_pipeline_dir, "killed", config, stop_after=3)  # inside stage 2
    assert json.loads((latest_checkpoint(killed) / "state.json").read_text())["stage"] == 1
    assert not (killed / "loras" / "tscd-k1.safetensors").exists()
    _launch(tmp_path, tiny_pipeline_dir, "killed", config, resume=True)
    for name in ("k2", "k1", "unified"):
        a = load_file(whole / "loras" / f"tscd-{name}.safetensors")
        b = load_file(killed / "loras" / f"tscd-{name}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_sharded_setups_are_refused_with_one_line(tiny_pipeline_dir, tmp_path, monkeypatch):
    """configs/accelerate/fsdp.yaml and deepspeed-zero2.yaml set these variables at launch."""
    recipe = load_recipe(None, ["stages.0.iterations=1"])
    for var, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        monkeypatch.setenv(var, "true")
        with pytest.raises(UserError, match=f"{name} is not supported"):
            Run(recipe, tiny_pipeline_dir, tmp_path / "run", device="cpu")
        monkeypatch.delenv(var)
    assert not (tmp_path / "run").exists()


def _average_on_rank(rank: int, init_file: str, out: str) -> None:
    """One of two gloo processes: known gradients per rank, one parameter without a gradient on
    rank 1 only, one without a gradient anywhere; the averaged results go to `out`."""
    import torch.distributed as dist

    from hypersd.train.parallel import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    both, partly, never = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), 1.0 + 2 * rank)            # 1 and 3: mean 2
    partly.grad = torch.full((3,), 4.0) if rank == 0 else None  # (4 + 0) / 2
    average_gradients([both, partly, never])
    torch.save({"both": both.grad, "partly": partly.grad, "never": never.grad}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_average_gradients_is_the_mean_over_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_average_on_rank, args=(str(tmp_path / "init"), str(tmp_path / "grads")), nprocs=2)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"grads.{rank}", weights_only=True)
        assert grads["both"].tolist() == [2.0] * 3        # averaged, not summed
        assert grads["partly"].tolist() == [2.0] * 3      # a missing gradient counts as zero there
        assert grads["never"] is None                     # none anywhere: stays None, as with one process
