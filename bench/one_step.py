"""The dedicated one-step model of Hyper-SD section 3.3 (generator fed pure noise at timestep 800,
sampled by LCM at [800]) as a LoRA and as a full UNet, both started from the unified LoRA of
bench/hyper_tables.py (bench/runs/tscd-feedback-dmd), beside the unified LoRA at one step.

    python bench/one_step.py            # 600 prompts; writes bench/results/one_step.{json,md,png}
    python bench/one_step.py --quick    # tiny budgets, to check the script end to end
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import ROOT, RUNS, train_or_reuse, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, SEGMENTER, TEACHER
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.reward_report import reward_scores
from hypersd.inference.settings import SampleSettings
from hypersd.lora.files import LoraSpec
from hypersd.progress import quiet_libraries
from hypersd.rewards.segmenter import ShapesSegmenter
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.outputs import phase_lora
from hypersd.train.recipe import load_recipe

RECIPES = {"one-step-lora": ROOT / "configs" / "one-step-800.yaml",
           "one-step-unet": ROOT / "configs" / "one-step-800-unet.yaml"}
QUICK = ["stages.0.iterations=2", "training.batch_size=4", "data.pool_size=64", "stages.0.feedback.batch_size=2"]


def rows_for(unified: Path, runs: dict[str, Path]) -> list[Row]:
    one_step = SampleSettings(steps=1, scheduler="lcm", guidance=0.0, timesteps=[800])
    return [Row("unified @1 (TCD, eta 0.3)", SampleSettings(steps=1, scheduler="tcd", guidance=0.0, eta=0.3,
                                                           loras=[LoraSpec(unified)])),
            Row("unified @1 (LCM, t 800; control: no one-step training)", replace(one_step, loras=[LoraSpec(unified)])),
            Row("one-step LoRA @1 (LCM, t 800)", replace(one_step, loras=[LoraSpec(phase_lora(runs["one-step-lora"],
                                                                                             "one-step-t800"))])),
            Row("one-step full UNet @1 (LCM, t 800)", one_step, model=runs["one-step-unet"] / "one-step-t800-unet")]


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny budgets; results go to *-quick files")
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    if args.quick:
        args.prompts, args.n_real = min(args.prompts, 24), min(args.n_real, 100)
    unified = phase_lora(RUNS / f"tscd-feedback-dmd{suffix}", "unified")
    if unified is None:
        raise SystemExit(f"no unified LoRA: run `python bench/hyper_tables.py{' --quick' if args.quick else ''}` first")
    runs, training = {}, {}
    for name, recipe_file in RECIPES.items():
        recipe = load_recipe(recipe_file, QUICK if args.quick else [])
        runs[name] = RUNS / (name + suffix)
        training[name] = train_or_reuse(recipe, TEACHER, runs[name], unified)
    segmenter = ShapesSegmenter.load(SEGMENTER)
    summary = evaluate(TEACHER, rows_for(unified, runs), standard_prompts()[: args.prompts], EVALUATOR,
                       RUNS / f"one-step-eval{suffix}", n_real=args.n_real,
                       extra_scores=lambda images, prompts: reward_scores(images, prompts, segmenter))
    summary["training"] = training
    lines = ["# The dedicated one-step model (timestep 800): LoRA and full UNet", "",
             f"Teacher `{summary['model']}`, {summary['prompts']} ShapesEval prompts, FD against "
             f"{summary['real_images']} real renders, PSNR against the teacher's 50-step sample. Both start from "
             "the unified LoRA of bench/hyper_tables.py.", "", markdown_table(summary), "", "Training:", ""]
    for name, metrics in training.items():
        lines.append(f"- {name} ({RECIPES[name].name}): {metrics.get('train_seconds', float('nan')) / 60:.1f} min")
    write_results(f"one_step{suffix}", summary, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
