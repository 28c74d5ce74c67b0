"""The SLO-goodput load search: its rate sequence for scripted outcomes, the pass/fail verdict, goodput at a level
by hand, and one study through `tune start` against the stand-in, whose latency grows with the request rate."""

import csv
import dataclasses
import math
from dataclasses import replace

import numpy as np
import optuna
import pytest

from conftest import tune, write_run, write_space
from tuner.bench.load_search import Incumbent, Outcome, Search, best_level, broken, rates
from tuner.bench.metrics import LevelResult, RequestRecord, compute_level_result
from tuner.bench.workload import SLO, Level, LoadSearch
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study


def drive(search: LoadSearch, passes) -> list[tuple[float, bool]]:
    """The measured (rate, passed) sequence when a rate passes iff passes(rate)."""
    seen = []
    steps = rates(search)
    rate = next(steps)
    while True:
        ok = passes(rate)
        seen.append((rate, ok))
        try:
            rate = steps.send(ok)
        except StopIteration:
            return seen


def drive_stop(search: LoadSearch, passes, incumbent=None, outcome=None):
    """The measured (rate, passed) sequence and the plan's Stop (None: its plain end); ``outcome(rate, ok)``
    gives what is sent back (default: the bare verdict)."""
    seen = []
    steps = rates(search, incumbent)
    rate = next(steps)
    while True:
        ok = passes(rate)
        seen.append((rate, ok))
        try:
            rate = steps.send(outcome(rate, ok) if outcome else ok)
        except StopIteration as end:
            return seen, end.value


T, F = True, False
CHAT = LoadSearch(start_rate=4, max_rate=64, factor=2, bisect_steps=2, level_duration_s=15, min_prompts=48)


def test_a_trial_starts_below_the_incumbents_rate_and_stops_where_it_cannot_beat_it():
    inc = Incumbent(trial=0, rate=28.0)  # the H200 chat study's defaults held 28 req/s
    # One grid level below the incumbent's rate (the curve's low side), then that rate: broken there, stopped.
    seen, stop = drive_stop(CHAT, lambda r: r <= 20, inc)
    assert seen == [(16, T), (28, F)] and stop.cannot_beat
    assert stop.reason.startswith("stopped at 28 req/s, the highest rate trial 0 (the best so far) held")
    seen, stop = drive_stop(CHAT, lambda r: r <= 12, inc)
    assert seen == [(16, F)] and stop.cannot_beat and "below the 28 req/s that trial 0" in stop.reason
    # Holding it: up the ramp's grid, refined on the grid the plain search bisects on (none left in 28..32).
    assert drive_stop(CHAT, lambda r: r <= 30, inc) == ([(16, T), (28, T), (32, F)], None)
    assert drive_stop(CHAT, lambda r: r <= 50, inc) == ([(16, T), (28, T), (32, T), (64, F), (48, T), (56, F)], None)
    # Switched off, no incumbent (the baseline) or one at start_rate: the plain ramp from start_rate.
    plain = [(4, T), (8, T), (16, T), (32, F), (24, T), (28, T)]
    assert drive_stop(replace(CHAT, from_incumbent=False), lambda r: r <= 30, inc) == (plain, None)
    assert drive_stop(CHAT, lambda r: r <= 30) == (plain, None)
    assert drive_stop(CHAT, lambda r: r <= 30, Incumbent(0, 4.0)) == (plain, None)


def chat_level(rate, p99_tpot_ms, completed=None, duration_s=15.0, **kw):
    values = dict.fromkeys(LevelResult.__dataclass_fields__, 0)
    values.update(errors="", request_rate=rate, p99_ttft_ms=100.0, p99_tpot_ms=p99_tpot_ms, duration_s=duration_s)
    values.update(completed=completed if completed is not None else int(rate * duration_s))
    values.update(request_throughput=values["completed"] / duration_s, request_goodput=values["completed"] / duration_s)
    values.update(kw)
    return LevelResult(**values)


