"""Leave-one-out error of the replay model (tuner/trial/surface.py: IDW 3-nearest-neighbours) on recorded surfaces.

Each recorded row is left out in turn and answered from the others, as a replay answers a config it has no row
for; its recorded numbers are the truth. Compared with the simplest alternative, the mean of the other rows.
A left-out trial whose flags another row repeats is answered by that row: its error is the run-to-run noise.

    python benchmarks/surface_model.py [surfaces/*.json]     # writes benchmarks/SURFACE_MODEL.md
"""

from __future__ import annotations

import platform
import statistics
import sys
from datetime import date
from pathlib import Path

from surface_files import default_surfaces

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner.trial.replay import recorded_words
from tuner.trial.surface import Surface, point_of

OUT = ROOT / "benchmarks" / "SURFACE_MODEL.md"
METRICS = ("output_throughput", "median_ttft_ms", "median_tpot_ms")


def _level(levels, c):
    return next((lv for lv in levels if lv.concurrency == c), None)


def evaluate(path: Path) -> list[str]:
    s = Surface.load(path)
    at = s.header.objective.at_concurrency
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    equal_errors: dict[str, list[float]] = {m: [] for m in METRICS}
    mean_errors: dict[str, list[float]] = {m: [] for m in METRICS}
    fail_right = equal_fail_right = fail_total = 0
    lines = [
        f"### {path.relative_to(ROOT)}",
        "",
        f"{recorded_words(s)}, {len(s.rows)} rows ({sum(not r.ok for r in s.rows)} failed), from {s.header.source}.",
        "",
        f"| left out | repeat of another row | answered from | recorded {METRICS[0]} c={at} | predicted | error |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for row in s.rows:
        # Nested: the flag weights are learned without the left-out row too.
        a = s.answer(row.flags, exclude=row.trial, flag_weights=s.flag_weights(exclude=row.trial))
        eq = s.answer(row.flags, exclude=row.trial, flag_weights={})
        fail_total += 1
        fail_right += (a.failure_class is None) == row.ok
        equal_fail_right += (eq.failure_class is None) == row.ok
        repeat = any(r.trial != row.trial and point_of(r.flags) == point_of(row.flags) for r in s.rows)
        if not row.ok or a.failure_class is not None:
            lines.append(
                f"| {row.trial} | {'yes' if repeat else 'no'} | {a.sources} | {row.failure_class or 'ok'} "
                f"| {a.failure_class or 'ok'} | |"
            )
            continue
        others = [r for r in s.rows if r.trial != row.trial and r.ok]
        for m in METRICS:
            for c in s.header.workload.concurrency:
                true, pred, pred_eq = _level(row.levels, c), _level(a.levels, c), _level(eq.levels, c)
                if true is None or pred is None:
                    continue
                t = getattr(true, m)
                errors[m].append(abs(getattr(pred, m) / t - 1))
                if pred_eq is not None:
                    equal_errors[m].append(abs(getattr(pred_eq, m) / t - 1))
                vals = [getattr(lv, m) for r in others if (lv := _level(r.levels, c))]
                mean_errors[m].append(abs(statistics.fmean(vals) / t - 1))
        t, p = _level(row.levels, at), _level(a.levels, at)
        if t and p:
            lines.append(
                f"| {row.trial} | {'yes' if repeat else 'no'} | {a.sources} | "
                f"{getattr(t, METRICS[0]):.1f} | {getattr(p, METRICS[0]):.1f} | "
                f"{100 * (getattr(p, METRICS[0]) / getattr(t, METRICS[0]) - 1):+.1f}% |"
            )
    lines += [
        "",
        f"Learned flag weights (all rows): {s.flag_weights()}.",
        "",
        "Absolute relative error over every level of the rows both recorded and predicted as successes, median / max:",
        "",
        "| metric | IDW 3-NN, learned weights | IDW 3-NN, equal weights | mean of the other rows |",
        "|---|---:|---:|---:|",
    ]

    def cell(e):
        return f"{100 * statistics.median(e):.1f}% / {100 * max(e):.1f}%" if e else "–"

    for m in METRICS:
        lines.append(f"| {m} | {cell(errors[m])} | {cell(equal_errors[m])} | {cell(mean_errors[m])} |")
    lines += [
        "",
        f"Failure or success predicted right: {fail_right} of {fail_total} with learned weights, "
        f"{equal_fail_right} of {fail_total} with equal weights.",
        "",
    ]
    return lines


def main() -> None:
    paths = [Path(p).resolve() for p in sys.argv[1:]] or default_surfaces()
    lines = [
        "# Replay model: leave-one-out error",
        "",
        f"`python benchmarks/surface_model.py` on {date.today()}, {platform.node()} "
        f"({platform.processor() or platform.machine()}); pure arithmetic, no timing.",
        "",
        "The model (tuner/trial/surface.py `Surface.answer`): a config recorded in the surface is answered by its "
        "row; any other by the inverse-distance-weighted (1/d^2) mean of its 3 nearest rows, the distance "
        "Euclidean over every flag (numbers min-max normalised, log scale past a 4x range; choices and "
        "switches 0 or 1), each flag weighted by how much it moves the numbers (weights 0, 1/4, 1 or 4 "
        "learned from the rows by leave-one-out, `Surface.flag_weights`). A weighted majority of failed "
        "neighbours predicts a failure. Here each row is left out of the weight learning too (nested).",
        "",
    ]
    for path in paths:
        lines += evaluate(path)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
