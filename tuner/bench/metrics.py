"""Per-request records -> per-level metrics, with SGLang bench_serving's names and definitions.

Definitions (sglang/benchmark/metrics.py ``do_calculate_metrics``; vLLM's goodput):

- TTFT: time from sending the request to the first chunk that carries generated text.
- E2E latency: time from sending the request to the end of the stream (the ``[DONE]`` event).
- TPOT (per request): ``(e2e - ttft) / (output_len - 1)``, only for requests with ``output_len > 1``.
- ITL: every gap between consecutive text-carrying chunks, pooled over all successful requests.
- Throughputs: totals over successful requests divided by the level's wall-clock duration (first request sent
  to last request finished).
- Achieved concurrency: ``sum(e2e of successful requests) / duration`` (Little's law).
- Goodput: successful requests meeting every SLO limit that is set (``<=``), per second of duration. With no
  limit set every successful request is good.
- SLO attainment: good requests / ALL requests (failed ones in the denominator).

Percentiles are numpy's linear-interpolated ones (as bench_serving). Where there is no sample (every request
failed, or every output was a single token for TPOT) the statistic is NaN, never 0, so a broken run can never
look fast.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from tuner.bench.workload import SLO, Level

if TYPE_CHECKING:
    import pandas as pd  # imported where used (summarize_repeats): the run file's check must not pay for it


@dataclass
class RequestRecord:
    """What the client measured for one request (times in seconds, perf_counter based)."""

    prompt_len: int
    requested_output_len: int
    success: bool = False
    error: str = ""
    ttft: float = 0.0
    latency: float = 0.0  # e2e
    itl: list[float] = field(default_factory=list)
    output_len: int = 0  # usage.completion_tokens when the server reports it, else text-carrying chunks
    chunks: int = 0  # text-carrying chunks received
    start: float = 0.0  # perf_counter when the request was sent
    connection_error: bool = False  # the server could not be reached / dropped the connection

    @property
    def tpot(self) -> float | None:
        if self.success and self.output_len > 1:
            return (self.latency - self.ttft) / (self.output_len - 1)
        return None


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    input_len: int
    output_len: int
    request_rate: float | None
    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    input_throughput: float
    output_throughput: float
    total_throughput: float
    mean_ttft_ms: float
    median_ttft_ms: float
    p90_ttft_ms: float
    p95_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p90_tpot_ms: float
    p95_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p90_itl_ms: float
    p95_itl_ms: float
    p99_itl_ms: float
    mean_e2e_latency_ms: float
    median_e2e_latency_ms: float
    p90_e2e_latency_ms: float
    p95_e2e_latency_ms: float
    p99_e2e_latency_ms: float
    concurrency_achieved: float
    request_goodput: float
    slo_attainment: float
    short_outputs: int
    repeat: int = 0
    num_prompts: int = 0
    errors: str = ""  # "count x message" for the most common error kinds, "; "-joined (empty when none failed)


def _stats_ms(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """mean, median, p90, p95, p99 in ms; NaN when empty."""
    if len(values) == 0:
        nan = float("nan")
        return nan, nan, nan, nan, nan
    a = np.asarray(values, dtype=np.float64) * 1000.0
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return float(a.mean()), float(p50), float(p90), float(p95), float(p99)


def is_good(rec: RequestRecord, slo: SLO) -> bool:
    """A successful request meeting every SLO limit that is set. TPOT is undefined for 1-token outputs and
    then does not count against the request."""
    if not rec.success:
        return False
    if slo.ttft_ms is not None and rec.ttft * 1000.0 > slo.ttft_ms:
        return False
    if slo.e2e_ms is not None and rec.latency * 1000.0 > slo.e2e_ms:
        return False
    if slo.tpot_ms is not None:
        t = rec.tpot
        if t is not None and t * 1000.0 > slo.tpot_ms:
            return False
    return True


def summarize_errors(records: Iterable[RequestRecord], top: int = 5) -> str:
    c = Counter(r.error.splitlines()[0][:200] if r.error else "unknown error" for r in records if not r.success)
    return "; ".join(f"{n}x {msg}" for msg, n in c.most_common(top))


def compute_level_result(
    level: Level,
    records: Sequence[RequestRecord],
    duration_s: float,
    slo: SLO | None = None,
    repeat: int = 0,
) -> LevelResult:
    slo = slo or SLO()
    ok = [r for r in records if r.success]
    completed = len(ok)
    failed = len(records) - completed
    dur = duration_s if duration_s > 0 else float("nan")

    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_len for r in ok)
    ttfts = [r.ttft for r in ok]
    e2es = [r.latency for r in ok]
    tpots = [t for t in (r.tpot for r in ok) if t is not None]
    itls: list[float] = []
    for r in ok:
        itls.extend(r.itl)
    good = sum(1 for r in ok if is_good(r, slo))
    short = sum(1 for r in records if r.output_len < r.requested_output_len)

    ttft_s = _stats_ms(ttfts)
    tpot_s = _stats_ms(tpots)
    itl_s = _stats_ms(itls)
    e2e_s = _stats_ms(e2es)
    return LevelResult(
        concurrency=level.concurrency,
        input_len=level.input_len,
        output_len=level.output_len,
        request_rate=level.request_rate,
        completed=completed,
        failed=failed,
        duration_s=float(duration_s),
        total_input_tokens=int(total_in),
        total_output_tokens=int(total_out),
        request_throughput=completed / dur,
        input_throughput=total_in / dur,
        output_throughput=total_out / dur,
        total_throughput=(total_in + total_out) / dur,
        mean_ttft_ms=ttft_s[0],
        median_ttft_ms=ttft_s[1],
        p90_ttft_ms=ttft_s[2],
        p95_ttft_ms=ttft_s[3],
        p99_ttft_ms=ttft_s[4],
        mean_tpot_ms=tpot_s[0],
        median_tpot_ms=tpot_s[1],
        p90_tpot_ms=tpot_s[2],
        p95_tpot_ms=tpot_s[3],
        p99_tpot_ms=tpot_s[4],
        mean_itl_ms=itl_s[0],
        median_itl_ms=itl_s[1],
        p90_itl_ms=itl_s[2],
        p95_itl_ms=itl_s[3],
        p99_itl_ms=itl_s[4],
        mean_e2e_latency_ms=e2e_s[0],
        median_e2e_latency_ms=e2e_s[1],
        p90_e2e_latency_ms=e2e_s[2],
        p95_e2e_latency_ms=e2e_s[3],
        p99_e2e_latency_ms=e2e_s[4],
        concurrency_achieved=float(sum(e2es)) / dur,
        request_goodput=good / dur,
        slo_attainment=(good / len(records)) if records else float("nan"),
        short_outputs=short,
        repeat=repeat,
        num_prompts=len(records),
        errors=summarize_errors(records),
    )


def with_waits(level: LevelResult, records: Sequence[RequestRecord], cut_at: float) -> LevelResult:
    """A level cut short (tuner/bench/load_search.py ``settled``) with its TTFT and end-to-end latency statistics
    over every request sent, each one cancelled in flight counted at what it had waited by ``cut_at`` (its TTFT
    where its first token had come): lower bounds of what the whole level would have shown. Over the finished
    requests alone they were not: the requests that settled the verdict were the ones still waiting (on the H100 a
    level settled past p99 TTFT 2000 ms recorded 311 ms, benchmarks/GPU_SECONDS.md)."""
    ok = [r for r in records if r.success]
    waiting = [r for r in records if r.start and not r.success and r.error == "cancelled"]
    if not waiting:
        return level
    ttft = _stats_ms([r.ttft for r in ok] + [r.ttft or cut_at - r.start for r in waiting])
    e2e = _stats_ms([r.latency for r in ok] + [cut_at - r.start for r in waiting])
    return replace(
        level,
        mean_ttft_ms=ttft[0],
        median_ttft_ms=ttft[1],
        p90_ttft_ms=ttft[2],
        p95_ttft_ms=ttft[3],
        p99_ttft_ms=ttft[4],
        mean_e2e_latency_ms=e2e[0],
        median_e2e_latency_ms=e2e[1],
        p90_e2e_latency_ms=e2e[2],
        p95_e2e_latency_ms=e2e[3],
        p99_e2e_latency_ms=e2e[4],
    )


LEVEL_COLUMNS = tuple(f.name for f in fields(LevelResult))

# One-sided 95% Student-t quantiles t_{0.95, df} for df = 1..30; beyond that the normal 1.645.
_T95 = (
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
    1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
    1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697,
)  # fmt: skip


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else 1.645


def summarize_repeats(results, metric: str = "output_throughput") -> pd.DataFrame:
    """One row per level: n repeats, mean, std (ddof=1) and a one-sided 95% lower confidence bound
    ``mean - t_{0.95,n-1} * std / sqrt(n)`` of ``metric`` (default output_throughput).

    ``results``: a BenchmarkResult, a DataFrame from ``to_frame()``, or an iterable of LevelResult. Levels are
    the distinct (concurrency, input_len, output_len, request_rate, num_prompts) in first-seen order. With one
    repeat, std is NaN and the bound equals the mean (nothing to discount by)."""
    import pandas as pd  # here only: the run file's check imports this module for its metric names

    if isinstance(results, pd.DataFrame):
        df = results
    else:
        levels = getattr(results, "levels", results)
        df = pd.DataFrame([{c: getattr(r, c) for c in LEVEL_COLUMNS} for r in levels], columns=list(LEVEL_COLUMNS))
    keys = ["concurrency", "input_len", "output_len", "request_rate", "num_prompts"]
    rows = []
    for key, g in df.groupby(keys, dropna=False, sort=False):
        vals = g[metric].astype(float).to_numpy()
        n = len(vals)
        mean = float(np.mean(vals))  # a group is never empty
        std = float(np.std(vals, ddof=1)) if n > 1 else float("nan")
        lcb = mean - t95(n - 1) * std / math.sqrt(n) if n > 1 else mean
        row = dict(zip(keys, key, strict=True))
        if isinstance(row["request_rate"], float) and math.isnan(row["request_rate"]):
            row["request_rate"] = None
        row.update(
            {
                "n": n,
                f"{metric}_mean": mean,
                f"{metric}_std": std,
                f"{metric}_lcb95": lcb,
                "failed_total": int(g["failed"].sum()),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)
