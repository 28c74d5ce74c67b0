"""How fast each sampler setting reaches a good config on recorded surfaces, over many seeds.

Each (surface, setting, seed) is a study of ``--trials`` trials through the tuner's own code: its sampler
(tuner.search.samplers.make_sampler), search space sampling, the replay runner (tuner.trial.replay: the same
TrialResult, early stopping and phase seconds as a real trial), and the values, constraints and attributes a real
study records (Objective.values/constraints, trial_attrs), in an in-memory Optuna storage: no artifacts store,
notes or SQLite, which only cost time here. A warm start enqueues what Tuner._enqueue_references does. Per
setting it writes down, over seeds:

- the median fraction of the surface's best (its best recorded row) reached after 8 and 12 trials;
- the share of seeds reaching 95% (and 99%) of it by trial 12 (trial 0, the baseline, counts as a trial), with
  its binomial standard error; the same counting only answers that were a recorded row (the surface model
  answers other configs from their neighbours, tuner/trial/surface.py); how often the best of 12 was one;
- failed launches in the first 12 trials, and GPU-minutes to 95% (recorded startup + benchmark seconds);
- against the tuner's default (DEFAULT), paired by seed: the change in that share (McNemar's exact test on the
  seeds where only one got there) and the median change of the fraction at 12 (Wilcoxon signed-rank).

    python benchmarks/sampler_efficiency.py                     # every surfaces/*.json, 20 seeds, 20 trials
    python benchmarks/sampler_efficiency.py surfaces/x.json --seeds 40 --trials 12
    python benchmarks/sampler_efficiency.py x.json --seeds 40 --only 'TPE, 8 startup, baseline first' --out /tmp/x.md
    python benchmarks/sampler_efficiency.py a.json --warm-from a.json=b.json   # warm-start a's studies from b
It rewrites benchmarks/SAMPLERS.md (or --out). GP rows need torch and take ~15 s a study where GP models (without
the baseline), against ~1 s for TPE. Each surface is sampled over the search space its header names.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from surface_files import default_surfaces

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from tuner.config.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


OUT = ROOT / "benchmarks" / "SAMPLERS.md"
CHECKPOINTS = (8, 12)


@dataclass(frozen=True)
class Setting:
    label: str
    sampler: str
    n_startup_trials: int
    baseline: bool
    # TPESampler arguments in place of the tuner's (make_sampler): options compared before adopting one
    tpe: tuple[tuple[str, object], ...] = ()
    # Warm start: the surface of an earlier study of the same model and GPU, per surface replayed (--warm-from)
    warm_start: bool = False
    # False: the trials' constraints are not recorded, so TPE does not know which trials failed or broke the SLO
    constraints: bool = True
    # A sampler not (yet) in the tuner, built from (seed, search space): benchmarks/sampler_prototypes.py
    factory: Callable[[int, SearchSpace], BaseSampler] | None = None


SETTINGS = (
    [
        Setting(f"{name}, {n} startup{', baseline first' if b else ''}", sampler, n, b)
        for b in (True, False)
        for name, sampler, n in (
            ("TPE", "tpe", 8),
            ("TPE", "tpe", 4),
            ("TPE", "tpe", 2),
            ("GP", "gp", 8),
            ("GP", "gp", 4),
            ("GP", "gp", 2),
            ("random", "random", 0),
            ("defaults-walk", "defaults-walk", 8),
            ("defaults-walk", "defaults-walk", 12),
            ("sobol", "sobol", 8),
            ("sobol", "sobol", 4),
        )
    ]
    + [
        Setting(f"TPE {label}, {n} startup, baseline first", "tpe", n, True, options)
        for n in (4, 8)
        for label, options in (
            ("univariate", (("multivariate", False),)),
            ("multivariate, not grouped", (("multivariate", True),)),
            ("consider_endpoints", (("multivariate", True), ("group", True), ("consider_endpoints", True))),
            ("prior_weight 0.5", (("multivariate", True), ("group", True), ("prior_weight", 0.5))),
            ("prior_weight 2", (("multivariate", True), ("group", True), ("prior_weight", 2.0))),
        )
    ]
    + [
        Setting("TPE, 8 startup, baseline first, warm start", "tpe", 8, True, warm_start=True),
        Setting("TPE, 8 startup, warm start", "tpe", 8, False, warm_start=True),
        Setting("TPE, 8 startup, baseline first, constraints hidden", "tpe", 8, True, constraints=False),
    ]
)
# The tuner's default, against which the paired tests are made.
DEFAULT = "TPE, 8 startup, baseline first"


@functools.cache
def _surface(path: str):
    """One per worker process: its flag weights are learned once (Surface.flag_weights), not per study."""
    from tuner.trial.surface import Surface

    surface = Surface.load(path)
    surface.flag_weights()
    return surface


def run_study(
    surface_path: str, space: str, setting: Setting, seed: int, trials: int, warm_from: str | None = None
) -> list[tuple]:
    """One study of ``trials`` launches; per launch: (objective value or None when infeasible, failed launch,
    startup + benchmark s, answered by a recorded row rather than modelled, failures predicted before it)."""
    import optuna

    from tuner.config.run import load_config
    from tuner.config.space import load_space
    from tuner.search.samplers import make_sampler, warm_start_params
    from tuner.search.storage import set_trial_attrs
    from tuner.search.study import PREDICTED_IN_A_ROW, Tuner, trial_attrs
    from tuner.serve.gpu import GpuStats
    from tuner.trial.replay import ReplayLauncher
    from tuner.trial.runner import PhaseTimes, TrialResult

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surface = _surface(surface_path)
    h = surface.header
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            None,
            {
                "study": "bench",
                "trials_dir": tmp,
                "space": space,
                "trials": trials,
                "baseline": setting.baseline,
                "launcher": {"kind": "replay", "surface": surface_path},
                "workload": {
                    # an imported surface may not record ISL/OSL: the run file's defaults then stand, unchecked
                    **{k: v for k in ("input_len", "output_len") if (v := getattr(h.workload, k)) is not None},
                    "concurrency": h.workload.concurrency,
                    **h.workload.shape,
                },
                "objective": {
                    "metrics": h.objective.metrics[:1],
                    **(
                        {"slo": h.objective.slo, "load_search": dataclasses.asdict(h.objective.load_search)}
                        if h.objective.load_search
                        else {"at_concurrency": h.objective.at_concurrency}
                    ),
                },
                "sampler": {"name": setting.sampler, "seed": seed, "n_startup_trials": setting.n_startup_trials},
            },
        )
        tuner = Tuner(config, launcher=ReplayLauncher(surface, surface_path))
        tuner.space = space_obj = load_space(space)
        objective = tuner.objective
        sampler = make_sampler(config, seed)
        if setting.factory is not None:
            sampler = setting.factory(seed, space_obj)
        if setting.tpe:
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=setting.n_startup_trials, **dict(setting.tpe)
            )
        study = optuna.create_study(directions=objective.directions, sampler=sampler)
        if setting.warm_start and warm_from:  # as Tuner._enqueue_references: the baseline, then the warm configs
            if setting.baseline:
                study.enqueue_trial({})
            for params in warm_start_params(warm_from, space_obj):
                study.enqueue_trial(params)
        # What tune start predicts before launch: from the surface's model facts (an imported sweep's context
        # length) where there is no config.json; such a config is not launched, told to the sampler as
        # infeasible, and not counted against ``trials`` (launches).
        feasibility = tuner.preflight().feasibility()
        out: list[tuple] = []
        predicted_since = 0  # predicted failures since the last launch
        while len(out) < trials and predicted_since < PREDICTED_IN_A_ROW:
            trial = study.ask()
            n = trial.number
            tuned = space_obj.fixed if setting.baseline and n == 0 else space_obj.sample(trial)
            plan = tuner.plan(n, tuned, (), config.launcher.port)
            predicted = feasibility.predict(tuned, space_obj.gpus_needed(tuned))
            if predicted:
                result = TrialResult(
                    plan, predicted.failure, predicted.detail, None, PhaseTimes(), None, GpuStats(), {}, launched=False
                )
            else:
                result = tuner.runner(study, None).run(plan)
            constraints = objective.constraints(result)
            feasible = all(c <= 0 for c in constraints)
            set_trial_attrs(
                study,
                trial,
                {**trial_attrs(result, objective), "feasible": feasible},
                system={"constraints": constraints} if setting.constraints else {},
            )
            values = objective.values(result)
            study.tell(trial, values)
            if predicted:
                predicted_since += 1
                continue
            recorded = bool(result.replayed and not result.replayed.modelled)
            out.append(
                (
                    values[0] if feasible else None,
                    not result.ok,
                    result.times.startup_s + result.times.benchmark_s,
                    recorded,
                    predicted_since,
                )
            )
            predicted_since = 0
        return out


def summarise(runs: list[list[tuple]], best: float, maximize: bool) -> dict:
    def frac(v: float | None) -> float:
        if v is None:
            return 0.0
        return v / best if maximize else best / v

    curves = []
    for run in runs:
        so_far, curve = 0.0, []
        for value, *_ in run:
            so_far = max(so_far, frac(value))
            curve.append(so_far)
        curves.append(curve)
    at12 = [c[min(12, len(c)) - 1] for c in curves]
    row: dict = {f"at{k}": statistics.median(c[min(k, len(c)) - 1] for c in curves) for k in CHECKPOINTS}
    row["frac12"] = at12
    row["hit95"] = [f >= 0.95 for f in at12]
    n = len(curves)
    row["share95"] = sum(row["hit95"]) / n
    row["se95"] = math.sqrt(row["share95"] * (1 - row["share95"]) / n)
    row["share99"] = sum(f >= 0.99 for f in at12) / n
    # Whether the best of the first 12 was a recorded row's answer (else the surface model's, from neighbours).
    firsts = [
        max(range(min(12, len(run))), key=lambda i, run=run: frac(run[i][0]) if run[i][0] is not None else -1.0)
        for run in runs
    ]
    row["recorded12"] = sum(run[i][3] for run, i in zip(runs, firsts, strict=True)) / n
    # The same bar counting only answers that were a recorded row (a modelled answer may flatter a sampler).
    row["recorded95"] = sum(any(r[3] and frac(r[0]) >= 0.95 for r in run[:12]) for run in runs) / n
    minutes = []
    for run, curve in zip(runs, curves, strict=True):
        first = next((i for i, f in enumerate(curve) if f >= 0.95), None)
        if first is not None:
            minutes.append(sum(r[2] for r in run[: first + 1]) / 60)
    row["gpu_min95"] = statistics.median(minutes) if minutes else None
    row["reached95"] = len(minutes)
    row["failures12"] = statistics.fmean(sum(r[1] for r in run[:12]) for run in runs)
    return row


def paired(a: dict, b: dict) -> str:
    """``b`` against ``a`` seed for seed: the change in share at 95% by 12 with McNemar's exact p (the seeds
    where only one of them got there), and the median change of the fraction at 12 with Wilcoxon's p."""
    from scipy.stats import binomtest, wilcoxon

    only_b = sum(y and not x for x, y in zip(a["hit95"], b["hit95"], strict=True))
    only_a = sum(x and not y for x, y in zip(a["hit95"], b["hit95"], strict=True))
    p_share = binomtest(only_b, only_b + only_a).pvalue if only_a + only_b else 1.0
    diffs = [y - x for x, y in zip(a["frac12"], b["frac12"], strict=True)]
    p_frac = wilcoxon(diffs).pvalue if any(diffs) else 1.0
    return (
        f"{100 * (b['share95'] - a['share95']):+.0f} pts (McNemar p={p_share:.2f}), "
        f"{statistics.median(diffs):+.3f} (Wilcoxon p={p_frac:.2f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("surfaces", nargs="*", help="surface files (default: surfaces/*.json)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="processes (this machine has 2 cores)")
    ap.add_argument("--samplers", default="tpe,gp,random,defaults-walk,sobol", help="which samplers (GP needs torch)")
    ap.add_argument("--only", action="append", default=[], help="settings whose label is this (repeatable)")
    ap.add_argument(
        "--warm-from",
        action="append",
        default=[],
        metavar="SURFACE=EARLIER",
        help="warm-start studies on SURFACE from the surface EARLIER (same model or GPU); repeatable",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    warm_from = dict(w.split("=", 1) for w in args.warm_from)
    wanted = args.samplers.split(",")
    skipped = ""
    if "gp" in wanted and importlib.util.find_spec("torch") is None:
        wanted.remove("gp")
        skipped = "GP rows: not run, Optuna's GPSampler needs torch and this machine has none. "
    settings = [s for s in SETTINGS if s.sampler in wanted and (not args.only or s.label in args.only)]
    os.chdir(ROOT)  # surfaces name their search space relative to the repository
    from tuner.trial.replay import recorded_words
    from tuner.trial.surface import Surface

    paths = args.surfaces or [str(p.relative_to(ROOT)) for p in default_surfaces()]
    t0 = time.monotonic()
    lines = [
        "# Sampler efficiency on recorded surfaces",
        "",
        f"`python benchmarks/sampler_efficiency.py --seeds {args.seeds} --trials {args.trials}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({os.cpu_count()} CPUs): "
        f"replayed studies, the tuner's sampler and records (see the script's docstring). Fractions are of "
        f"the surface's best recorded value, medians over seeds; trial 0 counts as a trial. {skipped}"
        f"Seconds and GPU-minutes are the surface's recorded ones (a stand-in's are its own scaled seconds, "
        f"not a GPU's).",
        "",
    ]
    for path in paths:
        surface = Surface.load(path)
        h = surface.header
        space = h.space
        best = surface.best()
        maximize = not h.objective.metrics[0].endswith("_ms")
        here = [s for s in settings if not s.warm_start or path in warm_from]
        with ProcessPoolExecutor(args.workers) as pool:
            jobs = {
                setting: [
                    pool.submit(run_study, path, space, setting, seed, args.trials, warm_from.get(path))
                    for seed in range(args.seeds)
                ]
                for setting in here
            }
            results = {s: [f.result() for f in fs] for s, fs in jobs.items()}
        base = next((r for r in surface.rows if r.baseline and r.ok), None)
        base_value = surface.value(base) if base else None
        base_frac = (base_value / best if maximize else best / base_value) if base_value else None
        lines += [
            f"## {path}",
            "",
            f"{recorded_words(surface)}: {len(surface.rows)} recorded trials "
            f"({sum(not r.ok for r in surface.rows)} failed) of {h.source}, space {space}; objective "
            f"{h.objective.metrics[0]} at c={h.objective.at_concurrency}, best recorded {best:.1f}"
            + (f"; SGLang's defaults (the baseline) reach {base_frac:.3f} of it" if base_frac else "")
            + (f"; warm start from {warm_from[path]}" if path in warm_from else "")
            + ".",
            "",
            f"| setting | @8 | @12 | seeds >= 95% by 12 (± s.e.) | >= 99% by 12 | best of 12 a recorded row | "
            f"seeds >= 95% by 12, recorded rows only | "
            f"failed launches in 12 | GPU-min to 95% | seeds reaching 95% in {args.trials} | "
            "vs the default (TPE, 8 startup), paired by seed: share, fraction at 12 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        rows = {setting: summarise(runs, best, maximize) for setting, runs in results.items()}
        labels = {s.label for s in rows}
        # Without the baseline rows (a surface without a defaults row), the default sampler without it.
        default_label = next((d for d in (DEFAULT, DEFAULT.removesuffix(", baseline first")) if d in labels), None)
        default = next((r for s, r in rows.items() if s.label == default_label), None)
        for setting, r in rows.items():
            gpu_min = f"{r['gpu_min95']:.1f}" if r["gpu_min95"] is not None else "–"
            vs = paired(default, r) if default is not None and setting.label != default_label else ""
            lines.append(
                f"| {setting.label} | {r['at8']:.3f} | {r['at12']:.3f} | "
                f"{100 * r['share95']:.0f}% ± {100 * r['se95']:.0f} | {100 * r['share99']:.0f}% | "
                f"{100 * r['recorded12']:.0f}% | {100 * r['recorded95']:.0f}% | {r['failures12']:.2f} | {gpu_min} | "
                f"{r['reached95']}/{args.seeds} | {vs} |"
            )
        lines.append("")
    lines.append(f"Ran in {time.monotonic() - t0:.0f} s.")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