def test_a_search_stopped_against_the_incumbent_keeps_what_it_measured_and_says_why():
    from tuner.bench.workload import Workload

    wl = Workload(levels=(Level(concurrency=1, input_len=64, output_len=16, num_prompts=1),))
    state = Search(wl, CHAT, {"p99_tpot_ms": 40.0}, Incumbent(trial=3, rate=28.0))
    for lv in state.levels():
        state.add(chat_level(lv.request_rate, 20.0 if lv.request_rate < 20 else 45.0))
    res = state.result()
    assert [lv.request_rate for lv in res.levels] == [16.0, 28.0] and res.slo_pass == (True, False)
    assert res.cannot_beat == 1 and "cannot beat trial 3" in res.stopped_early
    assert res.slo_broken == "SLO broken at 28 req/s: p99_tpot_ms 45.0 > 40"
    plain = Search(wl, CHAT, {"p99_tpot_ms": 40.0})
    for lv in plain.levels():
        plain.add(chat_level(lv.request_rate, 20.0 if lv.request_rate < 20 else 45.0))
    assert plain.result().cannot_beat is None and plain.result().stopped_early is None


def test_rising_stops_where_completed_requests_stop_following_the_offered_rate():
    """Every level passes, but the server completes at most ~9 req/s: from 8 to 16 offered, completed requests/s
    rose 25% for 100% more offered (less than half of it), so rising stops there, without a failing level."""

    def served(rate, ok):
        return Outcome(ok, throughput=0.9 * min(rate, 10.0), ratio=0.5)

    seen, stop = drive_stop(CHAT, lambda r: True, outcome=served)
    assert seen == [(4, T), (8, T), (16, T)] and not stop.cannot_beat
    assert stop.reason.startswith("saturated: from 8 to 16 req/s offered, completed requests/s rose only from 7.20")
    # 8 -> 16 offered, 7.2 -> 10.8 completed: +50% for +100%, exactly half: still rising.
    assert drive_stop(CHAT, lambda r: r <= 16, outcome=lambda r, ok: Outcome(ok, 0.9 * min(r, 12.0), 0.5))[0][:4] == [
        (4, T),
        (8, T),
        (16, T),
        (32, F),
    ]
    seen, stop = drive_stop(replace(CHAT, saturation_stop=False), lambda r: True, outcome=served)
    assert seen == [(4, T), (8, T), (16, T), (32, T), (64, T)] and stop is None


# The H200 chat study's recorded verdicts and ratios (the binding limit's p99 / limit), docs/h200-chat.md.
RATIO = {
    0: {4: 0.18, 8: 0.21, 16: 0.33, 32: 1.14, 24: 0.50, 28: 0.67},
    7: {4: 0.17, 8: 0.22, 16: 0.34, 32: 9.78, 24: 5.58, 20: 4.00},
    10: {4: 0.17, 8: 0.25, 16: 7.33, 12: 0.62, 14: 2.81},
    # The stand-in's trial 1 (benchmarks/surfaces/standin-goodput.json): p99 TPOT over its 30 ms limit.
    "standin": {4: 0.472, 8: 0.656, 16: 1.605, 12: 0.901, 14: 1.095},
}


