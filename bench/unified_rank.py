"""Capacity for the unified LoRA (issue 14: @1 >= 0.6x, @2 >= 0.9x the teacher): does a higher LoRA rank, for
the generator and for the fake score, lift one and two steps? Every run continues the rank-16 unified LoRA
shipped until commit 86440eb (RANK16_FILE below: `git show 86440eb:assets/hypersd-unified/dmd-unified.safetensors
> RANK16_FILE`; since then the r64f64 seed-0 run is the shipped file) with its own recipe
(configs/dmd2-unified-gan05-g3.yaml) for the same number of iterations, two training seeds each:
  r16     the recipe unchanged (the control: what more iterations alone give);
  r64     the generator LoRA grown to rank 64 (alpha 64, the same scale; the shipped rank-16 factors fill the
          first 16 ranks and the new ones start at zero, so the run starts from the shipped LoRA exactly);
  r64f64  the same, and the fake score's LoRA at rank 64 too (dmd.fake_rank; recipe: 16);
  r64f128 the generator at rank 64 and the fake score at rank 128 (added 2026-12-07, after r64f64 came out best).
Rows at the rank-16 LoRA's timesteps (1 at 700, 2 at 900,450, 4 at 900,675,450,225, 8 trailing), paired per
seed and over both seeds.

    for s in 0 1; do for arm in r16 r64 r64f64; do
      case $arm in r16) x="";; r64) x="--set lora.rank=64 --set lora.alpha=64";;
                   r64f64) x="--set lora.rank=64 --set lora.alpha=64 --set stages.0.dmd.fake_rank=64";;
                   r64f128) x="--set lora.rank=64 --set lora.alpha=64 --set stages.0.dmd.fake_rank=128";; esac
      hypersd distill --recipe configs/dmd2-unified-gan05-g3.yaml $x --set stages.0.iterations=300 \\
          --set training.seed=$s --init-lora RANK16_FILE \\
          --out bench/runs/long/unified-cont-$arm-s$s
    done; done      # one-thread jobs side by side (OMP_NUM_THREADS=1): six took about 100 min on 2 cores
    python bench/unified_rank.py --iterations 300     # any snapshot the runs have (100, 200, 300)
The r64f64 runs went on to 600 iterations (`hypersd distill --out bench/runs/long/unified-cont-r64f64-s$s --resume
--extend-to 600`); `--iterations 600 --against 300` evaluates the arms that have 600 and pairs each with itself
at 300. An arm without the snapshot is left out (its comparisons too).
Writes bench/results/unified_rank-<N>it.{json,md,png}, and from every unified_rank-<N>it.json the curve
unified_rank_curve.png (ShapesEval @1, @2 against iterations) and unified_rank_trend.md (each arm's slope with its
bootstrap interval); `--replot` redraws those two alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import (  # bench/common.py
    RESULTS,
    RUNS,
    across_seeds,
    compare_rows,
    comparison_table,
    complete_arms,
    file_at_commit,
    require_trained,
    rows_by_label,
    run_pairs,
    seeded_snapshot_parser,
    shapes_eval_whiskers,
    teacher_ratio_lines,
    write_results,
)
from unified_dmd2 import LONG, STEPS, TEACHER_ROW, at_shipped_timesteps, snapshot  # bench/unified_dmd2.py

from hypersd.assets import EVALUATOR, TEACHER, TEACHER_GUIDANCE, UNIFIED_LORA
from hypersd.core.intervals import slope_interval
from hypersd.embedded.evaluator.evaluate import Row, evaluate, markdown_table
from hypersd.embedded.rows import metadata_settings
from hypersd.inference.settings import SampleSettings
from hypersd.progress import quiet_libraries
from hypersd.shapes.captions import parse_caption
from hypersd.shapes.prompts import standard_prompts

ARMS = {"r16": "rank 16 (recipe unchanged)", "r64": "generator rank 64",
        "r64f64": "generator and fake score rank 64", "r64f128": "generator rank 64, fake score rank 128"}
COMPARED = [("r16", None), ("r64f64", None), ("r64f128", None), ("r64", "r16"), ("r64f64", "r64"),
            ("r64f64", "r16"), ("r64f128", "r64f64"), ("r64f128", "r16")]
START = "shipped unified LoRA (start)"
START_COMMIT = "86440eb"  # the last commit whose assets/ held the rank-16 file these runs continue


def start_lora():
    """The unified LoRA every run here continues (rank 16), as START_COMMIT holds it (since then r64f64 seed 0 is
    the shipped file)."""
    return file_at_commit(UNIFIED_LORA, START_COMMIT)


def row_label(arm: str, seed: int, iterations: int, steps: int) -> str:
    return f"{ARMS[arm]}, +{iterations} it, seed {seed} @{steps}"


def trained_snapshots(iterations: int, seeds: list[int]) -> dict[tuple[str, int], Path]:
    """Each arm's snapshot at `iterations` for every seed, for the arms whose runs all have it (one line and exit
    when none has)."""
    return complete_arms({arm: {seed: snapshot(iterations, LONG / f"unified-cont-{arm}-s{seed}") for seed in seeds}
                          for arm in ARMS})


def against_pairs(arms: list[str], seeds: list[int], it: int, earlier: int, n: int) -> list[tuple]:
    """Each arm at `it` against itself at `earlier` iterations, per seed and pooled over the seeds."""
    out = []
    for arm in arms:
        per_seed = [(row_label(arm, s, it, n), row_label(arm, s, earlier, n)) for s in seeds]
        out += per_seed
        if len(seeds) > 1:
            pooled = "{}, +{} it, seeds " + "+".join(map(str, seeds)) + f" @{n}"
            out.append(across_seeds(per_seed, pooled.format(ARMS[arm], it), pooled.format(ARMS[arm], earlier)))
    return out


def main() -> None:
    quiet_libraries()
    parser = seeded_snapshot_parser(__doc__.splitlines()[0], 300)
    parser.add_argument("--against", type=int, help="also each evaluated arm at this many iterations, paired")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the curve and the trend table from the saved unified_rank-<N>it.json")
    args = parser.parse_args()
    if args.replot:
        return write_curve_and_trend(every_summary())
    it = args.iterations
    loras = trained_snapshots(it, args.seeds)
    arms = sorted({arm for arm, _ in loras}, key=list(ARMS).index)
    earlier = {}
    if args.against:
        earlier = {(arm, seed): snapshot(args.against, LONG / f"unified-cont-{arm}-s{seed}") for arm, seed in loras}
        require_trained(earlier.values())
    rows = [Row(TEACHER_ROW, SampleSettings(steps=50, scheduler="ddim", guidance=TEACHER_GUIDANCE))]
    start = start_lora()
    rows += [Row(f"{START} @{n}", metadata_settings(start, n)) for n in STEPS]
    rows += [Row(row_label(arm, seed, i, n), at_shipped_timesteps(lora, n)) for n in STEPS
             for i, snapshots in ((it, loras), (args.against, earlier)) for (arm, seed), lora in snapshots.items()]
    prompts = standard_prompts()[: args.prompts]
    summary = evaluate(TEACHER, rows, prompts, EVALUATOR, RUNS / "unified-rank", n_real=args.n_real)
    pairs = []
    for n in STEPS:
        names = {arm: f"{title}, +{it} it @{n}" for arm, title in ARMS.items()}
        pairs += run_pairs(COMPARED, names, lambda arm, seed, i, n=n: row_label(arm, seed, i, n), f"{START} @{n}",
                           args.seeds, it, trained=arms)
        if args.against:
            pairs += against_pairs(arms, args.seeds, it, args.against, n)
    summary["comparisons"] = compare_rows(summary, prompts, pairs)
    summary["iterations"] = it
    lines = ["# Capacity for the unified LoRA: LoRA rank of the generator and the fake score", "",
             f"{len(prompts)} ShapesEval prompts (± half-width of the 95% bootstrap interval), FD against "
             f"{args.n_real} real renders (± sd over 5 resamples). Every run continues the rank-16 unified LoRA "
             f"shipped until {START_COMMIT} with configs/dmd2-unified-gan05-g3.yaml for {it} iterations; the "
             "rank-64 runs start from it exactly (its factors fill the first 16 ranks). Rows at that LoRA's timesteps "
             f"(8 steps: trailing). Arms here: {', '.join(ARMS[a] for a in arms)}"
             + (f"; each also at {args.against} iterations." if args.against else "."),
             "", markdown_table(summary), "", "Ratios to the teacher's 50 guided steps:", "",
             *teacher_ratio_lines(summary, TEACHER_ROW), "", *comparison_table(summary["comparisons"]), "",
             f"Command: `python bench/unified_rank.py --iterations {it}"
             + (f" --against {args.against}" if args.against else "") + "` (training commands in its docstring)"]
    write_results(f"unified_rank-{it}it", summary, "\n".join(lines) + "\n")
    write_curve_and_trend(every_summary(summary))


def every_summary(current: dict | None = None) -> list[dict]:
    """The summaries of every bench/results/unified_rank-<N>it.json, `current` in place of its own file's, by N."""
    saved = [json.loads(f.read_text()) for f in RESULTS.glob("unified_rank-*it.json")]
    if current is not None:
        saved = [s for s in saved if s["iterations"] != current["iterations"]] + [current]
    return sorted(saved, key=lambda s: s["iterations"])


