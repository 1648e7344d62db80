"""95% intervals for the tables written before the benchmarks kept per-prompt judgements (hyper_tables,
one_step, tscd_ablation in bench/results/). Their JSON keeps each row's per-category pass rates, which is
enough for the normal approximation of the stratified bootstrap (hypersd.core.intervals.
stratified_normal_interval; it matches the bootstrap within 0.006 on the teacher's rates, tests/test_intervals.py).
Paired verdicts need the per-prompt judgements, so these tables get intervals but no paired comparisons; the
rows measured again since are in one_step_table.md and unified_schedule.md.

    python bench/old_table_intervals.py
Adds `shapes_eval_ci95_normal` to each row of the JSON and `± half-width` to the overall cell of the markdown.
"""

from __future__ import annotations

import json

from common import RESULTS  # bench/common.py

from hypersd.core.intervals import stratified_normal_interval
from hypersd.shapes.world import CATEGORIES

TABLES = ("hyper_tables", "one_step", "tscd_ablation")
MARK = "(± 95% CI, normal approx.)"


def annotate(stem: str) -> int:
    """Intervals into bench/results/<stem>.{json,md}; returns the number of rows annotated."""
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    summary = json.loads(json_path.read_text())
    per_category = summary["prompts"] // len(CATEGORIES)
    lines, done = md_path.read_text().split("\n"), 0
    for row in summary["rows"]:
        lo, hi = stratified_normal_interval([row["shapes_eval"][c] for c in CATEGORIES], per_category)
        row["shapes_eval_ci95_normal"] = [lo, hi]
        cell = f"**{row['shapes_eval']['overall']:.3f}**"
        for i, line in enumerate(lines):
            if line.startswith(f"| {row['label']} |") and cell + " |" in line:
                lines[i] = line.replace(cell + " |", f"{cell} ± {(hi - lo) / 2:.3f} |", 1)
                done += 1
    lines = [line.replace("| overall |", f"| overall {MARK} |", 1) if line.startswith("| model |") else line
             for line in lines]
    json_path.write_text(json.dumps(summary, indent=2))
    md_path.write_text("\n".join(lines))
    return done


def main() -> None:
    for stem in TABLES:
        if MARK in (RESULTS / f"{stem}.md").read_text():
            print(f"{stem}: already annotated")
            continue
        print(f"{stem}: {annotate(stem)} rows")


if __name__ == "__main__":
    main()
