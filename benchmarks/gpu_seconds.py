"""GPU-seconds per trial and per study of the SLO-goodput load search, before and after issue 22, by replay.

Replays the recorded H200 chat study (surfaces/h200-qwen3-8b-chat.json, run file runs/demo-chat.yaml) through the
tuner's own code (Tuner: sampler, space, replay runner, load search, objective, records) three times per seed:
"before" with every strategy switch of objective.load_search off (the plain ramp from start_rate and bisections),
launcher.prestart and workload.warmup_until_stable off, "after" with the defaults (from_incumbent,
saturation_stop, interpolate, cut_short, prestart, the warm-up until stable), and "1-2" with cut_short off (pieces 1
and 2 alone). A replayed trial costs what the real one would: the recorded startup and stop seconds (less the
recorded imports phase where a prestarted interpreter would have done them, tuner/trial/replay.py ReplayLauncher;
the H200 chat surface records no imports phase, so nothing is taken off here), the recorded warm-up once where
the run warms up until stable (the H200 surface records none), and the rest of the recorded benchmark seconds
scaled by the levels it ran (each level's recorded or interpolated duration; a broken level cut short takes an
estimated share of it, tuner/trial/replay.py cut_short). It writes, as Markdown on stdout:

- per seed and on the whole: GPU-seconds per trial and per study (all of it, and the load search's part), levels
  per trial, trials feasible / infeasible / stopped against the incumbent, the best config and its goodput, and
  whether before and after chose the same config;
- the ranking of the surface's measured trials (each run once, the baseline and the references first as in
  the study, the others in a seeded order), before against after: Kendall's tau (scipy.stats.kendalltau,
  tau-b) over the trials' standing (feasible first, then goodput), and per trial the rates and levels;
- the refinement evidence of piece 2: per recorded curve, the plain search's highest rate and levels against
  the interpolated probe's (no incumbent).

    python benchmarks/gpu_seconds.py                  # 10 seeds, 12 trials a study (demo-chat.yaml's budget)
    python benchmarks/gpu_seconds.py --seeds 20 --trials 20
    python benchmarks/gpu_seconds.py --surface standin  # the stand-in's goodput surface instead

``--surface standin`` replays benchmarks/surfaces/standin-goodput.json (recorded by
benchmarks/standin_goodput_surface.yaml: 24 random configs of search_spaces/default.yaml, every level of the plain
search recorded) with benchmarks/standin_goodput_replay.yaml. Its startups are about a second, so its ratios are
the load search's alone; the stand-in's throughput surface (standin-default.json) has no load-vs-latency curves.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scipy.stats import kendalltau

from tuner.bench.load_search import Incumbent, Search, best_level
from tuner.bench.workload import SEARCH_STRATEGY, Level, Workload
from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.trial.replay import cut_short
from tuner.trial.surface import Surface, curve_at

# name -> (replay run file, its surface, the rows a study runs first: its baseline and references)
SURFACES = {
    "h200-chat": (ROOT / "runs" / "demo-chat.yaml", ROOT / "surfaces" / "h200-qwen3-8b-chat.json", [0, 1]),
    "standin": (
        ROOT / "benchmarks" / "standin_goodput_replay.yaml",
        ROOT / "benchmarks" / "surfaces" / "standin-goodput.json",
        [0],
    ),
}
OFF = dict.fromkeys(SEARCH_STRATEGY, False)
ON = dict.fromkeys(SEARCH_STRATEGY, True)  # the defaults: a surface recorded with them off replays "after" with them on


MODES = {"before": OFF, "1-2": {"cut_short": False}, "after": {}}  # "1-2": pieces 1 and 2, no cut levels


def study(run: Path, folder: Path, seed: int, trials: int, mode: str):
    name = f"{mode}-{seed}"
    base = load_config(run)
    search = {**vars(base.objective.load_search), **MODES[mode]}
    config = load_config(
        run,
        {
            "study": name,
            "trials": trials,
            "storage": f"sqlite:///{folder}/{name}.db",
            "trials_dir": str(folder / "trials"),
            "sampler": {"seed": seed, "n_startup_trials": 4},
            "objective": {**base.objective.model_dump(exclude_none=True), "load_search": search},
            "launcher.prestart": mode != "before",
            # Before issue 22 a trial warmed up with two requests; a surface that recorded a warm-up until stable
            # (the stand-in's) has it taken off its recorded seconds then.
            "workload.warmup_until_stable": mode != "before",
        },
    )
    return Tuner(config).run()


def summary(s) -> dict:
    trials = s.trials
    feasible = [t for t in trials if t.user_attrs.get("feasible")]
    best = max(feasible, key=lambda t: t.values[0]) if feasible else None
    return {
        "total_s": sum(t.user_attrs["total_s"] for t in trials),
        "bench_s": sum(t.user_attrs["benchmark_s"] for t in trials),
        "levels": sum(len(t.user_attrs.get("levels", [])) for t in trials),
        "n": len(trials),
        "feasible": len(feasible),
        "stopped": sum("cannot beat" in (t.user_attrs.get("stopped_early") or "") for t in trials),
        "best": best,
        "best_flags": best.user_attrs["flags"] if best else None,
        "best_value": best.values[0] if best else 0.0,
        "values": {t.number: (bool(t.user_attrs.get("feasible")), t.values[0]) for t in trials},
    }


def template(surface: Surface) -> Workload:
    """A level of the surface's prompts: the search asks only its rates and sizes, the curves answer them."""
    w = surface.header.workload
    return Workload(
        levels=(Level(concurrency=1, input_len=w.input_len or 1, output_len=w.output_len or 1, num_prompts=1),)
    )


