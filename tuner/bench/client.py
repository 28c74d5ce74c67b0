"""The streaming benchmark client: runs a Workload against a live SGLang server and measures each level.

Usage::

    from tuner.bench.workload import Level, SLO, Workload, concurrency_sweep
    from tuner.bench.client import run_benchmark, ServerDied, BenchmarkTimeout

    wl = Workload(levels=concurrency_sweep(512, 128, [1, 16, 64]), slo=SLO(ttft_ms=500, tpot_ms=50))
    res = run_benchmark("http://127.0.0.1:30000", "Qwen/Qwen3-8B", wl, check_server=lambda: None)
    res.to_frame()          # one row per level and repeat; columns = LevelResult fields
    res.to_csv("bench.csv")

How it measures (SGLang bench_serving's definitions, see tuner/bench/metrics.py):

- one ``httpx.AsyncClient`` (HTTP/1.1, no retries, a pool as large as the largest concurrency), every request
  streamed; ``completions`` = POST /v1/completions with ``stream_options.include_usage``, ``ignore_eos`` and
  ``temperature 0``; ``chat`` = /v1/chat/completions; ``generate`` = SGLang's native /generate;
- concurrency caps in-flight requests with a semaphore; ``request_rate`` releases requests at seeded Poisson
  arrival times (still capped by the semaphore); a request's clock starts when it is sent;
- TTFT is the first chunk carrying generated text; ITL are the gaps between text-carrying chunks; E2E ends at
  ``[DONE]``; output tokens come from the server's ``usage.completion_tokens`` (``meta_info`` for /generate), or
  the number of text chunks when the server reports none;
- the SSE stream is parsed from raw bytes without decoding JSON per chunk (only the usage chunk is decoded), so
  one CPU core keeps up with tens of thousands of streamed tokens per second (benchmarks/RESULTS.md);
- a request fails (counted, with its error) on HTTP status != 200, a connection error, a stream that stalls
  longer than ``request_timeout_s``, a stream that ends before ``[DONE]`` and a data line that is not JSON.

Before every measured run of a level: ``warmup_requests`` unmeasured requests, then ``POST /flush_cache``, retried
every 0.2 s for up to 10 s while it answers 400 (requests still draining); 404 means no such endpoint and is
skipped silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from tuner.bench.metrics import LevelResult, RequestRecord, compute_level_result, with_waits
from tuner.bench.transport import ARRIVED, CONN_ERRORS, H1Transport, error_text
from tuner.bench.workload import Level, Prompt, StableWarmup, Workload, build_prompts, level_arrivals
from tuner.errors import TunerError
from tuner.sglang import endpoints

log = logging.getLogger(__name__)

perf_counter = time.perf_counter

WATCH_INTERVAL_S = 0.1
# A level may be cut short once its verdict is settled (tuner/bench/load_search.py ``settled``): asked this often.
SETTLE_INTERVAL_S = 0.25
# What a cut level's ``errors`` starts with: it failed for that reason, whatever its finished requests show.
CUT_SHORT = "cut short: "
Settle = Callable[[list[RequestRecord], float], str | None]
FLUSH_RETRY_S = 0.2
FLUSH_MAX_S = 10.0
LEVEL_SLACK_S = 30.0


@dataclass(frozen=True)
class WarmupResult:
    """The warm-up until stable latencies (workload.StableWarmup): how long, how many bursts, whether the last
    two agreed (False: it ran out of time), and each burst's median TTFT and ITL in ms."""

    seconds: float
    bursts: int
    stable: bool
    medians_ms: tuple[tuple[float, float], ...] = ()

    def record(self) -> dict:
        return {"warmup_s": round(self.seconds, 3), "warmup_bursts": self.bursts, "warmup_stable": self.stable}


