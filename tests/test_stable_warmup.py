"""The warm-up until stable latencies before the first measured level (bench/client.py warm_until_stable)."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import tune, write_run
from tuner.bench import client
from tuner.bench.metrics import RequestRecord
from tuner.bench.workload import Level, StableWarmup, Workload
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study
from tuner.trial.record import TrialRecord

LEVEL = Level(concurrency=4, input_len=16, output_len=16, num_prompts=8)


def _scripted(monkeypatch, ttfts_ms: list[float]):
    """A server whose n-th burst answers with TTFT ttfts_ms[n] (the last one repeated), ITL 10 ms."""
    sent: list[int] = []

    async def request(self, body: bytes, rec: RequestRecord) -> None:
        burst = len(sent) // 4
        sent.append(1)
        await asyncio.sleep(0)
        rec.success, rec.output_len = True, 8
        rec.ttft = ttfts_ms[min(burst, len(ttfts_ms) - 1)] / 1000
        rec.itl = [0.010] * 7

    monkeypatch.setattr(client._Client, "request", request)
    return sent


def _warm(how: StableWarmup) -> client.WarmupResult:
    async def go():
        c = client._Client("http://127.0.0.1:9", "m", Workload(levels=(LEVEL,)), None)
        try:
            return await c.warm_until_stable(LEVEL, how)
        finally:
            await c.http.aclose()

    return asyncio.run(go())


def test_bursts_until_two_agree(monkeypatch):
    # Compiling kernels on first use: 900, 400, 120 ms; then 110 (within 20% of 120): stable after 4 bursts.
    sent = _scripted(monkeypatch, [900, 400, 120, 110, 100])
    w = _warm(StableWarmup(tolerance=0.2, max_s=30))
    assert (w.bursts, w.stable, len(sent)) == (4, True, 16)  # bursts at the level's batch size (4)
    assert [round(t) for t, _ in w.medians_ms] == [900, 400, 120, 110]


def test_capped_in_time_and_said_so(monkeypatch):
    _scripted(monkeypatch, [100 * 2**i for i in range(1000)])  # never settles
    w = _warm(StableWarmup(tolerance=0.2, max_s=0.05))
    assert not w.stable and w.bursts >= 1 and w.seconds >= 0.05


def test_only_before_the_first_level(monkeypatch):
    calls: list[Level] = []

    async def warm(self, level, how):
        calls.append(level)
        return client.WarmupResult(1.5, 2, True)

    async def nothing(self, *a, **k):
        return None

    async def measure(self, level, bodies, prompts, settle=None):
        return (
            [RequestRecord(p.prompt_len, p.output_len, True, ttft=0.01, latency=0.1, output_len=16) for p in prompts],
            1.0,
            None,
        )

    monkeypatch.setattr(client._Client, "warm_until_stable", warm)
    monkeypatch.setattr(client._Client, "warmup", nothing)
    monkeypatch.setattr(client._Client, "flush_cache", nothing)
    monkeypatch.setattr(client._Client, "measure", measure)
    two = (LEVEL, Level(8, 16, 16, 8))
    heard: list[client.WarmupResult] = []
    result = client.run_benchmark(
        "http://127.0.0.1:9", "m", Workload(levels=two, stable_warmup=StableWarmup()), on_warmup=heard.append
    )
    assert calls == [LEVEL] and result.warmup == client.WarmupResult(1.5, 2, True) and heard == [result.warmup]
    off = client.run_benchmark("http://127.0.0.1:9", "m", Workload(levels=two))
    assert len(calls) == 1 and off.warmup is None


@pytest.mark.timeout(200)
def test_tune_start_records_the_warm_up(tmp_path, unique_study):
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": ""},
        workload={
            "concurrency": [4],
            "num_prompts": 8,
            "warmup_until_stable": True,
            "warmup_tolerance": 0.5,
            "warmup_max_s": 5,
        },
    )
    done = tune("start", "-c", str(run), "--progress")
    assert done.returncode == 0, done.stderr
    assert re.search(r"benchmarking: warmed up in [\d.]+ s \(\d+ bursts", done.stdout + done.stderr), done.stdout
    (trial,) = load_existing_study(load_config(run)).trials
    rec = TrialRecord.of(trial)
    assert rec.warmup_s is not None and 0 < rec.warmup_s <= (rec.times.benchmark_s or 0)
    assert (rec.warmup_bursts or 0) >= 2 or not rec.warmup_stable
    assert re.search(r"warm-up [\d.]+ s", tune("status", "-c", str(run)).stdout)