def test_refinement_probes_the_estimated_slo_crossing_on_the_bisection_grid():
    """H200 chat trial 0: the crossing estimated from 16 and 32 is 30.3, on the grid 28: it passes; from 28 and 32,
    31.0, no grid point above 28: done (bisection took 24 and 28). Trial 7: estimated 21.1, grid 20, broken; from
    16 and 20 the estimate is 17.7, no grid point above 16: done at 16 as bisection was, after one broken level
    instead of two. Trial 10, the one where it ends lower: estimated 11.3, grid 10 passes; from 10 and 16, 11.8:
    done (bisection: 12 passed, 14 broke). The stand-in's trial 1: estimated 11.8, grid 10 passes; from 10 and
    16 the estimate is 12.1, grid 12 passes: bisection's answer, which the first estimate alone missed."""

    def drive_curve(search, trial):
        curve = RATIO[trial]

        def ratio(rate):
            if rate in curve:
                return curve[rate]
            lo, hi = max(r for r in curve if r < rate), min(r for r in curve if r > rate)
            return curve[lo] + (rate - lo) / (hi - lo) * (curve[hi] - curve[lo])

        return drive_stop(search, lambda r: ratio(r) <= 1, outcome=lambda r, ok: Outcome(ok, r, ratio(r)))[0]

    assert drive_curve(CHAT, 0) == [(4, T), (8, T), (16, T), (32, F), (28, T)]
    assert drive_curve(CHAT, 7) == [(4, T), (8, T), (16, T), (32, F), (20, F)]
    assert drive_curve(CHAT, 10) == [(4, T), (8, T), (16, F), (10, T)]
    assert drive_curve(CHAT, "standin") == [(4, T), (8, T), (16, F), (10, T), (12, T)]
    bisect = replace(CHAT, interpolate=False)
    assert drive_curve(bisect, 0) == [(4, T), (8, T), (16, T), (32, F), (24, T), (28, T)]
    assert drive_curve(bisect, 7) == [(4, T), (8, T), (16, T), (32, F), (24, F), (20, F)]
    assert drive_curve(bisect, 10) == [(4, T), (8, T), (16, F), (12, T), (14, F)]
    assert drive_curve(bisect, "standin") == [(4, T), (8, T), (16, F), (12, T), (14, F)]
    # Failed requests give no ratio: bisection.
    failed = drive_stop(CHAT, lambda r: r <= 20, outcome=lambda r, ok: Outcome(ok, r, 0.5 if ok else math.inf))
    assert failed[0][-2:] == [(24, F), (20, T)]


def test_a_level_is_settled_once_enough_requests_are_past_a_percentile_limit():
    from tuner.bench.load_search import settled

    def done(ttft, tpot=0.01, out=11):
        latency = ttft + tpot * (out - 1)
        return RequestRecord(10, out, success=True, ttft=ttft, latency=latency, output_len=out, start=1.0)

    slo = {"p99_ttft_ms": 2000.0}
    # p99 over 420 requests: numpy's percentile sits between the 415th and 416th values, so 6 past settle it.
    fine = [done(0.1)] * 415
    assert settled(slo, fine + [done(2.5)] * 5, now=100.0) is None
    # 5 past: numpy's p99 lies between the 415th value (under) and the 416th (past), so it may still hold.
    assert np.percentile([0.1] * 415 + [2.001] * 5, 99) < 2.0
    assert settled(slo, [done(0.1)] * 414 + [done(2.5)] * 6, now=100.0) == (
        "p99_ttft_ms: 6 of 420 requests past 2000 ms (its p99 is past it from 6)"
    )
    # In flight without a first token: past once it waited longer than the limit and the grace; not yet sent:
    # never; a median TPOT limit needs half of them.
    waiting = [RequestRecord(10, 11, start=97.0)] * 6
    assert settled(slo, [done(0.1)] * 414 + waiting, now=99.4) is None
    assert settled(slo, [done(0.1)] * 414 + waiting, now=99.6) is not None
    assert settled(slo, [done(0.1)] * 414 + [RequestRecord(10, 11)] * 6, now=1e9) is None
    # In flight with its first token: its TTFT is known, whatever it waited since (one chunk in, no ITL yet).
    streaming = [RequestRecord(10, 11, start=90.0, ttft=0.1)] * 6
    assert settled(slo, [done(0.1)] * 414 + streaming, now=99.6) is None
    late = [RequestRecord(10, 11, start=99.0, ttft=2.1)] * 6
    assert settled(slo, [done(0.1)] * 414 + late, now=99.6) is not None
    assert settled({"median_tpot_ms": 40.0}, [done(0.1, 0.05)] * 5 + [done(0.1)] * 6, now=0) is None
    assert settled({"median_tpot_ms": 40.0}, [done(0.1, 0.05)] * 6 + [done(0.1)] * 5, now=0) is not None
    # A failed request settles it; one cancelled by the cut does not count.
    assert settled(slo, [RequestRecord(10, 11, error="HTTP 500: boom", start=1.0)], now=2.0).startswith("a request")
    assert settled(slo, [RequestRecord(10, 11, error="cancelled", start=1.0)], now=2.0) is None


