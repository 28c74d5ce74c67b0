"""The SLO-goodput load search: on one running server, the highest request rate at which the SLO still holds.

The shape is vLLM's ``benchmarks/sweep serve_sla`` and the usual bench_serving practice: a geometric ramp of
the request rate (``start_rate``, then x ``factor`` each level, capped at ``max_rate``) until the first level
that breaks the SLO, then ``bisect_steps`` bisections between the last passing and the first failing rate. A
level passes when no request failed and every limit holds (``p99_ttft_ms <= 2000`` and so on, bench_serving
metric names); a failing level ends the ramp at once, so an overloaded server is never pushed further.

Each level is sized by time: ``max(min_prompts, ceil(rate * level_duration_s))`` requests at seeded Poisson or
gamma arrivals, at most ``max_concurrency`` in flight (bench_serving's ``--max-concurrency``; none: unbounded).
The result is the goodput (requests/s meeting the per-request SLO, bench_serving's definition) of the highest
passing level; every level is kept, which is the trial's load-vs-latency curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace

from tuner.bench.client import BenchmarkError, BenchmarkResult, run_benchmark
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import Level, LoadSearch, Workload


def broken(level: LevelResult, slo: dict[str, float]) -> str | None:
    """Why a level fails the search (None: it passes). A statistic with no sample (NaN) fails."""
    if level.failed:
        return f"{level.failed} of {level.num_prompts} requests failed"
    for metric, limit in slo.items():
        value = getattr(level, metric)
        if not value <= limit:
            return f"{metric} {value:.1f} > {limit:g}"
    return None


def rates(search: LoadSearch) -> Generator[float, bool, None]:
    """The rates to measure, in order: send each level's verdict (True: passed) to get the next rate."""
    rate = search.start_rate
    while True:
        if not (yield rate):
            break
        if rate >= search.max_rate:
            return
        last_pass, rate = rate, min(rate * search.factor, search.max_rate)
    if rate == search.start_rate:
        return  # the first level broke: nothing passes
    lo, hi = last_pass, rate
    for _ in range(search.bisect_steps):
        mid = (lo + hi) / 2
        if (yield mid):
            lo = mid
        else:
            hi = mid


def best_level(levels: tuple[LevelResult, ...], slo_pass: tuple[bool, ...], repeat: int = 0) -> LevelResult | None:
    """The passing level with the highest request rate in one repeat of the search."""
    passing = [lv for lv, ok in zip(levels, slo_pass, strict=True) if ok and lv.repeat == repeat]
    # No rate is bench_serving's inf: requests sent as fast as the concurrency allows.
    return max(passing, key=lambda lv: math.inf if lv.request_rate is None else lv.request_rate, default=None)


class Search:
    """One server's search, apart from how a level is measured: ``levels()`` yields the next level to run, and
    ``add(result)`` hands back what that level measured before the next is asked for. A real trial measures
    with the streaming client (``run_load_search``); a replay answers from a recorded curve
    (tuner.launcher.replay), so both take the same rates and verdicts."""

    def __init__(self, workload: Workload, search: LoadSearch, slo: dict[str, float]):
        search.validate()
        if not slo:
            raise ValueError("a load search needs an SLO to search against (objective.slo)")
        self.workload, self.search, self.slo = workload, search, slo
        self.results: list[LevelResult] = []
        self.verdicts: list[bool] = []
        self.first_break: list[str] = []

    def add(self, result: LevelResult) -> None:
        self.results.append(result)

    def levels(self) -> Iterator[Level]:
        """``workload.repeats`` searches (repeat i's levels carry ``repeat=i``); ``workload.levels[0]`` gives
        the lengths, ``search`` the rates, sizes and concurrency."""
        template = self.workload.levels[0]
        for rep in range(self.workload.repeats):
            steps = rates(self.search)
            rate = next(steps)
            while True:
                yield self.search.level(template, rate)
                lr = self.results[-1] = replace(self.results[-1], repeat=rep)
                why = broken(lr, self.slo)
                self.verdicts.append(why is None)
                if why and not self.first_break:
                    self.first_break.append(f"SLO broken at {rate:g} req/s: {why}")
                try:
                    rate = steps.send(why is None)
                except StopIteration:
                    break

    def result(self, records: tuple = ()) -> BenchmarkResult:
        n = len(self.verdicts)  # levels whose verdict is in; a level cut short by an error has none
        return BenchmarkResult(
            levels=tuple(self.results[:n]),
            records=records[:n],
            slo_pass=tuple(self.verdicts),
            slo_broken=self.first_break[0] if self.first_break else None,
        )


def run_load_search(
    base_url: str,
    model: str,
    workload: Workload,
    search: LoadSearch,
    slo: dict[str, float],
    *,
    check_server: Callable[[], str | None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> BenchmarkResult:
    """The search against ``slo`` (LevelResult metric -> upper limit) on a running server, measured by
    run_benchmark (see ``Search``). Raises what run_benchmark raises."""
    state = Search(workload, search, slo)

    def collect(lr: LevelResult) -> None:
        state.add(lr)
        if on_level is not None:
            on_level(lr)

    # The client's pool and timeouts are sized from workload.levels: give it the largest level possible.
    widest = search.level(workload.levels[0], search.max_rate)
    try:
        bench = run_benchmark(
            base_url,
            model,
            replace(workload, levels=(widest,), repeats=1),
            check_server=check_server,
            on_level=collect,
            levels=state.levels(),
        )
    except BenchmarkError as exc:  # a server that died at 64 req/s still held the SLO up to 32: keep that curve
        if exc.measured is not None:
            exc.measured = state.result(exc.measured.records)
        raise
    return state.result(bench.records)
