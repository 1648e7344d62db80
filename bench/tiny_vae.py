"""Does a tiny VAE decoder cost the one-step model quality? The shipped one-step UNet decoded by the
teacher's VAE and by each tiny VAE given (`hypersd tiny-vae train` folders), same prompts and seeds:
ShapesEval with paired differences and their 95% intervals, FD, and each tiny VAE's held-out PSNR.

    python bench/tiny_vae.py bench/runs/tiny-vae/c16-s0 bench/runs/tiny-vae/c24-gen-s0 --prompts 300
    hypersd tiny-vae train --out bench/runs/tiny-vae/c32-330-l1-os --channels 32 --blocks 3,3,0 --steps 5000 \
        --one-step-model assets/hypersd-one-step/hypersd-shapes-1step-unet.safetensors   # -10k: --steps 10000
    python bench/tiny_vae.py bench/runs/tiny-vae/c32-330-l1-os bench/runs/tiny-vae/c32-330-l1-os-10k --held-out \
        --out tiny_vae-one-step-latents
Writes bench/results/tiny_vae.{json,md,png} (or --out's name); with --held-out, also the same comparison on 600
held-out prompts and noise seeds (a check on images no choice was made on). Its speed: bench/speed.py --tiny-vae DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RUNS, compare_rows, comparison_table, shapes_eval_whiskers, write_results  # bench/common.py
from unified_schedule import DEV_NOISE_SEED  # bench/unified_schedule.py

from hypersd.assets import EVALUATOR, ONE_STEP_MODEL, TEACHER
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import one_step_row
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import STANDARD_SEED, standard_prompts

BASE = "one-step UNet, VAE decoder"


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiny_vaes", type=Path, nargs="+")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--held-out", action="store_true", help="also score held-out prompts and noise seeds")
    parser.add_argument("--out", default="tiny_vae", help="results name in bench/results/")
    args = parser.parse_args()
    settings = one_step_row("", ONE_STEP_MODEL).settings
    rows = [Row(BASE, settings, unet=ONE_STEP_MODEL)]
    rows += [Row(f"tiny VAE {folder.name}", settings, unet=ONE_STEP_MODEL, vae=folder) for folder in args.tiny_vaes]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "tiny-vae-eval", n_real=args.n_real,
                       psnr_reference=False)
    pairs = [(r.label, BASE) for r in rows[1:]]
    summary["comparisons"] = compare_rows(summary, prompts, pairs)
    summary["tiny_vaes"] = {str(f): json.loads((f / "hypersd_tiny_vae.json").read_text()) for f in args.tiny_vaes}
    held_lines = []
    if args.held_out:
        held_out = standard_prompts(args.prompts, seed=STANDARD_SEED + 1)
        summary["held_out"] = evaluate(TEACHER, rows, held_out, EVALUATOR, RUNS / "tiny-vae-eval-held-out",
                                       n_real=args.n_real, seed=DEV_NOISE_SEED, psnr_reference=False)
        summary["held_out"]["comparisons"] = compare_rows(summary["held_out"], held_out, pairs)
        held_lines = [f"## Confirmation on {len(held_out)} held-out prompts", "",
                      f"Prompt seed {STANDARD_SEED + 1}, noise seeds from {DEV_NOISE_SEED}.", "",
                      markdown_table(summary["held_out"]), "", *comparison_table(summary["held_out"]["comparisons"]),
                      ""]
    lines = ["# The one-step model decoded by tiny VAEs", "",
             f"{len(prompts)} prompts, same seeds; the shipped one-step UNet at its settings (LCM, timestep 800). "
             "ShapesEval ± the half-width of its 95% bootstrap interval over prompts, FD ± sd over 5 resamples.", "",
             markdown_table(summary), "", *comparison_table(summary["comparisons"]), "",
             *held_lines,
             "| tiny VAE | channels | decoder blocks | decoder loss | steps | generated latents | parameters | "
             "held-out PSNR vs the VAE (dB): renders' latents | the one-step model's latents |",
             "|---|---|---|---|---|---|---|---|---|"]
    for folder, rec in summary["tiny_vaes"].items():
        cfg = rec["config"]
        generated = rec.get("generated_latents") or ""
        if rec.get("one_step_model"):
            generated += f" {rec['model_latents']} of {rec['one_step_model']}"
        lines.append(f"| {folder} | {cfg['channels']} | {tuple(cfg['blocks'])} | {cfg.get('decoder_loss', 'mse')} | "
                     f"{cfg['steps']} | {generated.strip() or '-'} | {rec['parameters']} | "
                     f"{rec['held_out_decoder_psnr_db']} | {rec.get('held_out_model_psnr_db', '-')} |")
    lines += ["", "Command: `python bench/tiny_vae.py " + " ".join(str(f) for f in args.tiny_vaes)
              + f" --prompts {args.prompts}" + (" --held-out" if args.held_out else "")
              + (f" --out {args.out}" if args.out != "tiny_vae" else "") + "`"]
    write_results(args.out, summary, "\n".join(lines) + "\n", plot=plot_bars)


def plot_bars(summary: dict, path: Path) -> None:
    """Per decoder: ShapesEval with its 95% interval, and FD with its resampling sd (standard prompts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    names = [r["label"].replace("tiny VAE ", "tiny VAE\n").replace(", ", ",\n") for r in rows]
    colors = ["tab:gray"] + ["tab:orange"] * (len(rows) - 1)
    values, errors = shapes_eval_whiskers(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 2.2 * len(rows), 4))
    left.bar(range(len(rows)), values, yerr=errors, capsize=6, color=colors)
    left.set_ylabel("ShapesEval (95% interval)")
    right.bar(range(len(rows)), [r["fd"] for r in rows], yerr=[r["fd_spread"] for r in rows], capsize=6, color=colors)
    right.set_ylabel("FD to real renders (± sd, 5 resamples)")
    right.set_title("FD: lower is better", fontsize=9)
    left.set_title("ShapesEval: higher is better", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(range(len(rows)), names, fontsize=8)
    fig.suptitle("The shipped one-step model decoded by the VAE and by tiny VAEs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