def arm_rows(summaries: list[dict], arm: str, n: int) -> list[tuple[int, list[dict]]]:
    """(iterations, the rows of `arm`'s seeds at n steps) for every summary that has any."""
    out = []
    for s in summaries:
        rows = rows_by_label(s)
        seeds = [rows[label] for seed in (0, 1) if (label := row_label(arm, seed, s["iterations"], n)) in rows]
        if seeds:
            out.append((s["iterations"], seeds))
    return out


def write_curve_and_trend(summaries: list[dict]) -> None:
    """bench/results/unified_rank_curve.png and unified_rank_trend.md, from every unified_rank-<N>it summary."""
    plot_curve(summaries, RESULTS / "unified_rank_curve.png")
    lines = ["# Capacity for the unified LoRA: ShapesEval against training iterations", "",
             *trend_lines(summaries), "",
             "Command: `python bench/unified_rank.py --replot` (from the saved unified_rank-<N>it.json; every "
             "evaluation also rewrites it)"]
    (RESULTS / "unified_rank_trend.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'unified_rank_trend.md'}")


def trend_lines(summaries: list[dict]) -> list[str]:
    """Markdown: for each arm with rows at three or more iteration counts (the start at 0 included), the
    least-squares line through its seeds' ShapesEval @1 and @2 against iterations, the slope's 95% bootstrap
    interval over prompts (hypersd.core.intervals.slope_interval) and where the line would cross the issue's
    targets (0.6x and 0.9x the teacher): an extrapolation, not a measurement."""
    first = rows_by_label(summaries[0])
    teacher = first[TEACHER_ROW]["shapes_eval"]["overall"]
    categories = [parse_caption(p).category for p in standard_prompts()[: summaries[0]["prompts"]]]
    lines = ["Least-squares line through each seed's ShapesEval against iterations, the start at 0 included; "
             "the slope's 95% interval is a stratified bootstrap over prompts (one resample serves every row). "
             "The crossing is an extrapolation of that line, not a measurement; a slope interval that holds 0 is no "
             "measurable trend.", "",
             "| arm | steps | rows | slope per 100 it (95%) | target | line reaches it at |",
             "|---|---|---|---|---|---|"]
    for arm, title in ARMS.items():
        for n, ratio in ((1, 0.6), (2, 0.9)):
            points = [(0, first[f"{START} @{n}"])] + [(i, r) for i, seeds in arm_rows(summaries, arm, n) for r in seeds]
            if len({i for i, _ in points}) < 3:
                continue
            x = [i for i, _ in points]
            passed = [[c == "1" for c in r["passed"]] for _, r in points]
            slope, intercept, lo, hi = slope_interval(x, passed, categories)
            target = ratio * teacher
            reach = f"{(target - intercept) / slope:,.0f} it" if slope > 0 else "never (slope <= 0)"
            lines.append(f"| {title} | {n} | {len(points)} | {100 * slope:+.4f} [{100 * lo:+.4f}, {100 * hi:+.4f}] "
                         f"| {target:.3f} ({ratio}x) | {reach} |")
    return lines