def test_a_level_cut_short_fails_the_search_whatever_its_finished_requests_show():
    lv = chat_level(16.0, 20.0, errors="cut short: p99_ttft_ms: 6 of 240 requests past 2000 ms; after 5.1 s")
    assert broken(lv, {"p99_tpot_ms": 40.0}) == "cut short: p99_ttft_ms: 6 of 240 requests past 2000 ms"
    assert broken(chat_level(16.0, 20.0), {"p99_tpot_ms": 40.0}) is None


def test_ramp_doubles_until_the_first_break_then_bisects():
    s = LoadSearch(start_rate=2, max_rate=128, factor=2, bisect_steps=2)
    assert drive(s, lambda r: r <= 20) == [
        (2, True),
        (4, True),
        (8, True),
        (16, True),
        (32, False),
        (24, False),
        (20, True),
    ]
    assert drive(s, lambda r: r <= 30) == [
        (2, True),
        (4, True),
        (8, True),
        (16, True),
        (32, False),
        (24, True),
        (28, True),
    ]


def test_a_first_rate_that_breaks_ends_the_search_and_max_rate_caps_the_ramp():
    assert drive(LoadSearch(start_rate=2, max_rate=128, bisect_steps=3), lambda r: False) == [(2, False)]
    assert drive(LoadSearch(start_rate=3, max_rate=20, factor=2), lambda r: True) == [
        (3, True),
        (6, True),
        (12, True),
        (20, True),
    ]
    assert drive(LoadSearch(start_rate=3, max_rate=20, factor=2, bisect_steps=1), lambda r: r < 20) == [
        (3, True),
        (6, True),
        (12, True),
        (20, False),
        (16, True),
    ]


def rec(ttft, latency, out, success=True):
    return RequestRecord(
        prompt_len=10,
        requested_output_len=out,
        success=success,
        ttft=ttft,
        latency=latency,
        output_len=out if success else 0,
    )


def test_goodput_and_verdict_at_a_level_by_hand():
    records = [
        rec(0.050, 0.050 + 10 * 0.008, 11),  # good: TTFT 50 ms, TPOT 8 ms
        rec(0.200, 0.200 + 10 * 0.008, 11),  # TTFT 200 ms > 100
        rec(0.050, 0.050 + 10 * 0.020, 11),  # TPOT 20 ms > 10
        rec(0.060, 0.060, 1),  # one token: no TPOT, TTFT fine: good
    ]
    lv = Level(concurrency=4, input_len=10, output_len=11, num_prompts=4, request_rate=2.0)
    r = compute_level_result(lv, records, duration_s=2.0, slo=SLO(ttft_ms=100, tpot_ms=10))
    assert r.request_goodput == pytest.approx(2 / 2.0)  # 2 good requests in 2 s
    assert r.slo_attainment == pytest.approx(2 / 4)
    assert broken(r, {"p99_ttft_ms": 1000}) is None
    assert broken(r, {"p99_ttft_ms": 150}).startswith("p99_ttft_ms ")
    assert broken(r, {"median_tpot_ms": 10}) is None and broken(r, {"p99_tpot_ms": 10}) is not None
    failed = compute_level_result(lv, [*records[:3], rec(0, 0, 11, success=False)], 2.0, SLO(ttft_ms=1000))
    assert broken(failed, {"p99_ttft_ms": 1000}) == "1 of 4 requests failed"
    nothing = compute_level_result(lv, [rec(0, 0, 11, success=False)], 2.0)
    assert math.isnan(nothing.p99_ttft_ms) and broken(nothing, {"p99_ttft_ms": 1e9}) is not None


