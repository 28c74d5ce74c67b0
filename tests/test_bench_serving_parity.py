"""Our metric code against SGLang's own bench_serving, on bench_serving's own per-request data.

The data: one real run of bench_serving on the H200 (SGLang 0.5.17, Qwen3-8B dummy weights), committed as it wrote
it (backend sglang-oai, dataset random-ids, ISL 512 / OSL 128, 64 prompts at max concurrency 16):

    python -m sglang.bench_serving --backend sglang-oai ... --output-details \
        --output-file tests/data/bench_serving/h200-0.5.17.jsonl

Each line of the file is one run: bench_serving's aggregates (``duration``, ``completed``, ``total_input_tokens``,
``total_output_tokens``, ``request_throughput``, ``output_throughput``, ``{mean,median,p90,p95,p99}_{ttft,tpot,
itl,e2e_latency}_ms``, ``concurrency``) and, with --output-details, its per-request lists: ``input_lens``,
``ttfts``, ``itls`` (one list per request) and ``errors`` for every request, ``output_lens`` for the successful
ones only. Stock bench_serving writes no per-request latency: a request's latency is rebuilt as its TTFT plus its
ITLs, which is the time of its last token; bench_serving's own ends when the stream does, a few microseconds later.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.bench.metrics import RequestRecord, compute_level_result
from tuner.bench.workload import Level

DATA = Path(__file__).parent / "data" / "bench_serving" / "h200-0.5.17.jsonl"
# Recomputed from the same numbers with the same numpy functions: only float rounding may differ.
REL = 1e-9
# TPOT, E2E and concurrency from latencies rebuilt as TTFT + ITLs, short of bench_serving's by the stream's end:
# measured 0.0008-0.01% on this file. A TPOT divided by the output length instead of length - 1 is 0.8% off.
REL_STREAM_END = 5e-4


def runs() -> list[dict]:
    if not DATA.is_file():
        pytest.skip(
            f"{DATA.relative_to(Path(__file__).parent.parent)} is not committed yet: it needs one "
            "bench_serving --output-details run on a GPU (see this module's docstring)"
        )
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def ours(run: dict):
    """Our LevelResult from bench_serving's per-request data."""
    ok_lens = iter(run["output_lens"])
    records = []
    for prompt_len, ttft, itl, error in zip(run["input_lens"], run["ttfts"], run["itls"], run["errors"], strict=True):
        success = not error
        records.append(
            RequestRecord(
                prompt_len=prompt_len,
                requested_output_len=run.get("random_output_len") or 0,
                success=success,
                error=error or "",
                ttft=ttft,
                latency=ttft + sum(itl),
                itl=list(itl),
                output_len=next(ok_lens) if success else 0,
            )
        )
    level = Level(
        concurrency=run.get("max_concurrency") or len(records),
        input_len=run.get("random_input_len") or 0,
        output_len=run.get("random_output_len") or 0,
        num_prompts=len(records),
    )
    return compute_level_result(level, records, run["duration"])


def test_counts_throughputs_ttft_and_itl_match_bench_serving():
    for run in runs():
        r = ours(run)
        assert r.completed == run["completed"]
        assert r.total_input_tokens == run["total_input_tokens"]
        assert r.total_output_tokens == run["total_output_tokens"]
        assert r.request_throughput == pytest.approx(run["request_throughput"], rel=REL)
        assert r.output_throughput == pytest.approx(run["output_throughput"], rel=REL)
        for metric in ("ttft", "itl"):
            for stat in ("mean", "median", "p90", "p95", "p99"):
                key = f"{stat}_{metric}_ms"
                if key in run:  # p90/p95 only in newer bench_serving versions
                    assert getattr(r, key) == pytest.approx(run[key], rel=REL), key


def test_tpot_e2e_and_concurrency_match_bench_serving():
    """Each of ours is bench_serving's less the stream's end: never above it, and within REL_STREAM_END."""
    for run in runs():
        r = ours(run)
        for metric in ("tpot", "e2e_latency"):
            for stat in ("mean", "median", "p90", "p95", "p99"):
                key = f"{stat}_{metric}_ms"
                assert getattr(r, key) == pytest.approx(run[key], rel=REL_STREAM_END), key
                assert getattr(r, key) <= run[key], key
        assert r.concurrency_achieved == pytest.approx(run["concurrency"], rel=REL_STREAM_END)
