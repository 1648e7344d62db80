"""Hyper-SD's Tables 3 (with feedback), 4 and 5 on the shipped teacher: feedback learning, score
distillation and the unified LoRA.

Reuses the seed-0 TSCD and TCD-style runs of bench/tscd_ablation.py (bench/runs/long/{tscd,tcd}-s0) as starting
LoRAs and trains, with the feedback and DMD stages of configs/hyper-sd.yaml:

    dmd-base            DMD alone from the base model (no consistency MSE; Table 5's "DMD")
    tcd-dmd             TCD-style LoRA + DMD
    tscd-dmd            TSCD LoRA + DMD
    tscd-feedback-dmd   TSCD LoRA + feedback + DMD with feedback: the unified LoRA
                        (its feedback stage also gives "TSCD + feedback", merged, for 2 and 4 steps)

    python bench/hyper_tables.py            # 600 prompts; writes bench/results/hyper_tables.{json,md,png}
    python bench/hyper_tables.py --quick    # tiny budgets, to check the script end to end

Every row also gets the reward scores (clean-image and presence rewards, segmenter agreement with
the prompt). `python bench/hyper_tables.py --rewrite` rewrites the markdown from the stored JSON.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from common import ROOT, RUNS, train_or_reuse, write_results  # bench/common.py

from hypersd.assets import EVALUATOR, SEGMENTER, TEACHER, TEACHER_GUIDANCE
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.reward_report import reward_scores
from hypersd.inference.settings import SampleSettings
from hypersd.lora.files import LoraSpec
from hypersd.progress import quiet_libraries
from hypersd.rewards.segmenter import ShapesSegmenter
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.outputs import final_lora, phase_lora
from hypersd.train.recipe import load_recipe

RECIPE = ROOT / "configs" / "hyper-sd.yaml"
QUICK = {"iterations": 3, "batch_size": 4, "pool_size": 64}


def phase_recipe(name: str, quick: bool):
    """configs/hyper-sd.yaml cut down to the phases one run needs."""
    full = load_recipe(RECIPE)
    feedback = next(s for s in full.stages if s.method == "feedback")
    dmd = next(s for s in full.stages if s.method == "dmd")
    plain_dmd = copy.deepcopy(dmd)
    plain_dmd.dmd.with_feedback = False
    stages = {"dmd-base": [copy.deepcopy(plain_dmd)], "tcd-dmd": [plain_dmd], "tscd-dmd": [copy.deepcopy(plain_dmd)],
              "tscd-feedback-dmd": [feedback, dmd]}[name]
    if name == "dmd-base":
        stages[0].mse_weight = 0.0  # DMD alone: no consistency target to regress to
    recipe = copy.deepcopy(full)
    recipe.name, recipe.stages = name, stages
    if quick:
        for stage in recipe.stages:
            stage.iterations = QUICK["iterations"]
            stage.feedback.batch_size = 2
        recipe.training.batch_size, recipe.data.pool_size = QUICK["batch_size"], QUICK["pool_size"]
    return recipe.validate()


def train(name: str, init: Path | None, model: Path, quick: bool) -> tuple[Path, dict]:
    recipe = phase_recipe(name, quick)
    out = RUNS / (name + ("-quick" if quick else ""))
    return out, train_or_reuse(recipe, model, out, init)


def rows_for(runs: dict[str, Path], tscd_run: Path) -> list[Row]:
    def lora_row(label, lora, steps, scheduler="tcd", eta=0.3):
        return Row(label, SampleSettings(steps=steps, scheduler=scheduler, guidance=0.0, eta=eta,
                                         loras=[LoraSpec(lora)]))

    unified = phase_lora(runs["tscd-feedback-dmd"], "unified")
    rows = [Row(f"teacher DDIM @{s}", SampleSettings(steps=s, scheduler="ddim", guidance=TEACHER_GUIDANCE))
            for s in (1, 2, 4, 8, 50)]
    # Table 4: the unified LoRA at 1-8 steps, TCD at two etas
    rows += [lora_row(f"unified @{s} eta {eta:g}", unified, s, eta=eta) for eta in (0.3, 1.0) for s in (1, 2, 4, 8)]
    # Tables 3 (with feedback) and 5: one step
    rows += [lora_row("TSCD (no DMD) @1", final_lora(tscd_run), 1, "ddim-trailing", None),
             lora_row("DMD alone @1", phase_lora(runs["dmd-base"], "unified"), 1),
             lora_row("TCD-style + DMD @1", phase_lora(runs["tcd-dmd"], "unified"), 1),
             lora_row("TSCD + DMD @1", phase_lora(runs["tscd-dmd"], "unified"), 1)]
    # two and four steps: TSCD with and without feedback (DDIM trailing, as TSCD LoRAs sample)
    with_feedback = phase_lora(runs["tscd-feedback-dmd"], "feedback")
    for s in (2, 4):
        rows += [lora_row(f"TSCD @{s}", final_lora(tscd_run), s, "ddim-trailing", None),
                 lora_row(f"TSCD + feedback @{s}", with_feedback, s, "ddim-trailing", None)]
    return rows


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TEACHER)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--n-real", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny budgets; results go to *-quick files")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite the markdown from the stored JSON")
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    if args.rewrite:
        import json

        from common import RESULTS

        summary = json.loads((RESULTS / f"hyper_tables{suffix}.json").read_text())
        write_results(f"hyper_tables{suffix}", summary, markdown(summary))
        return
    if args.quick:
        args.prompts, args.n_real = min(args.prompts, 24), min(args.n_real, 100)
    long = RUNS / f"long{suffix}"
    tscd_run, tcd_run = long / "tscd-s0", long / "tcd-s0"
    for run in (tscd_run, tcd_run):
        if not (run / "loras").is_dir():
            raise SystemExit(f"{run} is missing: run `python bench/tscd_ablation.py{' --quick' if args.quick else ''}` first")
    inits = {"dmd-base": None, "tcd-dmd": final_lora(tcd_run), "tscd-dmd": final_lora(tscd_run),
             "tscd-feedback-dmd": final_lora(tscd_run)}
    runs, training = {}, {}
    for name, init in inits.items():
        runs[name], training[name] = train(name, init, args.model, args.quick)
    segmenter = ShapesSegmenter.load(SEGMENTER)
    summary = evaluate(args.model, rows_for(runs, tscd_run), standard_prompts()[: args.prompts], EVALUATOR,
                       RUNS / f"hyper-eval{suffix}", n_real=args.n_real,
                       extra_scores=lambda images, prompts: reward_scores(images, prompts, segmenter))
    summary["training"] = training
    write_results(f"hyper_tables{suffix}", summary, markdown(summary))


def markdown(summary: dict) -> str:
    lines = ["# Feedback learning, score distillation and the unified LoRA (Hyper-SD Tables 3-5 analogue)", "",
             f"Teacher `{summary['model']}`, {summary['prompts']} ShapesEval prompts, FD against "
             f"{summary['real_images']} real renders, PSNR against the teacher's 50-step DDIM sample "
             f"(guidance {TEACHER_GUIDANCE:g}). Distilled rows: no guidance. Rewards (what feedback learning "
             "optimises): `shapes_clean` (0-10, the clean-image reward), `shapes_presence` (0-10, the named "
             "objects are there and nothing else), `segmenter_agreement` (fraction of images whose segmented "
             "instances are exactly the objects the prompt names).",
             "", markdown_table(summary), "", "Training (recipe stages from configs/hyper-sd.yaml):", ""]
    for name, metrics in summary["training"].items():
        init = Path(metrics["init_lora"]).parent.parent.name if metrics.get("init_lora") else "base model"
        lines.append(f"- {name} (from {init}): {metrics.get('train_seconds', float('nan')) / 60:.1f} min")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