@dataclass(frozen=True)
class BenchmarkResult:
    levels: tuple[LevelResult, ...]
    stopped_early: str | None = None
    # Per-request records, aligned with ``levels`` (one tuple per level result); not part of to_frame().
    records: tuple[tuple[RequestRecord, ...], ...] = field(default=(), repr=False, compare=False)
    # A load search's verdict per level (the SLO held, no request failed), empty for fixed levels; and where
    # the SLO first broke, and why.
    slo_pass: tuple[bool, ...] = ()
    slo_broken: str | None = None
    # A load search stopped because the trial cannot beat the study's incumbent (tuner/bench/load_search.py):
    # the index in ``levels`` of the level that broke the SLO at or below the incumbent's rate.
    cannot_beat: int | None = None
    warmup: WarmupResult | None = None  # the warm-up until stable latencies, before the first level

    def to_frame(self) -> pd.DataFrame:
        cols = [f.name for f in fields(LevelResult)]
        frame = pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.levels], columns=cols)
        if self.slo_pass:
            frame["slo_pass"] = list(self.slo_pass)
        return frame

    def to_csv(self, path: str | Path) -> None:
        self.to_frame().to_csv(path, index=False)


class BenchmarkError(TunerError):
    # The levels completed before the error (a server that served c=1 and c=16 and died at c=64).
    measured: BenchmarkResult | None = None


class ServerDied(BenchmarkError):
    """The server went away under load; ``reason`` is what the watcher saw."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BenchmarkTimeout(BenchmarkError):
    pass


class _MalformedStream(Exception):
    pass


def level_budget_s(level: Level, request_timeout_s: float) -> float:
    """Wall-clock budget of one measured level: every wave of ``concurrency`` requests may take up to the
    request timeout, plus slack, plus the Poisson release schedule's own span when there is one."""
    budget = request_timeout_s * math.ceil(level.num_prompts / level.concurrency) + LEVEL_SLACK_S
    if level.request_rate:
        budget += 2.0 * level.num_prompts / level.request_rate
    return budget