def test_a_level_exactly_at_a_limit_passes_and_the_search_goes_on_past_it():
    """A limit is the most a level may show (``p99_ttft_ms <= 2000``), as a request exactly at the limit is good
    (metrics.is_good): a level whose p99 equals it holds the SLO, and the ramp goes on to the next rate."""
    lv = Level(concurrency=4, input_len=10, output_len=11, num_prompts=4, request_rate=2.0)
    # Binary fractions, so every latency is exact: TTFT 250 ms, TPOT 7.8125 ms.
    at_limit = compute_level_result(
        lv, [rec(0.25, 0.25 + 10 * 0.0078125, 11)] * 4, duration_s=2.0, slo=SLO(ttft_ms=250, tpot_ms=7.8125)
    )
    assert (at_limit.p99_ttft_ms, at_limit.p99_tpot_ms) == (250.0, 7.8125)
    limits = {"p99_ttft_ms": 250.0, "p99_tpot_ms": 7.8125}
    assert at_limit.request_goodput == pytest.approx(2.0)  # each request is within the per-request SLO too
    assert broken(at_limit, limits) is None
    assert broken(at_limit, {**limits, "p99_tpot_ms": math.nextafter(at_limit.p99_tpot_ms, 0)}).startswith(
        "p99_tpot_ms "
    )

    # Through the search: the level at its first rate is at the limit, passes, and the next rate is asked for.
    from tuner.bench.load_search import Search
    from tuner.bench.workload import Workload

    search = Search(Workload(levels=(lv,)), LoadSearch(start_rate=2, max_rate=4, bisect_steps=0), limits)
    asked = []
    for level in search.levels():
        asked.append(level.request_rate)
        search.add(dataclasses.replace(at_limit, request_rate=level.request_rate))
    assert asked == [2.0, 4.0] and search.verdicts == [True, True]
    result = search.result()
    assert result.slo_pass == (True, True) and result.slo_broken is None


def test_best_level_is_the_highest_passing_rate_of_its_repeat():
    at = [
        compute_level_result(Level(4, 10, 11, 1, rate), [rec(0.05, 0.13, 11)], 1.0, repeat=rep)
        for rate, rep in ((2, 0), (8, 0), (4, 0), (2, 1))
    ]
    assert best_level(tuple(at), (True, False, True, True)).request_rate == 4
    assert best_level(tuple(at), (True, False, True, True), repeat=1) is at[3]
    assert best_level(tuple(at[:2]), (False, False)) is None


def test_level_size_follows_the_rate_and_the_cap():
    s = LoadSearch(level_duration_s=20, min_prompts=32, max_concurrency=512)
    t = Level(concurrency=1, input_len=8, output_len=4, num_prompts=1)
    assert s.level(t, 1.0).num_prompts == 32 and s.level(t, 10.0).num_prompts == 200
    assert s.level(t, 10.0).concurrency == 512 and s.level(t, 10.0).request_rate == 10.0
    assert LoadSearch(min_prompts=8, level_duration_s=1).level(t, 3.5).concurrency == 8  # uncapped: all at once