def ranking(
    surface: Surface, first: list[int], order: list[int], before: bool
) -> dict[int, tuple[bool, float, list, float]]:
    """Each recorded row searched once, in ``order``, with the incumbent as a study would have it: per trial
    (feasible, goodput, levels as (rate, passed), seconds of levels)."""
    o = surface.header.objective
    assert o.load_search is not None
    search = replace(o.load_search, **(OFF if before else ON))
    rows = {r.trial: r for r in surface.rows}
    wl = template(surface)
    out: dict[int, tuple[bool, float, list, float]] = {}
    inc: Incumbent | None = None
    for i, n in enumerate(order):
        whole = i < len(first)  # the baseline and the references search from start_rate, as in the study
        state = Search(wl, search, o.slo, None if whole else inc)
        for level in state.levels():
            answer = curve_at(rows[n].levels, level, o.slo)[0]
            state.add(cut_short(answer, o.slo) if search.cut_short else answer)
        res = state.result()
        lv = best_level(res.levels, res.slo_pass)
        feasible = lv is not None and res.cannot_beat is None
        value = lv.request_goodput if lv else 0.0
        levels = [(x.request_rate, ok) for x, ok in zip(res.levels, res.slo_pass, strict=True)]
        out[n] = (feasible, value, levels, sum(x.duration_s for x in res.levels))
        if feasible and lv is not None and (inc is None or value > out[inc.trial][1]):
            inc = Incumbent(n, lv.request_rate)
    return out