class _SSE:
    """Server-sent-event framing over raw reads: ``feed`` returns the payloads of the ``data:`` lines that a read
    completed, ``[DONE]`` included. A line is stripped of surrounding whitespace (CRLF endings, stray blanks),
    then of the one optional space after ``data:``; comments and the other SSE fields are skipped."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self.buf:
            data = self.buf + data
        lines = data.split(b"\n")
        self.buf = lines.pop()
        # The payloads overwrite the list's own front: no second list per read, on the client's hottest path.
        n = 0
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line[:5] != b"data:":
                if line[:1] == b":" or line[:6] in (b"event:", b"retry:") or line[:3] == b"id:":
                    continue
                raise _MalformedStream(f"not an SSE field: {line[:80]!r}")
            lines[n] = line[6:] if line[5:6] == b" " else line[5:]
            n += 1
        del lines[n:]
        return lines

    def end(self) -> None:
        if self.buf.strip():
            raise _MalformedStream(f"stream ended inside a line: {self.buf[:80]!r}")


def _finish(rec: RequestRecord, out: int, chunks: int, ttft: float, done_t: float, st: float) -> None:
    """The end of any stream: a request succeeds only with generated text and a [DONE] after it."""
    rec.output_len = out
    if not done_t:
        rec.error = f"stream ended before [DONE] after {chunks} text chunks"
        rec.connection_error = True
        return
    if not chunks:
        rec.error = "stream finished without any generated text"
        return
    rec.ttft = ttft
    rec.latency = done_t - st
    rec.success = True


class _Client:
    """All the per-run state: the HTTP client, URLs and the request function."""

    def __init__(self, base_url: str, model: str, workload: Workload, check_server):
        self.base = base_url.rstrip("/")
        self.model = model
        self.wl = workload
        self.check_server = check_server
        self.endpoint = workload.endpoint
        self.url = self.base + endpoints.BY_NAME[self.endpoint]
        max_c = max(lv.concurrency for lv in workload.levels)
        rt = float(workload.request_timeout_s)
        self.timeout_s = rt
        common: dict[str, Any] = dict(  # keyword arguments for either AsyncClient below
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(rt, connect=min(rt, 30.0), pool=None),
            headers={"accept-encoding": "identity", "content-type": "application/json"},
        )
        if self.base.startswith("http://"):
            # The concurrency semaphore bounds the connections: at most max concurrency + control requests.
            self.http = httpx.AsyncClient(transport=H1Transport(), **common)
        else:  # https: httpx's own pool
            self.http = httpx.AsyncClient(
                http1=True,
                http2=False,
                limits=httpx.Limits(max_connections=max_c + 4, max_keepalive_connections=max_c + 4),
                **common,
            )

    # ------------------------------------------------------------------ payloads

    def body(self, p: Prompt, output_len: int | None = None) -> bytes:
        out = p.output_len if output_len is None else output_len
        ids = p.ids.tolist() if p.ids is not None else None
        if self.endpoint == "generate":
            payload = {
                ("input_ids" if ids is not None else "text"): (ids if ids is not None else p.text),
                "sampling_params": {"temperature": 0.0, "max_new_tokens": out, "ignore_eos": True},
                "stream": True,
            }
        elif self.endpoint == "chat":
            payload = {
                "model": self.model,
                "messages": [{"role": "user", "content": p.text}],
                "max_tokens": out,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
            }
        else:
            payload = {
                "model": self.model,
                "prompt": ids if ids is not None else p.text,
                "max_tokens": out,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
            }
        return json.dumps(payload, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ one request

    async def request(self, body: bytes, rec: RequestRecord) -> None:
        """Send one streamed request and fill ``rec``. Never raises (except CancelledError)."""
        st = perf_counter()
        rec.start = st
        try:
            async with self.http.stream("POST", self.url, content=body) as resp:
                if resp.status_code != 200:
                    try:
                        text = (await resp.aread())[:300].decode("utf-8", "replace")
                    except Exception:
                        text = ""
                    rec.error = f"HTTP {resp.status_code}: {text}".strip()
                    return
                if self.endpoint == "generate":
                    await self._read_generate(resp, rec, st)
                else:
                    await self._read_oai(resp, rec, st, b'"content":' if self.endpoint == "chat" else b'"text":')
        except asyncio.CancelledError:
            rec.error = rec.error or "cancelled"
            raise
        except _MalformedStream as e:
            rec.success = False
            rec.error = f"malformed SSE: {e}"
        except CONN_ERRORS as e:
            rec.success = False
            rec.connection_error = True
            rec.error = error_text(e, self.timeout_s)
        except Exception as e:
            rec.success = False
            rec.error = error_text(e, self.timeout_s)

    async def _read_oai(self, resp: httpx.Response, rec: RequestRecord, st: float, key: bytes) -> None:
        """An OpenAI-style stream. A chunk carries text when ``key`` ("text": or "content":) is followed by a
        non-empty string; only the usage chunk is JSON-decoded."""
        klen = len(key)
        sse = _SSE()
        ttft = 0.0
        last = st
        itl = rec.itl
        chunks = 0
        done_t = 0.0
        usage = None
        async for data in resp.aiter_raw():
            t = ARRIVED.get() or perf_counter()
            for payload in sse.feed(data):
                if payload[:1] != b"{" or payload[-1:] != b"}":
                    if payload == b"[DONE]":
                        done_t = t
                        continue
                    raise _MalformedStream(f"data is not JSON: {payload[:80]!r}")
                i = payload.find(key)
                if i >= 0:
                    j = i + klen
                    c = payload[j : j + 1]
                    if c == b" ":
                        j += 1
                        c = payload[j : j + 1]
                    if c == b'"' and payload[j + 1 : j + 2] != b'"':
                        if chunks:
                            itl.append(t - last)
                        else:  # on the record at once: a level cut short reads it off a request still in flight
                            rec.ttft = ttft = t - st
                        last = t
                        chunks += 1
                if b'"usage":{' in payload or b'"usage": {' in payload:
                    usage = payload
        sse.end()
        rec.chunks = chunks
        out = chunks
        if usage is not None:
            try:
                u = json.loads(usage).get("usage") or {}
            except ValueError as e:
                raise _MalformedStream(f"usage chunk is not JSON: {e}") from None
            if isinstance(u.get("completion_tokens"), int):
                out = u["completion_tokens"]
            if isinstance(u.get("prompt_tokens"), int) and u["prompt_tokens"] > 0:
                rec.prompt_len = u["prompt_tokens"]
        _finish(rec, out, chunks, ttft, done_t, st)

    async def _read_generate(self, resp: httpx.Response, rec: RequestRecord, st: float) -> None:
        """SGLang's native /generate stream: every data line is JSON with the cumulative text and
        ``meta_info.completion_tokens``. Like bench_serving, a chunk that brings k new tokens contributes k
        equal ITL gaps."""
        sse = _SSE()
        ttft = 0.0
        last = st
        itl = rec.itl
        chunks = 0
        done_t = 0.0
        out = 0
        loads = json.loads
        async for data in resp.aiter_raw():
            t = ARRIVED.get() or perf_counter()
            for payload in sse.feed(data):
                if payload == b"[DONE]":
                    done_t = t
                    continue
                try:
                    d = loads(payload)
                except ValueError:
                    raise _MalformedStream(f"data is not JSON: {payload[:80]!r}") from None
                if not isinstance(d, dict):
                    raise _MalformedStream(f"data is not a JSON object: {payload[:80]!r}")
                if "error" in d and "text" not in d:
                    raise _MalformedStream(f"server error in stream: {str(d['error'])[:200]}")
                meta = d.get("meta_info") or {}
                pt = meta.get("prompt_tokens")
                if isinstance(pt, int) and pt > 0:
                    rec.prompt_len = pt
                if d.get("text") or d.get("output_ids"):
                    n = meta.get("completion_tokens")
                    n = n if isinstance(n, int) else out + 1
                    if chunks == 0:
                        rec.ttft = ttft = t - st
                    else:
                        new = n - out
                        if new <= 0:
                            continue
                        itl.extend([(t - last) / new] * new)
                    last = t
                    out = n
                    chunks += 1
        sse.end()
        rec.chunks = chunks
        _finish(rec, out, chunks, ttft, done_t, st)

    # ------------------------------------------------------------------ server side helpers

    async def poll_server(self) -> str | None:
        if self.check_server is None:
            return None
        return await asyncio.to_thread(self.check_server)

    async def watch(self) -> None:
        """Raise ServerDied as soon as check_server reports a reason."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            reason = await self.poll_server()
            if reason:
                raise ServerDied(str(reason))

    async def confirm_death(self, wait_s: float = 1.0) -> str | None:
        """After connection errors: give the watcher a moment to see the process exit."""
        if self.check_server is None:
            return None
        deadline = perf_counter() + wait_s
        while True:
            reason = await self.poll_server()
            if reason or perf_counter() >= deadline:
                return reason or None
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def flush_cache(self) -> None:
        url = self.base + endpoints.FLUSH_CACHE
        deadline = perf_counter() + FLUSH_MAX_S
        while True:
            try:
                r = await self.http.post(url, timeout=10.0)
            except httpx.HTTPError as e:
                reason = await self.confirm_death(0.5)
                if reason:
                    raise ServerDied(reason) from e
                log.warning("flush_cache failed: %s", error_text(e, 10.0))
                return
            if r.status_code == 404:
                return
            if r.status_code != 400:
                if r.status_code >= 300:
                    log.warning("flush_cache answered %s: %s", r.status_code, r.text[:200])
                return
            if perf_counter() >= deadline:
                log.warning("flush_cache still answered 400 after %.0f s; measuring anyway", FLUSH_MAX_S)
                return
            await asyncio.sleep(FLUSH_RETRY_S)

    # ------------------------------------------------------------------ running a level

    async def _guarded(
        self, coro_tasks: list[asyncio.Task], budget_s: float | None, stop: asyncio.Task | None = None
    ) -> None:
        """Wait for all tasks while watching the server; on death or budget overrun cancel them all. ``stop``
        finishing first (a level whose verdict is settled) cancels them too, without an error."""
        gathered = asyncio.gather(*coro_tasks)
        watcher = asyncio.ensure_future(self.watch()) if self.check_server is not None else None
        waiting = {gathered} | ({watcher} if watcher else set()) | ({stop} if stop else set())
        try:
            done, _ = await asyncio.wait(waiting, timeout=budget_s, return_when=asyncio.FIRST_COMPLETED)
            if watcher is not None and watcher in done:
                watcher.result()  # raises ServerDied
            if stop is not None and stop in done and gathered not in done:
                return  # the finally below cancels what is in flight and what was not sent yet
            if gathered not in done:
                raise BenchmarkTimeout(f"level did not finish within its budget of {budget_s:.1f} s")
            gathered.result()
        finally:
            if stop is not None:
                stop.cancel()
            if watcher is not None:
                watcher.cancel()
            if not gathered.done():
                for t in coro_tasks:
                    t.cancel()
                try:
                    await asyncio.wait_for(asyncio.gather(*coro_tasks, return_exceptions=True), timeout=5.0)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            if gathered.done() and not gathered.cancelled():
                gathered.exception()  # retrieved: no "exception was never retrieved" noise
            if watcher is not None:
                try:
                    await watcher
                except (asyncio.CancelledError, ServerDied):
                    pass

    async def warmup(self, level: Level) -> None:
        n = self.wl.warmup_requests
        if n <= 0:
            return
        prompts = build_prompts(self.wl, level, warmup=True, n=n)
        out = min(p.output_len for p in prompts)
        out = max(1, min(out, 16))
        recs = [RequestRecord(p.prompt_len, out) for p in prompts]
        bodies = [self.body(p, out) for p in prompts]
        sem = asyncio.Semaphore(level.concurrency)

        async def one(b, r):
            async with sem:
                await self.request(b, r)

        tasks = [asyncio.ensure_future(one(b, r)) for b, r in zip(bodies, recs, strict=True)]
        await self._guarded(tasks, self.timeout_s * math.ceil(n / level.concurrency) + LEVEL_SLACK_S)
        if not any(r.success for r in recs):
            reason = await self.confirm_death()
            if reason:
                raise ServerDied(reason)
            raise BenchmarkError(f"all {n} warm-up requests failed: {recs[0].error}")

    async def warm_until_stable(self, level: Level, how: StableWarmup) -> WarmupResult:
        """Bursts of ``min(level.concurrency, level.num_prompts, how.max_burst)`` requests at once until two
        consecutive bursts' median TTFT and median ITL agree within ``how.tolerance``, or ``how.max_s`` passed
        (then the last burst still ends: a burst is never cut)."""
        n = max(1, min(level.concurrency, level.num_prompts, how.max_burst))
        t0 = perf_counter()
        medians: list[tuple[float, float]] = []
        stable = False
        burst = 0
        while True:
            prompts = build_prompts(self.wl, level, warmup=True, n=n + burst)[burst:]  # fresh prompts each burst
            out = max(2, min(how.output_len, min(p.output_len for p in prompts)))
            recs = [RequestRecord(p.prompt_len, out) for p in prompts]
            tasks = [
                asyncio.ensure_future(self.request(self.body(p, out), r)) for p, r in zip(prompts, recs, strict=True)
            ]
            await self._guarded(tasks, self.timeout_s + LEVEL_SLACK_S)
            burst += n
            ok = [r for r in recs if r.success]
            if not ok:
                reason = await self.confirm_death()
                if reason:
                    raise ServerDied(reason)
                raise BenchmarkError(f"all {n} warm-up requests failed: {recs[0].error}")
            itls = [x for r in ok for x in r.itl]
            medians.append((1000 * _median([r.ttft for r in ok]), 1000 * _median(itls) if itls else 0.0))
            if len(medians) >= 2 and all(
                _agree(a, b, how.tolerance) for a, b in zip(medians[-2], medians[-1], strict=True)
            ):
                stable = True
                break
            if perf_counter() - t0 >= how.max_s:
                break
        return WarmupResult(perf_counter() - t0, len(medians), stable, tuple(medians))

    async def measure(
        self, level: Level, bodies: list[bytes], prompts: list[Prompt], settle: Settle | None = None
    ) -> tuple[list, float, str | None]:
        """The level's records and duration, and why it was cut short (None: it ran to its end). ``settle``
        (records, perf_counter now) is asked every SETTLE_INTERVAL_S whether the level's verdict is settled."""
        recs = [RequestRecord(p.prompt_len, p.output_len) for p in prompts]
        arrivals = level_arrivals(self.wl, level)
        sem = asyncio.Semaphore(level.concurrency)
        t0 = perf_counter()

        async def one(i: int) -> None:
            if arrivals is not None:
                delay = t0 + float(arrivals[i]) - perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with sem:
                await self.request(bodies[i], recs[i])

        cut: list[str] = []

        async def check() -> None:
            assert settle is not None
            while not cut:
                await asyncio.sleep(SETTLE_INTERVAL_S)
                reason = settle(recs, perf_counter())
                if reason:
                    cut.append(reason)

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(bodies))]
        stop = asyncio.ensure_future(check()) if settle is not None else None
        await self._guarded(tasks, level_budget_s(level, self.timeout_s), stop)
        duration = perf_counter() - t0
        return recs, duration, cut[0] if cut else None


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def _agree(a: float, b: float, tolerance: float) -> bool:
    """Two medians within ``tolerance`` of the larger (both about 0 agree: no ITL with one-token outputs)."""
    return abs(a - b) <= tolerance * max(abs(a), abs(b)) + 1e-9