def plot_curve(summaries: list[dict], path) -> None:
    """ShapesEval at 1 and 2 steps against iterations past the rank-16 LoRA, one line per arm through its seeds'
    mean, each seed a point with its 95% interval; from every unified_rank-<N>it summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    first = rows_by_label(summaries[0])
    teacher = first[TEACHER_ROW]["shapes_eval"]["overall"]
    for ax, n, target in zip(axes, (1, 2), (0.6, 0.9)):
        (start,), start_error = shapes_eval_whiskers([first[f"{START} @{n}"]])
        ax.errorbar([0], [start], yerr=start_error, fmt="s", color="black", capsize=3,
                    label=f"rank-16 LoRA (the start; shipped until {START_COMMIT})")
        for k, (arm, title) in enumerate(ARMS.items()):
            xs, means = [0], [start]
            for iterations, seeds in arm_rows(summaries, arm, n):
                values, errors = shapes_eval_whiskers(seeds)
                x = [iterations + 6 * (k - 1.5) + 2 * j for j in range(len(seeds))]
                ax.errorbar(x, values, yerr=errors, fmt="o", color=f"C{k}", alpha=0.5, capsize=3)
                xs.append(iterations)
                means.append(sum(values) / len(values))
            if len(xs) > 1:
                ax.plot(xs, means, color=f"C{k}", label=title)
        ax.axhline(target * teacher, color="gray", linestyle=":", label=f"target {target}x the teacher")
        ax.set_title(f"unified LoRA @{n} (0 = the rank-16 LoRA shipped until {START_COMMIT})", fontsize=10)
        ax.set_xlabel("iterations past the rank-16 LoRA")
        ax.set_ylabel("ShapesEval (each seed: 95% interval)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