def test_tune_start_finds_the_rate_where_the_standin_breaks_its_slo(tmp_path, unique_study):
    """Trial 0 (SGLang's defaults) holds p99 TPOT <= 8 ms up to some rate the search must find and record; trial 1
    (torch_native attention, 1.8x slower steps) starts one grid level below trial 0's rate, breaks it there and
    is stopped, infeasible with value 0 (the saturation stop is off: with 1 s levels the stand-in may pass a
    rate past its pace)."""
    space = write_space(tmp_path / "space.yaml", params={"attention-backend": {"choices": ["torch_native"]}})
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=2,
        env={"SGLANG_STANDIN_SPEED": "1.0", "SGLANG_STANDIN_FAULTS": ""},
        workload={
            "input_len": 64,
            "output_len": 16,
            "num_prompts": None,
            "warmup_requests": 1,
            "request_timeout_s": 20,
        },
        objective={
            "metrics": ["goodput"],
            "slo": {"p99_tpot_ms": 8},
            "load_search": {
                "start_rate": 4,
                "max_rate": 512,
                "factor": 2,
                "bisect_steps": 2,
                "level_duration_s": 1,
                "min_prompts": 12,
                "saturation_stop": False,
            },
        },
    )
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    study = load_existing_study(load_config(run))
    base, slow = study.trials
    assert base.state == slow.state == optuna.trial.TrialState.COMPLETE

    curve = base.user_attrs["levels"]
    rates_seen = [lv["request_rate"] for lv in curve]
    verdicts = [lv["slo_pass"] for lv in curve]
    assert rates_seen[:2] == [4.0, 8.0] and verdicts[0] and not all(verdicts)
    first_fail = verdicts.index(False)
    assert rates_seen[: first_fail + 1] == [4.0 * 2**i for i in range(first_fail + 1)]  # the ramp up to the break
    # then two bisections, or one interpolated probe that held
    assert len(curve) == first_fail + 1 + 2 or (len(curve) == first_fail + 2 and verdicts[-1])
    assert base.user_attrs["feasible"]
    passing = [r for r, ok in zip(rates_seen, verdicts, strict=True) if ok]
    assert base.user_attrs["max_rate"] == max(passing) < 512
    chosen = curve[rates_seen.index(max(passing))]
    assert base.values[0] == pytest.approx(chosen["request_goodput"], rel=1e-3) and base.values[0] > 0
    assert all(lv["p99_tpot_ms"] <= 8 for lv in curve if lv["slo_pass"])
    assert base.user_attrs["workload"]["dataset"] == "random"
    assert base.user_attrs["workload"]["load_search"]["start_rate"] == 4
    with open(tmp_path / "trials" / unique_study / "0" / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["request_rate"]) for r in rows] == rates_seen
    assert [r["slo_pass"] for r in rows] == [str(v) for v in verdicts]

    assert slow.values == [0.0] and not slow.user_attrs["feasible"]
    below = max((4.0 * 2**i for i in range(8) if 4.0 * 2**i < base.user_attrs["max_rate"]), default=4.0)
    assert [lv["request_rate"] for lv in slow.user_attrs["levels"]] == [below]
    assert slow.user_attrs["slo_broken"].startswith(f"SLO broken at {below:g} req/s: ")
    assert "cannot beat trial 0" in slow.user_attrs["stopped_early"]
    constraints = dict(zip(study.user_attrs["constraint_names"], slow.system_attrs["constraints"], strict=True))
    tpot_excess = constraints["slo:p99_tpot_ms"]  # by how much the first rate broke the limit
    assert constraints["launch_ok"] == 0 and tpot_excess > 0
    measured = slow.user_attrs["levels"][0]["p99_tpot_ms"]  # of the requests that finished, if it was cut short
    assert tpot_excess == (pytest.approx(measured - 8, abs=0.01) if measured > 8 else 1.0)