async def _run(
    base_url: str,
    model: str,
    workload: Workload,
    check_server,
    early_stop,
    on_level,
    levels,
    settle=None,
    on_warmup=None,
) -> BenchmarkResult:
    workload.validate()
    c = _Client(base_url, model, workload, check_server)
    results: list[LevelResult] = []
    records: list[tuple[RequestRecord, ...]] = []
    stopped = None
    warm: WarmupResult | None = None
    try:
        for level in workload.levels if levels is None else levels:
            prompts = build_prompts(workload, level)
            bodies = [c.body(p) for p in prompts]
            if workload.stable_warmup is not None and warm is None:
                warm = await c.warm_until_stable(level, workload.stable_warmup)
                if on_warmup is not None:
                    on_warmup(warm)
            for rep in range(workload.repeats):
                await c.warmup(level)
                if workload.flush_cache:
                    await c.flush_cache()
                recs, duration, cut = await c.measure(level, bodies, prompts, settle)
                cut_at = perf_counter()
                if any(r.connection_error for r in recs):
                    reason = await c.confirm_death()
                    if reason:
                        raise ServerDied(reason)
                if cut:  # the verdict is the cut's; throughputs count the requests that finished
                    done = [r for r in recs if r.success or (r.error and r.error != "cancelled")]
                    lr = with_waits(compute_level_result(level, done, duration, workload.slo, repeat=rep), recs, cut_at)
                    sent = sum(1 for r in recs if r.start)
                    note = f"{CUT_SHORT}{cut}; after {duration:.1f} s: {len(done)} finished, "
                    note += f"{sent - len(done)} cancelled in flight (counted in TTFT and latency at what they had "
                    note += f"waited: lower bounds), {len(recs) - sent} not sent"
                    lr = replace(lr, errors=note + (f"; {lr.errors}" if lr.errors else ""))
                else:
                    lr = compute_level_result(level, recs, duration, workload.slo, repeat=rep)
                results.append(lr)
                records.append(tuple(recs))
                if on_level is not None:
                    on_level(lr)
                if early_stop is not None:
                    stopped = early_stop(lr)
                    if stopped:
                        break
            if stopped:
                break
    except BenchmarkError as exc:
        exc.measured = BenchmarkResult(levels=tuple(results), records=tuple(records), warmup=warm)
        raise
    finally:
        await c.http.aclose()
    return BenchmarkResult(levels=tuple(results), stopped_early=stopped or None, records=tuple(records), warmup=warm)


