"""Peak RAM of one training step with an SD1.5-size UNet (random init from the published SD1.5
UNet config, no weights needed), batch 1, 512x512 (64x64 latents), on CPU; optionally the SDXL UNet
at 1024x1024 (128x128 latents), bf16 base weights (LoRA in fp32, bf16 autocast, as a mixed-precision
run holds them) and gradient checkpointing:

    lora   a plain LoRA fine-tuning step (student forward, denoising loss, backward, AdamW step)
    tscd   one TSCD step (guided teacher = base with adapters off, EMA target adapter, student)
    dmd    one score-distillation step (generator, fake-score LoRA update, guided real score, + TSCD MSE)

Each mode runs in its own process (peak RSS, ru_maxrss, includes the model); ratios are to `lora`.
Text conditioning is a random (77, 768) embedding: the text encoder and VAE are not part of the step.

    python bench/memory.py                                   # SD1.5, fp32: bench/results/memory.{json,md}
    python bench/memory.py --arch sdxl --precision bf16 --checkpointing --modes lora,tscd,dmd
                                                             # adds its rows to the same files
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
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=2048,
                 block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                 transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
ARCHS = {"sd15": (SD15_UNET, 768, None), "sdxl": (SDXL_UNET, 2048, 1280)}  # UNet, text width, pooled width


def unet_only(unet):
    """The project's SDModel over a bare UNet with the SD noise schedule (no text encoder or VAE:
    the training steps only call the UNet)."""
    from types import SimpleNamespace

    from hypersd.models.sd import SDModel
    from hypersd.models.tiny_sd import build_noise_scheduler

    return SDModel(SimpleNamespace(unet=unet, vae=None, text_encoder=None, tokenizer=None,
                                     scheduler=build_noise_scheduler()))


def _conditioning(arch: str):
    from hypersd.models.sd import Conditioning

    _, width, pooled = ARCHS[arch]
    side = ARCHS[arch][0]["sample_size"] * 8
    extra = None if pooled is None else {"text_embeds": torch.randn(1, pooled),
                                         "time_ids": torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float)}
    return Conditioning(torch.randn(1, 77, width), extra)


def one_step(mode: str, arch: str = "sd15", precision: str = "fp32", checkpointing: bool = False) -> dict:
    from diffusers import UNet2DConditionModel

    from hypersd.lora.adapters import FAKE, STUDENT, TARGET, add_lora
    from hypersd.train.recipe import Lora

    torch.manual_seed(0)
    config = ARCHS[arch][0]
    if precision == "bf16":  # built in bf16 directly: an fp32 copy first would set the peak
        torch.set_default_dtype(torch.bfloat16)
    unet = UNet2DConditionModel(**config).requires_grad_(False)
    torch.set_default_dtype(torch.float32)  # the adapters are made (and kept, by add_lora) in fp32
    if checkpointing:
        unet.enable_gradient_checkpointing()
    targets = Lora().targets
    for name in [STUDENT] + ([TARGET] if mode != "lora" else []) + ([FAKE] if mode == "dmd" else []):
        add_lora(unet, 64, 64, targets, name=name)
    unet.set_adapter(STUDENT)
    model = unet_only(unet)
    params = [p for k, p in unet.named_parameters() if f".{STUDENT}." in k]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    side = config["sample_size"]
    x0 = torch.randn(1, 4, side, side)
    cond, uncond = _conditioning(arch), _conditioning(arch)
    start = time.time()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with autocast:
        loss = _loss(mode, model, unet, x0, cond, uncond)
    loss.backward()
    optimizer.step()
    return {"mode": mode, "arch": arch, "precision": precision, "checkpointing": checkpointing,
            "resolution": side * 8, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "step_seconds": time.time() - start, "lora_rank": 64,
            "unet_parameters_m": round(sum(p.numel() for k, p in unet.named_parameters() if "lora_" not in k) / 1e6, 1)}


def _loss(mode: str, model, unet, x0, cond, uncond):
    from hypersd.lora.adapters import FAKE, STUDENT, TARGET
    from hypersd.train.objectives.dmd import ScoreDistillation
    from hypersd.train.objectives.tscd import TSCD
    from hypersd.train.recipe import Stage

    if mode == "lora":
        t = torch.randint(0, 1000, (1,))
        noise = torch.randn_like(x0)
        loss = torch.nn.functional.mse_loss(model.eps(model.add_noise(x0, noise, t), t, cond), noise)
    elif mode == "tscd":
        loss = TSCD(model, Stage(segments=4), student=STUDENT, target=TARGET).losses(x0, cond, uncond)["loss"]
    else:
        stage = Stage(method="dmd", segments=1)
        fake_optimizer = torch.optim.AdamW([p for k, p in unet.named_parameters() if f".{FAKE}." in k], lr=1e-5)
        step = ScoreDistillation(model, stage, STUDENT, TARGET, fake_optimizer)
        unet.set_adapter(STUDENT)
        loss = step.losses(x0, cond, uncond)["loss"]
    return loss


def _key(row: dict) -> tuple:
    return row.get("arch", "sd15"), row.get("precision", "fp32"), row.get("checkpointing", False)


def _measure(modes: list[str], arch: str, precision: str, checkpointing: bool) -> list[dict]:
    """Each mode in its own process (a clean peak)."""
    rows = []
    for mode in modes:
        args = [sys.executable, __file__, "--one", mode, arch, precision, str(int(checkpointing))]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's peak over the plain LoRA step of the same setup (None where that is not measured)."""
    lora = {_key(r): r["peak_rss_gib"] for r in rows if r["mode"] == "lora"}
    for row in rows:
        base = lora.get(_key(row))
        row["ratio_to_lora"] = round(row["peak_rss_gib"] / base, 3) if base else None
    return rows


