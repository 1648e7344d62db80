"""Cost of one TSCD training step against the bare UNet work it has to do.

Bare work per step, batch b: a guided teacher forward (2b samples, adapters disabled), a target
forward (b, with LoRA), a student forward and backward (b), and the optimizer step, all on the same
UNet. The TSCD step adds timestep and segment sampling, the DDIM jumps, adapter switching
(teacher = adapters disabled) and the EMA update. Both are timed interleaved in one run; the
result is the ratio of medians (target: at most 1.15).

    python bench/tscd_step_cost.py [--model DIR] [--batch 32] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from hypersd.assets import TEACHER
from hypersd.lora.adapters import STUDENT, TARGET, add_lora
from hypersd.models.sd import load_model
from hypersd.progress import quiet_libraries
from hypersd.train.objectives.tscd import TSCD
from hypersd.train.recipe import Lora, Stage

RESULTS = Path(__file__).resolve().parent / "results"


def bare_step(model, optimizer, x, t, cond, both):
    unet = model.unet
    with torch.no_grad():
        with model.using_lora(None):  # the teacher runs without LoRA, as in TSCD
            unet(torch.cat([x, x]), torch.cat([t, t]), both.hidden_states)  # guided teacher: cond + uncond
        unet(x, t, cond.hidden_states)  # target (a LoRA forward, like the student's)
    loss = unet(x, t, cond.hidden_states).sample.pow(2).mean()  # student
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tscd_step(method, optimizer, x0, cond, uncond):
    method.losses(x0, cond, uncond)["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    method.after_step()


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TEACHER)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model)
    model.freeze_base()
    lora = Lora()
    for name in (STUDENT, TARGET):
        add_lora(model.unet, lora.rank, lora.alpha, lora.targets, name=name)
    model.unet.set_adapter(STUDENT)
    params = [p for k, p in model.unet.named_parameters() if f".{STUDENT}." in k]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    method = TSCD(model, Stage(segments=4))
    b = args.batch
    x0 = torch.randn(b, model.unet.config.in_channels, 8, 8)
    cond = model.encode_prompts(["a red circle above a blue square"] * b)
    uncond = model.unconditional(b)
    both = cond.cat(uncond)
    t = torch.randint(0, 1000, (b,))
    times = {"bare": [], "tscd": []}
    for i in range(args.rounds + 3):
        start = time.perf_counter()
        bare_step(model, optimizer, x0, t, cond, both)
        middle = time.perf_counter()
        tscd_step(method, optimizer, x0, cond, uncond)
        end = time.perf_counter()
        if i >= 3:  # warm-up rounds are not counted
            times["bare"].append(middle - start)
            times["tscd"].append(end - middle)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": str(args.model), "batch": b, "rounds": args.rounds, "threads": args.threads,
        "device": "cpu", "machine": platform.processor() or platform.machine(),
        "median_seconds": medians, "ratio_tscd_over_bare": medians["tscd"] / medians["bare"], "target": 1.15,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tscd_step_cost.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "tscd_step_cost.md").write_text(
        "# TSCD step cost\n\n"
        f"Batch {b}, {args.rounds} interleaved rounds, {args.threads} CPU threads, model `{args.model}`.\n\n"
        "| step | median (s) |\n|---|---|\n"
        f"| bare UNet work (teacher 2b + target b + student b fwd/bwd + optimizer) | {medians['bare']:.4f} |\n"
        f"| TSCD step (`TSCD.losses` + backward + optimizer + EMA) | {medians['tscd']:.4f} |\n\n"
        f"Ratio TSCD / bare: **{result['ratio_tscd_over_bare']:.3f}** (target <= 1.15).\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
