"""Metric arithmetic on crafted timings; every expected value is computed by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuner.bench.metrics import LevelResult, RequestRecord, compute_level_result, is_good, summarize_repeats, t95
from tuner.bench.workload import SLO, Level, concurrency_sweep, seed_concurrency, seed_response_time

LV = Level(concurrency=2, input_len=100, output_len=5, num_prompts=3)


def rec(ttft, itl, out=5, prompt=100, req_out=5, ok=True, err=""):
    """A successful request whose e2e = ttft + sum(itl) (the [DONE] right after the last token)."""
    return RequestRecord(
        prompt_len=prompt,
        requested_output_len=req_out,
        success=ok,
        error=err,
        ttft=ttft,
        latency=ttft + sum(itl),
        itl=list(itl),
        output_len=out,
        chunks=len(itl) + 1 if ok else 0,
    )


# r1: ttft 0.1, gaps 0.02 x4 -> e2e 0.18, tpot (0.18-0.1)/4 = 0.02
# r2: ttft 0.3, gaps 0.05 x4 -> e2e 0.50, tpot 0.05
# r3: failed (never counted in latency stats or token totals)
def three():
    return [
        rec(0.1, [0.02] * 4),
        rec(0.3, [0.05] * 4),
        RequestRecord(prompt_len=100, requested_output_len=5, error="HTTP 500: boom"),
    ]


def test_counts_and_throughputs():
    r = compute_level_result(LV, three(), duration_s=2.0)
    assert (r.completed, r.failed, r.num_prompts) == (2, 1, 3)
    assert r.total_input_tokens == 200 and r.total_output_tokens == 10
    assert r.request_throughput == pytest.approx(1.0)  # 2 / 2 s
    assert r.input_throughput == pytest.approx(100.0)  # 200 / 2
    assert r.output_throughput == pytest.approx(5.0)  # 10 / 2
    assert r.total_throughput == pytest.approx(105.0)
    assert r.errors == "1x HTTP 500: boom"
    assert r.short_outputs == 1  # the failed one got 0 of 5 tokens


def test_ttft_e2e_tpot_itl_stats():
    r = compute_level_result(LV, three(), duration_s=2.0)
    # TTFT {100, 300} ms: mean 200, median 200, p90 = 100 + 0.9*200 = 280, p95 290, p99 298
    assert r.mean_ttft_ms == pytest.approx(200.0)
    assert r.median_ttft_ms == pytest.approx(200.0)
    assert r.p90_ttft_ms == pytest.approx(280.0)
    assert r.p95_ttft_ms == pytest.approx(290.0)
    assert r.p99_ttft_ms == pytest.approx(298.0)
    # E2E {180, 500} ms
    assert r.mean_e2e_latency_ms == pytest.approx(340.0)
    assert r.p90_e2e_latency_ms == pytest.approx(180 + 0.9 * 320)
    # TPOT {20, 50} ms
    assert r.mean_tpot_ms == pytest.approx(35.0)
    assert r.median_tpot_ms == pytest.approx(35.0)
    assert r.p99_tpot_ms == pytest.approx(20 + 0.99 * 30)
    # ITL pooled: four 20 ms and four 50 ms gaps -> mean 35, median 35 (between 4th and 5th), p90 = 50
    assert r.mean_itl_ms == pytest.approx(35.0)
    assert r.median_itl_ms == pytest.approx(35.0)
    assert r.p90_itl_ms == pytest.approx(50.0)
    # achieved concurrency = (0.18 + 0.50) / 2 s
    assert r.concurrency_achieved == pytest.approx(0.34)


def test_tpot_uses_output_tokens_not_chunks():
    # 9 tokens arrived in 3 chunks (server batched them): tpot = (1.0 - 0.2) / (9 - 1) = 0.1 s
    r = RequestRecord(100, 9, success=True, ttft=0.2, latency=1.0, itl=[0.4, 0.4], output_len=9, chunks=3)
    assert r.tpot == pytest.approx(0.1)
    lr = compute_level_result(LV, [r], 1.0)
    assert lr.mean_tpot_ms == pytest.approx(100.0)
    assert lr.mean_itl_ms == pytest.approx(400.0)
    # 1-token output: no TPOT sample at all (NaN), the request still counts
    one = RequestRecord(100, 1, success=True, ttft=0.2, latency=0.2, output_len=1, chunks=1)
    lr = compute_level_result(LV, [one], 1.0)
    assert one.tpot is None and math.isnan(lr.mean_tpot_ms) and math.isnan(lr.p99_itl_ms)
    assert lr.completed == 1 and lr.mean_ttft_ms == pytest.approx(200.0)


def test_goodput_and_attainment():
    recs = three()
    # ttft <= 200 ms: only r1 (100 ms) -> goodput 1 / 2 s = 0.5 req/s, attainment 1/3 (failed in denominator)
    r = compute_level_result(LV, recs, 2.0, SLO(ttft_ms=200))
    assert r.request_goodput == pytest.approx(0.5) and r.slo_attainment == pytest.approx(1 / 3)
    # tpot <= 50 ms and e2e <= 500 ms: both (limits are inclusive)
    r = compute_level_result(LV, recs, 2.0, SLO(tpot_ms=50, e2e_ms=500))
    assert r.request_goodput == pytest.approx(1.0) and r.slo_attainment == pytest.approx(2 / 3)
    # all limits at once: r2's tpot 50 > 40 fails
    r = compute_level_result(LV, recs, 2.0, SLO(ttft_ms=1000, tpot_ms=40, e2e_ms=1000))
    assert r.request_goodput == pytest.approx(0.5)
    # no SLO: every successful request is good
    r = compute_level_result(LV, recs, 2.0)
    assert r.request_goodput == pytest.approx(r.request_throughput) and r.slo_attainment == pytest.approx(2 / 3)
    assert not is_good(recs[2], SLO())


def test_short_outputs():
    recs = [rec(0.1, [0.01] * 2, out=3), rec(0.1, [0.01] * 4, out=5)]
    r = compute_level_result(LV, recs, 1.0)
    assert r.short_outputs == 1 and r.completed == 2 and r.total_output_tokens == 8


def test_all_failed_is_nan_not_zero():
    recs = [RequestRecord(100, 5, error="ReadTimeout")] * 3
    r = compute_level_result(LV, recs, 1.5)
    assert r.completed == 0 and r.failed == 3
    assert r.output_throughput == 0.0 and r.request_goodput == 0.0 and r.slo_attainment == 0.0
    for name in ("mean_ttft_ms", "median_tpot_ms", "p99_itl_ms", "p95_e2e_latency_ms"):
        assert math.isnan(getattr(r, name)), name
    assert r.errors == "3x ReadTimeout"


def test_level_fields_and_identity():
    r = compute_level_result(Level(8, 512, 128, 32, request_rate=4.0), three(), 2.0, repeat=2)
    assert isinstance(r, LevelResult)
    assert (r.concurrency, r.input_len, r.output_len, r.request_rate, r.repeat) == (8, 512, 128, 4.0, 2)


def mk(c, thr, repeat=0, rate=None):
    base = compute_level_result(Level(c, 10, 10, 4, request_rate=rate), [rec(0.1, [0.01] * 4)], 1.0, repeat=repeat)
    return LevelResult(**{**base.__dict__, "output_throughput": thr})


def test_summarize_repeats_lcb():
    rs = [mk(1, 100.0, 0), mk(1, 110.0, 1), mk(1, 120.0, 2), mk(4, 400.0, 0, rate=2.0)]
    s = summarize_repeats(rs)
    assert list(s["concurrency"]) == [1, 4]
    row = s.iloc[0]
    # mean 110, std (ddof 1) 10, lcb = 110 - t(0.95, 2)=2.920 * 10 / sqrt(3) = 93.141
    assert row["n"] == 3 and row["output_throughput_mean"] == pytest.approx(110.0)
    assert row["output_throughput_std"] == pytest.approx(10.0)
    assert row["output_throughput_lcb95"] == pytest.approx(110.0 - 2.920 * 10.0 / math.sqrt(3), rel=1e-4)
    one = s.iloc[1]
    assert one["n"] == 1 and math.isnan(one["output_throughput_std"]) and one["output_throughput_lcb95"] == 400.0
    assert one["request_rate"] == 2.0
    # the same from a DataFrame, and against scipy where available
    s2 = summarize_repeats(pd.DataFrame([r.__dict__ for r in rs]))
    assert np.allclose(s2["output_throughput_lcb95"], s["output_throughput_lcb95"])
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 10, 30):
        assert t95(df) == pytest.approx(stats.t.ppf(0.95, df), abs=1e-3)


def test_level_helpers():
    sweep = concurrency_sweep(512, 128, [1, 16, 64])
    assert [(lv.concurrency, lv.num_prompts) for lv in sweep] == [(1, 8), (16, 64), (64, 256)]
    assert concurrency_sweep(8, 8, [2], num_prompts=5)[0].num_prompts == 5
    assert [lv.output_len for lv in seed_response_time()] == [10, 50, 100, 500]
    assert all(lv.concurrency == 1 for lv in seed_response_time())
    assert [lv.concurrency for lv in seed_concurrency()] == [1, 5, 10, 20]


def test_every_latency_statistic_is_bench_servings():
    """mean, median, p90, p95, p99 of TTFT, TPOT, ITL and E2E over the successful requests, each from its own
    samples (numpy's linear percentiles, like bench_serving), on requests whose statistics all differ."""
    rng = np.random.default_rng(7)
    recs = []
    for _ in range(23):
        ttft = float(rng.uniform(0.05, 0.5))
        gaps = [float(g) for g in rng.uniform(0.005, 0.05, size=int(rng.integers(2, 9)))]
        recs.append(rec(ttft, gaps, out=len(gaps) + 1))
    recs.append(RequestRecord(prompt_len=100, requested_output_len=5, error="HTTP 500: boom"))
    r = compute_level_result(LV, recs, 3.0)
    ok = recs[:-1]
    samples = {
        "ttft": [x.ttft for x in ok],
        "tpot": [(x.latency - x.ttft) / (x.output_len - 1) for x in ok],
        "itl": [g for x in ok for g in x.itl],
        "e2e_latency": [x.latency for x in ok],
    }
    for metric, values in samples.items():
        ms = np.asarray(values) * 1000
        expected = {
            "mean": ms.mean(),
            "median": np.median(ms),
            "p90": np.percentile(ms, 90),
            "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99),
        }
        for stat, value in expected.items():
            assert getattr(r, f"{stat}_{metric}_ms") == pytest.approx(value, rel=1e-12), f"{stat}_{metric}_ms"
    assert r.duration_s == 3.0 and r.concurrency_achieved == pytest.approx(sum(samples["e2e_latency"]) / 3.0)
    assert r.repeat == 0 and r.num_prompts == 24 and r.failed == 1


def test_zero_and_short_durations():
    r = compute_level_result(LV, three(), 0.0)
    assert math.isnan(r.request_throughput) and math.isnan(r.output_throughput) and r.completed == 2
    r = compute_level_result(LV, three(), 0.5)
    assert r.request_throughput == pytest.approx(4.0) and r.output_throughput == pytest.approx(20.0)
    r = compute_level_result(LV, [], 1.0)
    assert math.isnan(r.slo_attainment) and r.num_prompts == 0


def test_slo_limits_are_inclusive_and_in_milliseconds():
    r = rec(0.2, [0.05] * 4)  # ttft 200 ms, tpot 50 ms, e2e 400 ms
    assert is_good(r, SLO(ttft_ms=200, tpot_ms=50, e2e_ms=400))
    assert not is_good(r, SLO(ttft_ms=199.9)) and not is_good(r, SLO(e2e_ms=399.9))
    assert not is_good(r, SLO(tpot_ms=49.9))
    assert is_good(rec(0.2, [0.05] * 4), SLO(ttft_ms=200.1)) and not is_good(rec(0.5, [0.01]), SLO(e2e_ms=0.4))


def test_errors_are_summarized_most_common_first():
    failed = [
        RequestRecord(100, 5, error=e)
        for e in ["HTTP 500: boom\ntraceback"] * 3 + ["ReadTimeout"] * 2 + [""] + [f"e{i}" for i in range(5)]
    ]
    r = compute_level_result(LV, [*failed, rec(0.1, [0.01] * 4)], 1.0)
    assert r.errors == "3x HTTP 500: boom; 2x ReadTimeout; 1x unknown error; 1x e0; 1x e1"
    long = compute_level_result(LV, [RequestRecord(100, 5, error="x" * 300)], 1.0)
    assert long.errors == "1x " + "x" * 200


def test_summarize_repeats_keeps_first_seen_order_and_counts_failures():
    a, b = mk(8, 300.0), mk(1, 100.0)
    failed = LevelResult(**{**mk(8, 320.0, repeat=1).__dict__, "failed": 2})
    s = summarize_repeats([a, b, failed])
    assert list(s["concurrency"]) == [8, 1]
    assert list(s["failed_total"]) == [2, 0] and list(s["n"]) == [2, 1]
    assert s.iloc[0]["request_rate"] is None
    # Two repeats: t(0.95, 1) = 6.314 and the standard deviation of 300 and 320.
    assert s.iloc[0]["output_throughput_lcb95"] == pytest.approx(
        310.0 - 6.314 * np.std([300, 320], ddof=1) / math.sqrt(2)
    )
    result = type("Result", (), {"levels": (a, failed)})()  # a BenchmarkResult-like object: its .levels
    assert list(summarize_repeats(result)["n"]) == [2]
    assert list(summarize_repeats([]).columns) == []


def test_t95_beyond_the_table_is_the_normal_quantile():
    assert math.isnan(t95(0)) and t95(30) == 1.697 and t95(31) == 1.645 and t95(1000) == 1.645