def _write(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps({"rows": rows, "device": "cpu, 2 threads"}, indent=2))
    lines = ["# Peak RAM of one training step on CPU, batch 1, random-init UNets of the published configs", "",
             "| UNet | resolution | precision | grad. checkpointing | step | peak RSS (GiB) | ratio to plain LoRA step "
             "| step time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio_to_lora']:.3f}" if r.get("ratio_to_lora") else "-"
        arch, precision, checkpointing = _key(r)
        lines.append(f"| {arch} ({r['unet_parameters_m']:.0f}M) | {r.get('resolution', 512)} | {precision} | "
                     f"{'yes' if checkpointing else 'no'} | {r['mode']} | {r['peak_rss_gib']:.2f} | {ratio} | "
                     f"{r['step_seconds']:.0f} |")
    lines += ["", "Each step in its own process (peak RSS includes the UNet); LoRA rank 64 on the recipe's target "
              "modules; the teacher is the base with adapters off, target and fake score are adapters on the same "
              "base (no UNet copies); bf16 = frozen base in bf16, adapters fp32, bf16 autocast. Text conditioning "
              "is random: text encoders and VAE are not part of the step. Run: `python bench/memory.py` "
              "(SD1.5 fp32) and `python bench/memory.py --arch sdxl --precision bf16 --checkpointing --modes lora,tscd,dmd`."]
    (RESULTS / "memory.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "memory.md")


def main() -> None:
    import argparse

    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        print(json.dumps(one_step(sys.argv[2], sys.argv[3], sys.argv[4], bool(int(sys.argv[5])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="sd15")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--modes", default="lora,tscd,dmd")
    args = parser.parse_args()
    rows = _measure(args.modes.split(","), args.arch, args.precision, args.checkpointing)
    previous = RESULTS / "memory.json"
    measured = {(_key(r), r["mode"]) for r in rows}  # a setup's other steps measured earlier are kept
    kept = [r for r in json.loads(previous.read_text())["rows"]
            if (_key(r), r["mode"]) not in measured] if previous.is_file() else []
    order = {"lora": 0, "tscd": 1, "dmd": 2}
    _write(_with_ratios(sorted(kept + rows, key=lambda r: (_key(r)[0] != "sd15", _key(r), order[r["mode"]]))))


if __name__ == "__main__":
    main()