def test_report_curves_cover_baseline_best_and_reference_trials(tmp_path):
    from tuner.views.report import build_report, curves_frame

    def levels(*points):
        return [
            {
                "concurrency": 64,
                "request_rate": r,
                "repeat": 0,
                "request_throughput": r,
                "output_throughput": 16 * r,
                "request_goodput": r if ok else r / 2,
                "p99_ttft_ms": ttft,
                "p99_tpot_ms": 5.0,
                "failed": 0,
                "slo_pass": ok,
            }
            for r, ttft, ok in points
        ]

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metrics", ["goodput"])
    study.set_user_attr("slo", {"p99_ttft_ms": 100})
    study.set_user_attr("load_search", {"start_rate": 2})
    make = optuna.trial.create_trial
    study.add_trial(
        make(
            value=4.0,
            user_attrs={
                "baseline": True,
                "feasible": True,
                "flags": {},
                "levels": levels((4, 50, True), (2, 20, True), (8, 300, False)),
            },
        )
    )
    study.add_trial(
        make(
            value=8.0,
            user_attrs={
                "feasible": True,
                "flags": {"x": 1},
                "levels": levels((2, 10, True), (4, 20, True), (8, 40, True)),
            },
        )
    )
    study.add_trial(
        make(
            value=2.0,
            user_attrs={
                "feasible": True,
                "reference": "hand-tuned",
                "flags": {"y": 1},
                "levels": levels((2, 30, True), (4, 150, False)),
            },
        )
    )
    study.add_trial(make(value=1.0, user_attrs={"feasible": True, "flags": {"z": 1}, "levels": levels((2, 1, True))}))
    frame = curves_frame(study)
    assert list(frame["config"].unique()) == ["baseline (trial 0)", "best (trial 1)", "hand-tuned (trial 2)"]
    assert list(frame[frame["trial"] == 0]["request_rate"]) == [2, 4, 8]  # in load order
    report = build_report(study, tmp_path / "r")
    assert "Load vs latency: p99 TTFT and p99 TPOT" in report.figures
    md = report.markdown.read_text()
    assert "highest request rate meeting the SLO (p99_ttft_ms <= 100)" in md
    assert "| hand-tuned (trial 2) | 2 | 0 | 4 |" in md


def test_tune_bench_runs_the_load_search_against_a_running_server(tmp_path):
    """What reproducing a best config's goodput with deploy-best.sh needs: `tune bench` with a goodput run file
    runs the same search and counts goodput against the same per-request SLO."""
    from test_standin import launch, stop, wait_ready

    proc, base = launch()
    run = write_run(
        tmp_path,
        workload={"input_len": 32, "output_len": 8, "num_prompts": None, "warmup_requests": 0},
        objective={
            "metrics": ["goodput"],
            "slo": {"p99_ttft_ms": 0.001},
            "load_search": {"start_rate": 50, "max_rate": 100, "level_duration_s": 0.2, "min_prompts": 4},
        },
    )
    try:
        wait_ready(base, proc)
        done = tune("bench", "-c", str(run), "--url", base)
    finally:
        stop(proc)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["request_rate", "completed"] and "slo_pass" in lines[0]
    assert len(lines) == 3 and lines[1].split()[0] == "50.0"  # nobody meets a 1 us TTFT: the first rate fails
    assert lines[1].split()[3] == "0.0"  # and its goodput counts no request: the SLO applies per request
    assert lines[-1].startswith("no rate holds the SLO: SLO broken at 50 req/s: p99_ttft_ms ")


def test_a_server_that_dies_mid_search_keeps_the_levels_it_passed():
    from test_standin import launch, stop, wait_ready

    from tuner.bench.client import ServerDied
    from tuner.bench.load_search import run_load_search
    from tuner.bench.workload import Workload

    # The stand-in is killed (OOM) once its running batch exceeds 8 requests: 8 and 32 req/s stay below that.
    proc, base = launch(faults="oom_under_load:", SGLANG_STANDIN_SPEED="1.0")
    try:
        wait_ready(base, proc)
        w = Workload(levels=(Level(concurrency=1, input_len=64, output_len=16, num_prompts=1),), warmup_requests=0)
        search = LoadSearch(start_rate=8, max_rate=2048, factor=4, level_duration_s=1, min_prompts=8)
        with pytest.raises(ServerDied) as died:
            run_load_search(
                base,
                "m",
                w,
                search,
                {"p99_tpot_ms": 1000},
                check_server=lambda: None if proc.poll() is None else f"exited {proc.returncode}",
            )
    finally:
        stop(proc)
    measured = died.value.measured
    assert [lv.request_rate for lv in measured.levels][:2] == [8, 32]
    assert measured.slo_pass[:2] == (True, True) and len(measured.slo_pass) == len(measured.levels)
    assert best_level(measured.levels, measured.slo_pass).request_rate >= 32
