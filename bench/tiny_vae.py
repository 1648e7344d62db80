"""Does a tiny VAE decoder cost the one-step model quality? The shipped one-step UNet decoded by the
teacher's VAE and by each tiny VAE given (`hypersd tiny-vae train` folders), same prompts and seeds:
ShapesEval with paired differences and their 95% intervals, FD, and each tiny VAE's held-out PSNR.

    python bench/tiny_vae.py bench/runs/tiny-vae/c16-s0 bench/runs/tiny-vae/c24-gen-s0 --prompts 300
Writes bench/results/tiny_vae.{json,md,png}; its speed: bench/speed.py --tiny-vae DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RUNS, compare_rows, comparison_table, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, ONE_STEP_MODEL, TEACHER
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import one_step_row
from hypersd.progress import quiet_libraries
from hypersd.shapes.prompts import standard_prompts

BASE = "one-step UNet, VAE decoder"


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiny_vaes", type=Path, nargs="+")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    args = parser.parse_args()
    settings = one_step_row("", ONE_STEP_MODEL).settings
    rows = [Row(BASE, settings, unet=ONE_STEP_MODEL)]
    rows += [Row(f"tiny VAE {folder.name}", settings, unet=ONE_STEP_MODEL, vae=folder) for folder in args.tiny_vaes]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "tiny-vae-eval", n_real=args.n_real,
                       psnr_reference=False)
    summary["comparisons"] = compare_rows(summary, prompts, [(r.label, BASE) for r in rows[1:]])
    summary["tiny_vaes"] = {str(f): json.loads((f / "hypersd_tiny_vae.json").read_text()) for f in args.tiny_vaes}
    lines = ["# The one-step model decoded by tiny VAEs", "",
             f"{len(prompts)} prompts, same seeds; the shipped one-step UNet at its settings (LCM, timestep 800).", "",
             markdown_table(summary), "", *comparison_table(summary["comparisons"]), "",
             "| tiny VAE | channels | steps | generated latents | parameters | held-out decoder PSNR vs the VAE (dB) |",
             "|---|---|---|---|---|---|"]
    for folder, rec in summary["tiny_vaes"].items():
        lines.append(f"| {folder} | {rec['config']['channels']} | {rec['config']['steps']} | "
                     f"{rec.get('generated_latents') or '-'} | {rec['parameters']} | {rec['held_out_decoder_psnr_db']} |")
    lines += ["", "Command: `python bench/tiny_vae.py " + " ".join(str(f) for f in args.tiny_vaes)
              + f" --prompts {args.prompts}`"]
    write_results("tiny_vae", summary, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
