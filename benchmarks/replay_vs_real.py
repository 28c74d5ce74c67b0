"""Whether a replayed study costs what the real one did, trial by trial, stand-bys included (issue 22).

The two H100 pairs of 2026-12-06 (benchmarks/h200/gpu-seconds/h100-pair/ and h100-pair2/: each on one machine, the
same configs, "standby" with the defaults and SGLang's spawned processes on stand-bys, "before" with every
trial-cost switch off; the first pair ran standby first, the second before first), each study recorded by `tune
record` as it ran (benchmarks/surfaces/<pair>-before.json, <pair>-standby.json), are replayed here with each side's
own run file (benchmarks/h200/gpu-seconds-{before,standby}.yaml, launcher kind replay) and the same trials enqueued
in the same order as benchmarks/h200/gpu_seconds.sh did: SGLang's defaults, then the sampled configs of
gpu-seconds-configs.yaml, as many as the side's surface recorded. The surface both replays of a pair read is the
before study's rows (whole curves, each trial's own imports phase), each with the scheduler's imports that its
stand-by measured in the standby study (a fresh launch pays them inside its spawn phase), then the standby rows of
configs the before study did not run. So the "standby" replay predicts the standby study's cost from the before
study's measurements plus the stand-bys' import counts: how far apart they are is what a replayed study's
GPU-seconds are worth. Writes Markdown on stdout: per pair and trial, real against replayed GPU-seconds, startup
and levels; then the totals per side.

    python benchmarks/replay_vs_real.py                 # both pairs
    python benchmarks/replay_vs_real.py --pair h100-pair2
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
PAIRS = ("h100-pair", "h100-pair2")
SIDES = ("before", "standby")


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


def replayed(side: str, trials: int, surface: Path, folder: Path) -> list[TrialRecord]:
    config = load_config(
        H200 / f"gpu-seconds-{side}.yaml",
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


def real(pair: str, side: str) -> list[TrialRecord]:
    storage = f"sqlite:///{H200 / 'gpu-seconds' / pair / f'{side}.db'}"
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


def compare(pair: str) -> None:
    """One pair's table and totals."""
    recorded = {side: Surface.load(SURFACES / f"{pair}-{side}.json") for side in SIDES}
    surface = merged(recorded["before"], recorded["standby"])
    print(f"### {pair}\n")
    print(
        "| side | trial | answered from | real GPU-s | replayed GPU-s | real startup s | replayed startup s "
        "| real levels | replayed levels |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = surface.save(folder / f"{pair}.json")
        for side in SIDES:
            # As many trials as the side's surface recorded (a study may have run more after it was recorded).
            n = len(recorded[side].rows)
            pairs = list(zip(real(pair, side)[:n], replayed(side, n, path, folder), strict=True))
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
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=PAIRS, action="append", help="one pair (default: both)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for pair in args.pair or PAIRS:
        compare(pair)


if __name__ == "__main__":
    main()
