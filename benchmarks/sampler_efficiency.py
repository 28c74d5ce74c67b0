"""How fast each sampler setting reaches a good config on recorded surfaces, over many seeds.

Each (surface, setting, seed) is a study of ``--trials`` trials through the tuner's own code: its sampler
(tuner.search.storage.make_sampler), search space sampling, the replay runner (tuner.trial.replay: the same TrialResult,
early stopping and phase seconds as a real trial), and the values, constraints and attributes a real study
records (Objective.values/constraints, trial_attrs), in an in-memory Optuna storage: no artifacts store, notes or
SQLite, which only cost time here. Per setting it writes down, medians over seeds:

- the fraction of the surface's best (its best recorded row) reached after 8, 12 and 20 trials;
- the share of seeds reaching 95% (and 99%) of it by trial 12 (trial 0, the baseline, counts as a trial);
- GPU-minutes to 95%: the recorded startup + benchmark seconds of the trials up to the first one at 95%;
- launches wasted on failures (failed launches per study).

    python benchmarks/sampler_efficiency.py                     # every surfaces/*.json, 20 seeds, 20 trials
    python benchmarks/sampler_efficiency.py surfaces/x.json --seeds 30
    python benchmarks/sampler_efficiency.py x.json --seeds 40 --only 'TPE, 4 startup' --out /tmp/x.md   # a few rows
It rewrites benchmarks/SAMPLERS.md (or --out). GP rows need torch and take ~15 s a study where GP models (without
the baseline), against ~1 s for TPE. Each surface is sampled over the search space its header names.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from surface_files import default_surfaces

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


OUT = ROOT / "benchmarks" / "SAMPLERS.md"
CHECKPOINTS = (8, 12, 20)


@dataclass(frozen=True)
class Setting:
    label: str
    sampler: str
    n_startup_trials: int
    baseline: bool
    # TPESampler arguments in place of the tuner's (make_sampler): options compared before adopting one
    tpe: tuple[tuple[str, object], ...] = ()


SETTINGS = [
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
    )
] + [
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


@functools.cache
def _surface(path: str):
    """One per worker process: its flag weights are learned once (Surface.flag_weights), not per study."""
    from tuner.trial.surface import Surface

    surface = Surface.load(path)
    surface.flag_weights()
    return surface


def run_study(surface_path: str, space: str, setting: Setting, seed: int, trials: int) -> list[tuple]:
    """One study; per trial: (objective value or None when infeasible, failed launch, startup + benchmark s)."""
    import optuna

    from tuner.config.run import load_config
    from tuner.config.space import load_space
    from tuner.search.storage import make_sampler, set_trial_attrs
    from tuner.search.study import Tuner, trial_attrs
    from tuner.trial.replay import ReplayLauncher

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
                "objective": {"metrics": h.objective.metrics[:1], "at_concurrency": h.objective.at_concurrency},
                "sampler": {"name": setting.sampler, "seed": seed, "n_startup_trials": setting.n_startup_trials},
            },
        )
        tuner = Tuner(config, launcher=ReplayLauncher(surface, surface_path))
        tuner.space = space_obj = load_space(space)
        objective = tuner.objective
        sampler = make_sampler(config, seed)
        if setting.tpe:
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=setting.n_startup_trials, **dict(setting.tpe)
            )
        study = optuna.create_study(directions=objective.directions, sampler=sampler)
        out = []
        for n in range(trials):
            trial = study.ask()
            tuned = space_obj.fixed if setting.baseline and n == 0 else space_obj.sample(trial)
            result = tuner.runner(study, None).run(tuner.plan(n, tuned, (), config.launcher.port))
            constraints = objective.constraints(result)
            feasible = all(c <= 0 for c in constraints)
            set_trial_attrs(
                study,
                trial,
                {**trial_attrs(result, objective), "feasible": feasible},
                system={"constraints": constraints},
            )
            values = objective.values(result)
            study.tell(trial, values)
            out.append(
                (values[0] if feasible else None, not result.ok, result.times.startup_s + result.times.benchmark_s)
            )
        return out


def summarise(runs: list[list[tuple]], best: float, maximize: bool) -> dict:
    def frac(v: float | None) -> float:
        if v is None:
            return 0.0
        return v / best if maximize else best / v

    curves = []
    for run in runs:
        so_far, curve = 0.0, []
        for value, _, _ in run:
            so_far = max(so_far, frac(value))
            curve.append(so_far)
        curves.append(curve)
    row = {f"at{k}": statistics.median(c[min(k, len(c)) - 1] for c in curves) for k in CHECKPOINTS}
    row["share95"] = sum(c[min(12, len(c)) - 1] >= 0.95 for c in curves) / len(curves)
    row["share99"] = sum(c[min(12, len(c)) - 1] >= 0.99 for c in curves) / len(curves)
    minutes = []
    for run, curve in zip(runs, curves, strict=True):
        first = next((i for i, f in enumerate(curve) if f >= 0.95), None)
        if first is not None:
            minutes.append(sum(s for _, _, s in run[: first + 1]) / 60)
    row["gpu_min95"] = statistics.median(minutes) if minutes else None
    row["reached95"] = len(minutes)
    row["failures"] = statistics.fmean(sum(failed for _, failed, _ in run) for run in runs)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("surfaces", nargs="*", help="surface files (default: surfaces/*.json)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="processes (this machine has 2 cores)")
    ap.add_argument("--samplers", default="tpe,gp,random", help="which of tpe, gp, random (GP needs torch)")
    ap.add_argument("--only", action="append", default=[], help="settings whose label is this (repeatable)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
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
        jobs = {}
        with ProcessPoolExecutor(args.workers) as pool:
            for setting in settings:
                jobs[setting] = [
                    pool.submit(run_study, path, space, setting, seed, args.trials) for seed in range(args.seeds)
                ]
            results = {s: [f.result() for f in fs] for s, fs in jobs.items()}
        base = next((r for r in surface.rows if r.baseline and r.ok), None)
        base_frac = (
            next(
                (
                    getattr(lv, h.objective.metrics[0]) / best
                    for lv in base.levels
                    if lv.concurrency == h.objective.at_concurrency
                ),
                None,
            )
            if base
            else None
        )
        lines += [
            f"## {path}",
            "",
            f"{recorded_words(surface)}: {len(surface.rows)} recorded trials "
            f"({sum(not r.ok for r in surface.rows)} failed) of {h.source}, space {space}; objective "
            f"{h.objective.metrics[0]} at c={h.objective.at_concurrency}, best recorded {best:.1f}"
            + (f"; SGLang's defaults (the baseline) reach {base_frac:.3f} of it" if base_frac else "")
            + ".",
            "",
            "| setting | best/surface best @8 | @12 | @20 | seeds >= 95% by 12 | >= 99% by 12 | "
            "GPU-min to 95% (median) | seeds reaching 95% | failed launches / study |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for setting, runs in results.items():
            r = summarise(runs, best, maximize)
            gpu_min = f"{r['gpu_min95']:.1f}" if r["gpu_min95"] is not None else "–"
            lines.append(
                f"| {setting.label} | {r['at8']:.3f} | {r['at12']:.3f} | {r['at20']:.3f} | "
                f"{100 * r['share95']:.0f}% | {100 * r['share99']:.0f}% | {gpu_min} | "
                f"{r['reached95']}/{len(runs)} | {r['failures']:.2f} |"
            )
        lines.append("")
    lines.append(f"Ran in {time.monotonic() - t0:.0f} s.")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
