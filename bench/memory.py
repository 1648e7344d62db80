"""Peak RAM of one training step with an SD1.5-size UNet (random init from the published SD1.5
UNet config, no weights needed), batch 1, 512x512 (64x64 latents), fp32 on CPU:

    lora   a plain LoRA fine-tuning step (student forward, denoising loss, backward, AdamW step)
    tscd   one TSCD step (guided teacher = base with adapters off, EMA target adapter, student)
    dmd    one score-distillation step (generator, fake-score LoRA update, guided real score, + TSCD MSE)

Each mode runs in its own process (peak RSS, ru_maxrss, includes the model); ratios are to `lora`.
Text conditioning is a random (77, 768) embedding: the text encoder and VAE are not part of the step.

    python bench/memory.py    # writes bench/results/memory.{json,md}
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch

from common import RESULTS  # bench/common.py

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


class UNetOnly:
    """The slice of SDAdapter the training steps use, over a bare UNet (no pipeline, no text encoder)."""

    def __init__(self, unet):
        from hypersd.models.adapter import SDAdapter
        from hypersd.models.tiny_sd import build_noise_scheduler

        self.unet, scheduler = unet, build_noise_scheduler()
        self.alphas_cumprod = scheduler.alphas_cumprod.clone().float()
        self.num_train_timesteps = 1000
        for name in ("eps", "guided_eps", "adapter", "add_noise"):
            setattr(self, name, getattr(SDAdapter, name).__get__(self))

    @property
    def device(self):
        return self.unet.device


def one_step(mode: str) -> dict:
    from diffusers import UNet2DConditionModel

    from hypersd.distill.dmd import FAKE, ScoreDistillationStep
    from hypersd.distill.tscd import STUDENT, TARGET, TSCD
    from hypersd.lora import add_lora
    from hypersd.models.adapter import Conditioning
    from hypersd.recipe import Lora, Stage

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).requires_grad_(False)
    targets = Lora().targets
    for name in [STUDENT] + ([TARGET] if mode != "lora" else []) + ([FAKE] if mode == "dmd" else []):
        add_lora(unet, 64, 64, targets, name=name)
    unet.set_adapter(STUDENT)
    model = UNetOnly(unet)
    params = [p for k, p in unet.named_parameters() if f".{STUDENT}." in k]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    x0 = torch.randn(1, 4, 64, 64)
    cond, uncond = Conditioning(torch.randn(1, 77, 768)), Conditioning(torch.randn(1, 77, 768))
    start = time.time()
    if mode == "lora":
        t = torch.randint(0, 1000, (1,))
        noise = torch.randn_like(x0)
        loss = torch.nn.functional.mse_loss(model.eps(model.add_noise(x0, noise, t), t, cond), noise)
    elif mode == "tscd":
        loss = TSCD(model, Stage(segments=4), student=STUDENT, target=TARGET).losses(x0, cond, uncond)["loss"]
    else:
        stage = Stage(method="dmd", segments=1)
        fake_optimizer = torch.optim.AdamW([p for k, p in unet.named_parameters() if f".{FAKE}." in k], lr=1e-5)
        step = ScoreDistillationStep(model, stage, STUDENT, TARGET, fake_optimizer)
        unet.set_adapter(STUDENT)
        loss = step.losses(x0, cond, uncond)["loss"]
    loss.backward()
    optimizer.step()
    return {"mode": mode, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "step_seconds": time.time() - start, "lora_rank": 64,
            "unet_parameters_m": round(sum(p.numel() for k, p in unet.named_parameters() if "lora_" not in k) / 1e6, 1)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one_step(sys.argv[2])))
        return
    rows = []
    for mode in ("lora", "tscd", "dmd"):
        done = subprocess.run([sys.executable, __file__, "--one", mode], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_gib"]
    for row in rows:
        row["ratio_to_lora"] = round(row["peak_rss_gib"] / base, 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps({"rows": rows, "device": "cpu, fp32, 2 threads"}, indent=2))
    lines = ["# Peak RAM of one training step, SD1.5-size UNet (random init), batch 1, 512x512, fp32, CPU", "",
             "| step | peak RSS (GiB) | ratio to plain LoRA step | step time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['peak_rss_gib']:.2f} | {r['ratio_to_lora']:.3f} | {r['step_seconds']:.0f} |" for r in rows]
    lines += ["", "Each step in its own process; LoRA rank 64 on the recipe's target modules; the teacher is the "
              "base with adapters off, target and fake score are adapters on the same base (no UNet copies). "
              "Run: `python bench/memory.py`."]
    (RESULTS / "memory.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "memory.md")


if __name__ == "__main__":
    main()
