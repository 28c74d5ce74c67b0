"""Issue 22 on the H200: GPU-seconds per trial before and after the trial-cost work, from two real studies.

benchmarks/h200/gpu_seconds.sh runs the same four configs (SGLang's defaults with triton attention, the seed's
Balanced-v2, trials 4 and 7 of the recorded chat study) as two studies on one H200, one trial of each in turn:
"before" with every switch of the work off (benchmarks/h200/gpu-seconds-before.yaml: the plain ramp from
start_rate and two bisections, two warm-up requests, no shared compile cache) and "after" with the defaults
(gpu-seconds-after.yaml). This reads both study databases and writes, as Markdown on stdout, per config: its
startup (and phases from SGLang's log), warm-up, load search, stop and whole GPU-seconds, its levels, its verdict
and goodput, before against after; then the totals, the ratio and whether both studies chose the same best config.

    python benchmarks/h200_gpu_seconds.py [BEFORE.db AFTER.db ...] [--after-trials N ...]

--after-trials pairs only those trials of the after study (a config measured again after a change: the H100's
stand-by study ran the three sampled configs twice, once with its stand-bys refused); the others stay in the table.
More than one pair of databases (the H100's two pairs, one run in each order): each pair's table, then all paired
trials pooled, with a 95% interval of the per-trial ratio from resampling the paired trials as the design has them
(the baselines among themselves, the other configs among themselves; 20,000 draws, seeded).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna

from tuner.trial.record import TrialRecord, best_or_none, records

DBS = ROOT / "benchmarks" / "h200" / "gpu-seconds"


def _name(r: TrialRecord) -> str:
    return "defaults (triton attention)" if r.baseline else (r.reference or f"trial {r.number}")


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _verdict(r: TrialRecord) -> str:
    if r.failed:
        return f"failed: {r.failure_class}"
    if r.stopped_early and "cannot beat" in r.stopped_early:
        return "stopped: cannot beat the incumbent"
    return ("feasible" if r.feasible else "infeasible") + (" (stopped early)" if r.stopped_early else "")


def _study(path: Path) -> tuple[list[TrialRecord], TrialRecord | None]:
    storage = f"sqlite:///{path}"
    name = optuna.study.get_all_study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    return records(study, (optuna.trial.TrialState.COMPLETE,)), best_or_none(study)


def _pairs(before: list[TrialRecord], after: list[TrialRecord]) -> list[tuple[TrialRecord, TrialRecord]]:
    """Each after trial with the first before trial not yet paired that ran the same flags (the studies may hold
    other trials, or these in another order: the recorded chat study as the H200's before)."""
    left, pairs = list(before), []
    for a in after:
        b = next((b for b in left if b.flags == a.flags), None)
        if b is not None:
            left.remove(b)
            pairs.append((b, a))
    return pairs


def _gpu_s(r: TrialRecord) -> float:
    return sum(x or 0 for x in (r.times.startup_s, r.times.benchmark_s, r.times.stop_s))


def _interval(pairs: list[tuple[TrialRecord, TrialRecord]], draws: int = 20_000) -> tuple[float, float]:
    """95% interval of sum(before) / sum(after), each draw resampling the baseline pairs and the others apart."""
    strata = [[p for p in pairs if p[0].baseline == base] for base in (True, False)]
    rng, ratios = random.Random(0), []
    for _ in range(draws):
        drawn = [rng.choice(stratum) for stratum in strata for _ in stratum]
        ratios.append(sum(_gpu_s(b) for b, _ in drawn) / sum(_gpu_s(a) for _, a in drawn))
    ratios.sort()
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def _table(before_db: Path, after_db: Path, after_trials: list[int] | None) -> list[tuple[TrialRecord, TrialRecord]]:
    """One pair of studies: the table and its totals; returns its paired trials."""
    (before, best_before), (after, best_after) = _study(before_db), _study(after_db)
    print(
        "| config | side | startup s | imports / spawn / weights / KV / graphs / SGLang warm-up s | our warm-up s "
        "| load search s | stop s | GPU-s | levels (rate: held?) | verdict | goodput req/s |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---|---|---:|")
    totals = {"before": [0.0, 0.0, 0.0, 0], "after": [0.0, 0.0, 0.0, 0]}
    pairs = _pairs(before, [a for a in after if after_trials is None or a.number in after_trials])
    paired = {id(r) for pair in pairs for r in pair}
    rows = [
        *pairs,
        *((b, None) for b in before if id(b) not in paired),
        *((None, a) for a in after if id(a) not in paired),
    ]
    for b, a in rows:
        for side, r in (("before", b), ("after", a)):
            if r is None:
                continue
            t, p = r.times, r.startup
            gpu_s = _gpu_s(r)
            search_s = (t.benchmark_s or 0) - (r.warmup_s or 0)
            if b is not None and a is not None:  # an unpaired trial is in the table, not in the totals
                tot = totals[side]
                tot[0] += gpu_s
                tot[1] += t.startup_s or 0
                tot[2] += t.benchmark_s or 0
                tot[3] += 1
            phases = " / ".join(
                _s(x) for x in (p.imports_s, p.spawn_s, p.weights_s, p.kv_pool_s, p.cuda_graph_s, p.warmup_s)
            )
            levels = " ".join(
                f"{lv.request_rate:g}:{'y' if lv.slo_pass else 'n'}" for lv in r.levels or () if lv.request_rate
            )
            print(
                f"| {_name(r)} | {side} | {_s(t.startup_s)} | {phases} | {_s(r.warmup_s)} | {_s(search_s)} "
                f"| {_s(t.stop_s)} | {gpu_s:.1f} | {levels} | {_verdict(r)} | {_s(r.goodput)} |"
            )
    print()
    for side, (gpu_s, startup_s, bench_s, n) in totals.items():
        if n:
            print(
                f"- **{side}**, the {n} paired trials: {gpu_s:.0f} GPU-s ({gpu_s / n:.1f} per trial: "
                f"startup {startup_s / n:.1f}, benchmark {bench_s / n:.1f})"
            )
    for b, a in pairs:
        gb, ga = _gpu_s(b), _gpu_s(a)
        sb, sa = ((r.times.benchmark_s or 0) for r in (b, a))
        print(
            f"- {_name(b)}: {gb:.0f} GPU-s before, {ga:.0f} after ({gb / ga:.2f}x); its benchmark {sb:.0f} s before, "
            f"{sa:.0f} s after ({sb / sa:.2f}x)"
        )
    nb, na = totals["before"][3], totals["after"][3]
    if nb and na:
        per_b, per_a = totals["before"][0] / nb, totals["after"][0] / na
        bench_b, bench_a = totals["before"][2] / nb, totals["after"][2] / na
        print(f"- per trial: {per_b / per_a:.2f}x fewer GPU-seconds; the benchmark part {bench_b / bench_a:.2f}x fewer")
    if best_before and best_after:
        same = (best_before.flags == best_after.flags) if best_before.flags and best_after.flags else None
        print(
            f"- best config: before {_name(best_before)} ({_s(best_before.goodput)} req/s), after "
            f"{_name(best_after)} ({_s(best_after.goodput)} req/s): {'the same' if same else 'different'}"
        )
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dbs", nargs="*", type=Path, help="BEFORE.db AFTER.db, one or more pairs (default: the H100's)")
    ap.add_argument("--after-trials", nargs="+", type=int, help="the after trials to pair (default: all)")
    args = ap.parse_args()
    dbs = args.dbs or [DBS / "before.db", DBS / "after.db"]
    if len(dbs) % 2:
        ap.error(f"give the databases in pairs, BEFORE.db AFTER.db; got {len(dbs)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pooled: list[tuple[TrialRecord, TrialRecord]] = []
    for i in range(0, len(dbs), 2):
        if len(dbs) > 2:
            print(f"### {dbs[i]} against {dbs[i + 1]}\n")
        pooled += _table(dbs[i], dbs[i + 1], args.after_trials)
        print()
    if len(dbs) > 2 and pooled:
        gb, ga = sum(_gpu_s(b) for b, _ in pooled), sum(_gpu_s(a) for _, a in pooled)
        low, high = _interval(pooled)
        print(
            f"- **pooled**, {len(pooled)} paired trials: {gb:.0f} GPU-s before, {ga:.0f} after: {gb / ga:.2f}x fewer "
            f"per trial (95% interval {low:.2f}x to {high:.2f}x)"
        )


if __name__ == "__main__":
    main()
