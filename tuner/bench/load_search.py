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
from dataclasses import dataclass, replace

from tuner.bench.client import CUT_SHORT, BenchmarkError, BenchmarkResult, WarmupResult, run_benchmark
from tuner.bench.metrics import LevelResult, RequestRecord
from tuner.bench.workload import Level, LoadSearch, Workload


def broken(level: LevelResult, slo: dict[str, float]) -> str | None:
    """Why a level fails the search (None: it passes). A statistic with no sample (NaN) fails."""
    if level.errors.startswith(CUT_SHORT):  # settled before its end: failed, whatever its finished requests show
        return level.errors.split("; ")[0]
    if level.failed:
        return f"{level.failed} of {level.num_prompts} requests failed"
    for metric, limit in slo.items():
        value = getattr(level, metric)
        if not value <= limit:
            return f"{metric} {value:.1f} > {limit:g}"
    return None


_QUANTILES = {"median": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
# A request still waiting for its first token counts past a TTFT limit only this long after it: the client sees
# the first token's time when the second arrives, so a request just under the limit is not cut by mistake.
TTFT_GRACE_S = 0.5


def settled(slo: dict[str, float], records: list[RequestRecord], now: float) -> str | None:
    """Why the level being measured already breaks ``slo``, or None while its verdict is open. A percentile
    limit over the level's N requests is broken once k of them are past it with k >= N - floor(q (N - 1))
    (numpy's linear percentile then lies between two values past the limit; for p99 over 420 requests, 6).
    Past means: finished past it (TTFT, TPOT, end-to-end latency), or still in flight longer than the limit
    (TTFT without a first token, end-to-end), or in flight with its first token past it. A request that failed
    settles it too. Other metrics wait for the level's end. ``now`` is the perf_counter time of the check."""
    n = len(records)
    for r in records:
        if r.error and r.error != "cancelled" and not r.success:
            return f"a request failed: {r.error[:120]}"
    for metric, limit in slo.items():
        stat, _, kind = metric.removesuffix("_ms").partition("_")
        q = _QUANTILES.get(stat)
        if q is None or not metric.endswith("_ms") or kind not in ("ttft", "tpot", "e2e_latency"):
            continue
        need = n - math.floor(q * (n - 1))
        lim = limit / 1000.0
        past = 0
        for r in records:
            if r.success:
                value = {"ttft": r.ttft, "tpot": r.tpot, "e2e_latency": r.latency}[kind]
                past += value is not None and value > lim
            elif r.start and not r.error:  # in flight
                waited = now - r.start
                if kind == "ttft":  # its TTFT once its first token came (the client notes it at once)
                    past += r.ttft > lim if r.ttft else waited > lim + TTFT_GRACE_S
                elif kind == "e2e_latency":
                    past += waited > lim
        if past >= need:
            return f"{metric}: {past} of {n} requests past {limit:g} ms (its {stat} is past it from {need})"
    return None


@dataclass(frozen=True)
class Incumbent:
    """The study's best feasible trial so far, handed down as data (tuner.search knows the study; this module
    does not): its number and the highest request rate at which it held the SLO."""

    trial: int
    rate: float


@dataclass(frozen=True)
class Outcome:
    """What the rate plan learns from a measured level: its verdict, completed requests/s, and the binding
    limit's ratio (the largest ``value / limit`` over the SLO; above 1 broken, inf when requests failed)."""

    passed: bool
    throughput: float = math.nan
    ratio: float = math.nan


@dataclass(frozen=True)
class Stop:
    """Why a rate plan ended before a failing level and its refinements: ``cannot_beat`` when the trial broke
    the SLO at or below the incumbent's rate (the level that broke is the last one measured)."""

    reason: str
    cannot_beat: bool = False


def outcome(level: LevelResult, slo: dict[str, float]) -> Outcome:
    if level.failed or not slo:
        return Outcome(broken(level, slo) is None, level.request_throughput, math.inf if level.failed else math.nan)
    ratios = [getattr(level, m) / limit for m, limit in slo.items()]
    ratio = max(ratios) if all(math.isfinite(r) for r in ratios) else math.nan
    return Outcome(broken(level, slo) is None, level.request_throughput, ratio)


# Saturation: a passing level whose completed requests/s rose by less than this share of the offered rate's rise
# over the last passing level. Goodput is at most the completed rate, so a higher rate cannot raise it by much.
SATURATED_SHARE = 0.5


def saturated(prev: tuple[float, Outcome], cur: tuple[float, Outcome]) -> bool:
    (r0, o0), (r1, o1) = prev, cur
    if not (o0.throughput > 0 and math.isfinite(o1.throughput)) or r1 <= r0:
        return False
    return o1.throughput / o0.throughput - 1 < SATURATED_SHARE * (r1 / r0 - 1)


def _grid(search: LoadSearch, rate: float, above: bool) -> float:
    """The ramp's own rates (start_rate x factor^k, capped at max_rate): the smallest one above ``rate``, or the
    largest one below it."""
    r = search.start_rate
    if above:
        while r <= rate * (1 + 1e-9) and r < search.max_rate:
            r *= search.factor
        return min(r, search.max_rate)
    below = r / search.factor
    while r < rate * (1 - 1e-9):
        below, r = r, r * search.factor
    return below


def crossing(lo: tuple[float, Outcome], hi: tuple[float, Outcome]) -> float | None:
    """Where the binding limit's ratio crosses 1 between a passing and a failing level, log-linear in the rate
    (p99 latency grows about exponentially towards saturation, a hockey stick; on the H200 chat curves the
    log-linear estimate from the ramp's two levels, snapped to the bisection grid, gave the plain search's
    highest rate for 7 of 8 trials, benchmarks/GPU_SECONDS.md). None where either ratio is unusable."""
    (r0, o0), (r1, o1) = lo, hi
    if not (0 < o0.ratio < 1 < o1.ratio < math.inf):
        return None
    return r0 + (r1 - r0) * math.log(1 / o0.ratio) / math.log(o1.ratio / o0.ratio)


def rates(search: LoadSearch, incumbent: Incumbent | None = None) -> Generator[float, bool | Outcome, Stop | None]:
    """The rates to measure, in order: send each level's verdict (True: passed, or an ``Outcome``) to get the next
    rate. The generator's return value says why it stopped early (None: the plain end of the plan).

    Plain (every strategy switch off, or no incumbent): ``start_rate`` x ``factor`` until the first failing
    level (or ``max_rate``), then ``bisect_steps`` bisections between the last passing and first failing rate.

    ``from_incumbent`` with an incumbent above ``start_rate``: first the ramp's grid rate just below the
    incumbent's rate (the curve's low side, and a cheap check), then the incumbent's rate itself; a trial that
    breaks the SLO at either cannot beat the incumbent and stops there. Past it, the ramp goes on up the grid.

    ``saturation_stop``: rising stops, with no failing level, at a passing level that is ``saturated``.

    ``interpolate``: each refinement probes the ``crossing`` snapped down to the grid the plain bisections reach
    (the ramp's cell under the first failing rate cut in ``2**bisect_steps``), estimated again from the tighter
    bracket after each probe; the search ends once no grid point lies between the last pass and the estimate.
    Without ratios (a bool verdict, failed requests) it bisects, on the same grid."""

    def seen(v: bool | Outcome) -> Outcome:
        return v if isinstance(v, Outcome) else Outcome(bool(v))

    lo: tuple[float, Outcome]
    if search.from_incumbent and incumbent is not None and incumbent.rate > search.start_rate:
        top = min(incumbent.rate, search.max_rate)
        check = _grid(search, top, above=False)
        o = seen((yield check))
        if not o.passed:
            return Stop(
                f"stopped at {check:g} req/s, below the {top:g} req/s that trial {incumbent.trial} (the best so "
                f"far) held: it broke the SLO there, so it cannot beat trial {incumbent.trial}",
                cannot_beat=True,
            )
        lo = (check, o)
        o = seen((yield top))
        if not o.passed:
            return Stop(
                f"stopped at {top:g} req/s, the highest rate trial {incumbent.trial} (the best so far) held: "
                f"it broke the SLO there, so it cannot beat trial {incumbent.trial}",
                cannot_beat=True,
            )
        if search.saturation_stop and saturated(lo, (top, o)):
            return _saturation_stop(lo, (top, o))
        lo = (top, o)
    else:
        o = seen((yield search.start_rate))
        if not o.passed:
            return None  # the first level broke: nothing passes
        lo = (search.start_rate, o)
    while True:  # rising
        if lo[0] >= search.max_rate:
            return None
        rate = _grid(search, lo[0], above=True)
        o = seen((yield rate))
        if not o.passed:
            hi = (rate, o)
            break
        if search.saturation_stop and saturated(lo, (rate, o)):
            return _saturation_stop(lo, (rate, o))
        lo = (rate, o)
    # The refinements stay on the grid the plain search bisects on: the ramp's cell under the first failing rate
    # cut in 2**bisect_steps. Above an incumbent's rate that grid may hold no point below the failing rate: done.
    base = _grid(search, hi[0], above=False)
    step = (hi[0] - base) / 2**search.bisect_steps
    for _ in range(search.bisect_steps):
        guess = crossing(lo, hi) if search.interpolate else None
        target = (lo[0] + hi[0]) / 2 if guess is None else guess
        mid = min(base + math.floor((target - base) / step + 1e-9) * step, hi[0] - step)
        if mid <= lo[0] + 1e-9 * hi[0]:
            return None  # no grid point between the last pass and the estimated crossing
        o = seen((yield mid))
        # A pass does not end the search: a curve steeper than log-linear near its knee (the stand-in's) puts the
        # first estimate a grid step low, and the estimate from the probe's own ratio shows it.
        if o.passed:
            lo = (mid, o)
        else:
            hi = (mid, o)
    return None


def _saturation_stop(lo: tuple[float, Outcome], cur: tuple[float, Outcome]) -> Stop:
    (r0, o0), (r1, o1) = lo, cur
    return Stop(
        f"saturated: from {r0:g} to {r1:g} req/s offered, completed requests/s rose only from "
        f"{o0.throughput:.2f} to {o1.throughput:.2f}; a higher rate cannot raise goodput, so the search stopped"
    )


def best_level(levels: tuple[LevelResult, ...], slo_pass: tuple[bool, ...], repeat: int = 0) -> LevelResult | None:
    """The passing level with the highest request rate in one repeat of the search."""
    passing = [lv for lv, ok in zip(levels, slo_pass, strict=True) if ok and lv.repeat == repeat]
    # No rate is bench_serving's inf: requests sent as fast as the concurrency allows.
    return max(passing, key=lambda lv: math.inf if lv.request_rate is None else lv.request_rate, default=None)


class Search:
    """One server's search, apart from how a level is measured: ``levels()`` yields the next level to run, and
    ``add(result)`` hands back what that level measured before the next is asked for. A real trial measures
    with the streaming client (``run_load_search``); a replay answers from a recorded curve
    (tuner.launcher.replay), so both take the same rates and verdicts. ``incumbent``: the study's best
    feasible trial so far, for ``LoadSearch.from_incumbent`` (None: the plain ramp)."""

    def __init__(
        self, workload: Workload, search: LoadSearch, slo: dict[str, float], incumbent: Incumbent | None = None
    ):
        search.validate()
        if not slo:
            raise ValueError("a load search needs an SLO to search against (objective.slo)")
        self.workload, self.search, self.slo, self.incumbent = workload, search, slo, incumbent
        self.results: list[LevelResult] = []
        self.verdicts: list[bool] = []
        self.first_break: list[str] = []
        self.stopped: Stop | None = None

    def add(self, result: LevelResult) -> None:
        self.results.append(result)

    def levels(self) -> Iterator[Level]:
        """``workload.repeats`` searches (repeat i's levels carry ``repeat=i``); ``workload.levels[0]`` gives
        the lengths, ``search`` the rates, sizes and concurrency. A search stopped against the incumbent ends
        them all."""
        template = self.workload.levels[0]
        for rep in range(self.workload.repeats):
            steps = rates(self.search, self.incumbent)
            rate = next(steps)
            while True:
                yield self.search.level(template, rate)
                lr = self.results[-1] = replace(self.results[-1], repeat=rep)
                why = broken(lr, self.slo)
                self.verdicts.append(why is None)
                if why and not self.first_break:
                    self.first_break.append(f"SLO broken at {rate:g} req/s: {why}")
                try:
                    rate = steps.send(outcome(lr, self.slo))
                except StopIteration as end:
                    self.stopped = self.stopped or end.value
                    break
            if self.stopped is not None and self.stopped.cannot_beat:
                return

    def result(self, records: tuple = (), warmup: WarmupResult | None = None) -> BenchmarkResult:
        n = len(self.verdicts)  # levels whose verdict is in; a level cut short by an error has none
        stop = self.stopped
        return BenchmarkResult(
            levels=tuple(self.results[:n]),
            records=records[:n],
            slo_pass=tuple(self.verdicts),
            slo_broken=self.first_break[0] if self.first_break else None,
            stopped_early=stop.reason if stop else None,
            cannot_beat=n - 1 if stop and stop.cannot_beat else None,
            warmup=warmup,
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
    incumbent: Incumbent | None = None,
    on_warmup: Callable[[WarmupResult], None] | None = None,
) -> BenchmarkResult:
    """The search against ``slo`` (LevelResult metric -> upper limit) on a running server, measured by
    run_benchmark (see ``Search``). Raises what run_benchmark raises."""
    state = Search(workload, search, slo, incumbent)

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
            settle=(lambda recs, now: settled(slo, recs, now)) if search.cut_short else None,
            on_warmup=on_warmup,
        )
    except BenchmarkError as exc:  # a server that died at 64 req/s still held the SLO up to 32: keep that curve
        if exc.measured is not None:
            exc.measured = state.result(exc.measured.records, exc.measured.warmup)
        raise
    return state.result(bench.records, bench.warmup)