def standing(r: tuple[bool, float, list, float]) -> float:
    return r[1] + (1e6 if r[0] else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--surface", choices=sorted(SURFACES), default="h200-chat")
    args = ap.parse_args()
    run, path, first = SURFACES[args.surface]
    surface = Surface.load(path)
    measured = [r for r in surface.rows if r.ok and r.levels]  # the curves: a config that failed has none to search
    logging.disable(logging.WARNING)
    t0 = time.monotonic()
    print(
        f"Machine: {platform.node()} ({os.cpu_count()} CPUs, {platform.python_version()}), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; surface {path.relative_to(ROOT)}, run {run.relative_to(ROOT)}, "
        f"{args.seeds} seeds x {args.trials} trials\n"
    )
    rows = []
    middle = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            b = summary(study(run, Path(tmp), seed, args.trials, "before"))
            m = summary(study(run, Path(tmp), seed, args.trials, "1-2"))
            a = summary(study(run, Path(tmp), seed, args.trials, "after"))
            rows.append((seed, b, a))
            middle.append(m)
    print(
        "| seed | GPU-s/trial before | after | ratio | search s/trial before | after | ratio | levels/trial "
        "before | after | feasible before | after (stopped vs incumbent) | best goodput before | after "
        "| same best config |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for seed, b, a in rows:
        print(
            f"| {seed} | {b['total_s'] / b['n']:.1f} | {a['total_s'] / a['n']:.1f} | "
            f"{b['total_s'] / a['total_s']:.2f}x | {b['bench_s'] / b['n']:.1f} | {a['bench_s'] / a['n']:.1f} | "
            f"{b['bench_s'] / a['bench_s']:.2f}x | {b['levels'] / b['n']:.1f} | {a['levels'] / a['n']:.1f} | "
            f"{b['feasible']}/{b['n']} | {a['feasible']}/{a['n']} ({a['stopped']}) | {b['best_value']:.2f} | "
            f"{a['best_value']:.2f} | {'yes' if b['best_flags'] == a['best_flags'] else 'NO'} |"
        )
    tb, ta = sum(b["total_s"] for _, b, _ in rows), sum(a["total_s"] for _, _, a in rows)
    sb, sa = sum(b["bench_s"] for _, b, _ in rows), sum(a["bench_s"] for _, _, a in rows)
    nb, na = sum(b["n"] for _, b, _ in rows), sum(a["n"] for _, _, a in rows)
    tm, sm, nm = (sum(m[k] for m in middle) for k in ("total_s", "bench_s", "n"))
    print(
        f"\nPieces 1-2 only (cut_short off): GPU-seconds per trial {tm / nm:.1f} ({tb / tm:.2f}x fewer than "
        f"before), load search {sm / nm:.1f} s per trial ({sb / sm:.2f}x fewer); best config as before in "
        f"{sum(b['best_flags'] == m['best_flags'] for (_, b, _), m in zip(rows, middle, strict=True))} of "
        f"{len(rows)} seeds."
    )
    print(
        f"\nAll seeds: GPU-seconds per trial {tb / nb:.1f} before, {ta / na:.1f} after ({tb / ta:.2f}x fewer); "
        f"per study {tb / len(rows):.0f} s before, {ta / len(rows):.0f} s after; the load search's part per "
        f"trial {sb / nb:.1f} s before, {sa / na:.1f} s after ({sb / sa:.2f}x fewer). Same best config in "
        f"{sum(b['best_flags'] == a['best_flags'] for _, b, a in rows)} of {len(rows)} seeds.\n"
    )

    print(
        f"Ranking of the recorded trials, each searched once ({' '.join(map(str, first))} first, the rest in a "
        "seeded order), before vs after:\n"
    )
    print(
        "| order seed | order | Kendall tau-b (feasible first) | p | tau-b by goodput alone | search s before | after |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    taus = []
    detail = None
    for seed in range(args.seeds):
        rest = [r.trial for r in measured if r.trial not in first]
        random.Random(seed).shuffle(rest)
        order = [*first, *rest]
        before, after = ranking(surface, first, order, True), ranking(surface, first, order, False)
        keys = sorted(before)
        tau, p = kendalltau([standing(before[k]) for k in keys], [standing(after[k]) for k in keys])
        by_value = kendalltau([before[k][1] for k in keys], [after[k][1] for k in keys])[0]
        taus.append(tau)
        print(
            f"| {seed} | {' '.join(map(str, order))} | {tau:.3f} | {p:.3f} | {by_value:.3f} | "
            f"{sum(v[3] for v in before.values()):.0f} | {sum(v[3] for v in after.values()):.0f} |"
        )
        detail = detail or (order, before, after)
    print(f"\nMedian tau {statistics.median(taus):.3f} (min {min(taus):.3f}, max {max(taus):.3f}).\n")
    order, before, after = detail
    print(f"Order {' '.join(map(str, order))}, per trial:\n")
    print("| trial | before: levels (rate, held) | goodput | after: levels | goodput | feasible after |")
    print("|---:|---|---:|---|---:|---|")
    for n in order:
        _, vb, lb, _ = before[n]
        fa, va, la, _ = after[n]
        show = " ".join(f"{r:g}{'' if ok else 'x'}" for r, ok in lb)
        show_a = " ".join(f"{r:g}{'' if ok else 'x'}" for r, ok in la)
        print(f"| {n} | {show} | {vb:.2f} | {show_a} | {va:.2f} | {'yes' if fa else 'no'} |")

    print(
        "\nRefinement (piece 2) on each recorded curve, no incumbent, no level cut short: plain bisection vs "
        "the interpolated probe:\n"
    )
    print("| trial | bisection: levels | highest rate | seconds | interpolated: levels | highest rate | seconds |")
    print("|---:|---|---:|---:|---|---:|---:|")
    o = surface.header.objective
    assert o.load_search is not None
    wl = template(surface)
    for row in measured:
        cells = []
        for search in (replace(o.load_search, **OFF), replace(o.load_search, **{**ON, "from_incumbent": False})):
            state = Search(wl, search, o.slo)
            for level in state.levels():
                state.add(curve_at(row.levels, level, o.slo)[0])
            res = state.result()
            lv = best_level(res.levels, res.slo_pass)
            seq = " ".join(
                f"{x.request_rate:g}{'' if ok else 'x'}" for x, ok in zip(res.levels, res.slo_pass, strict=True)
            )
            cells.append(f"{seq} | {lv.request_rate if lv else 0:g} | {sum(x.duration_s for x in res.levels):.0f}")
        print(f"| {row.trial} | {' | '.join(cells)} |")
    print(f"\n({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
