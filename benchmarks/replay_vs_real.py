"""Whether a replayed study costs what the real one did, trial by trial, stand-bys included (issue 22).

The H100 pair of 2026-12-06 (benchmarks/h200/gpu-seconds/h100-pair/: one machine, the same configs, "standby"
with the defaults and SGLang's spawned processes on stand-bys, then "before" with every trial-cost switch off),
each recorded by `tune record` as it ran (benchmarks/surfaces/h100-pair-before.json, h100-pair-standby.json), is
replayed here with each side's own run file (benchmarks/h200/gpu-seconds-{before,standby}.yaml, launcher kind
replay) and the same trials enqueued in the same order as benchmarks/h200/gpu_seconds.sh did: SGLang's defaults,
then the three sampled configs of gpu-seconds-configs.yaml. The surface both replays read is the before study's
rows (whole curves, each trial's own imports phase), each with the scheduler's imports that its stand-by measured
in the standby study (a fresh launch pays them inside its spawn phase), then the standby rows of configs the
before study did not run. So the "standby" replay predicts the standby study's cost from the before study's
measurements plus the stand-bys' import counts: how far apart they are is what a replayed study's GPU-seconds
are worth. Writes Markdown on stdout: per trial, real against replayed GPU-seconds, startup and levels; then the
totals per side.

    python benchmarks/replay_vs_real.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna
import yaml

from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.trial.record import TrialRecord, records
from tuner.trial.surface import Surface, point_of

H200 = ROOT / "benchmarks" / "h200"
SURFACES = ROOT / "benchmarks" / "surfaces"
# side -> (its run file, its real study database, how many trials it ran)
SIDES = {
    "before": (H200 / "gpu-seconds-before.yaml", H200 / "gpu-seconds" / "h100-pair" / "before.db", 3),
    "standby": (H200 / "gpu-seconds-standby.yaml", H200 / "gpu-seconds" / "h100-pair" / "standby.db", 4),
}


def merged(before: Surface, standby: Surface) -> Surface:
    """The before rows with the scheduler imports the standby study's stand-bys measured for the same flags, then
    the standby rows of configs the before study did not run."""
    spawn = {
        tuple(sorted(point_of(r.flags).items())): r.spawn_imports_s
        for r in standby.rows
        if r.spawn_imports_s is not None
    }
    rows = [
        r.model_copy(update={"spawn_imports_s": spawn.get(tuple(sorted(point_of(r.flags).items())))})
        for r in before.rows
    ]
    known = [point_of(r.flags) for r in before.rows]
    rows += [r.model_copy(update={"trial": 100 + r.trial}) for r in standby.rows if point_of(r.flags) not in known]
    return before.model_copy(update={"rows": rows})


def replayed(side: str, surface: Path, folder: Path) -> list[TrialRecord]:
    run, _, trials = SIDES[side]
    config = load_config(
        run,
        {
            "study": f"replay-{side}",
            "trials": trials,
            "storage": f"sqlite:///{folder}/{side}.db",
            "trials_dir": str(folder / "trials"),
            "launcher.kind": "replay",
            "launcher.surface": str(surface),
        },
    )
    study = Tuner(config).prepare()
    # As gpu_seconds.sh enqueues them (the real studies' order): the defaults, then the three sampled configs.
    study.enqueue_trial({}, user_attrs=TrialRecord(baseline=True).attrs())
    for params in yaml.safe_load((H200 / "gpu-seconds-configs.yaml").read_text()):
        study.enqueue_trial(params)
    return records(Tuner(config).run(), (optuna.trial.TrialState.COMPLETE,))


def real(side: str) -> list[TrialRecord]:
    storage = f"sqlite:///{SIDES[side][1]}"
    name = optuna.study.get_all_study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    return records(study, (optuna.trial.TrialState.COMPLETE,))


def gpu_s(r: TrialRecord) -> float:
    t = r.times
    return (t.startup_s or 0) + (t.benchmark_s or 0) + (t.stop_s or 0)


def source(r: TrialRecord) -> str:
    """The row a replayed trial was answered from: the before study's trial N, or the standby study's (100 + N)."""
    assert r.replay is not None
    return ", ".join(f"standby {n - 100}" if n >= 100 else f"before {n}" for n in r.replay.sources)


def levels(r: TrialRecord) -> str:
    return " ".join(f"{lv.request_rate:g}:{'y' if lv.slo_pass else 'n'}" for lv in r.levels or () if lv.request_rate)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    surface = merged(
        Surface.load(SURFACES / "h100-pair-before.json"), Surface.load(SURFACES / "h100-pair-standby.json")
    )
    print(
        "| side | trial | answered from | real GPU-s | replayed GPU-s | real startup s | replayed startup s "
        "| real levels | replayed levels |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = surface.save(folder / "h100-pair.json")
        for side in SIDES:
            pairs = list(zip(real(side), replayed(side, path, folder), strict=True))
            for a, b in pairs:
                print(
                    f"| {side} | {a.number}{' (defaults)' if a.baseline else ''} | {source(b)} "
                    f"| {gpu_s(a):.1f} | {gpu_s(b):.1f} "
                    f"| {a.times.startup_s or 0:.1f} | {b.times.startup_s or 0:.1f} | {levels(a)} | {levels(b)} |"
                )
            totals.append((side, sum(gpu_s(a) for a, _ in pairs), sum(gpu_s(b) for _, b in pairs), len(pairs)))
    print()
    for side, got, guess, n in totals:
        print(f"- **{side}**, {n} trials: real {got:.0f} GPU-s, replayed {guess:.0f} ({guess / got - 1:+.1%})")


if __name__ == "__main__":
    main()