def run_benchmark(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    check_server: Callable[[], str | None] | None = None,
    early_stop: Callable[[LevelResult], str | None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
    levels: Iterable[Level] | None = None,
    settle: Settle | None = None,
    on_warmup: Callable[[WarmupResult], None] | None = None,
) -> BenchmarkResult:
    """Run every level of ``workload`` (each ``workload.repeats`` times) and return the measurements.

    ``levels`` replaces ``workload.levels``: an iterator is advanced only after the previous level's result
    went to ``on_level``, so it can choose the next level from it (the load search does). ``settle`` ends a
    level early once it says the level's verdict is settled: what is in flight is cancelled (the connection
    closed, so SGLang aborts it), what was not sent is not, and the level's ``errors`` start with CUT_SHORT.

    Raises ServerDied when ``check_server`` reports a reason during a level (in-flight requests are cancelled
    at once) or after connection errors; BenchmarkTimeout when a level overruns ``level_budget_s``;
    BenchmarkError when every warm-up request fails on a live server. Failed requests are counted in the
    LevelResult, never raised. Synchronous: runs its own event loop (in a helper thread when the caller is
    already inside one)."""
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        return asyncio.run(
            _run(base_url, model, workload, check_server, early_stop, on_level, levels, settle, on_warmup)
        )
    box: dict = {}

    def target():
        try:
            box["r"] = asyncio.run(
                _run(base_url, model, workload, check_server, early_stop, on_level, levels, settle, on_warmup)
            )
        except BaseException as e:
            box["e"] = e

    th = threading.Thread(target=target, name="run_benchmark", daemon=True)
    th.start()
    th.join()
    if "e" in box:
        raise box["e"]
    return box["r"]
