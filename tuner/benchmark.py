"""The streaming benchmark client: runs a Workload against a live SGLang server and measures each level.

Usage::

    from tuner.workload import Level, SLO, Workload, concurrency_sweep
    from tuner.benchmark import run_benchmark, ServerDied, BenchmarkTimeout

    wl = Workload(levels=concurrency_sweep(512, 128, [1, 16, 64]), slo=SLO(ttft_ms=500, tpot_ms=50))
    res = run_benchmark("http://127.0.0.1:30000", "Qwen/Qwen3-8B", wl, check_server=lambda: None)
    res.to_frame()          # one row per level and repeat; columns = LevelResult fields
    res.to_csv("bench.csv")

How it measures (SGLang bench_serving's definitions, see tuner/metrics.py):

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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpcore
import httpx
import pandas as pd

from tuner.metrics import LevelResult, RequestRecord, compute_level_result
from tuner.workload import Level, Prompt, Workload, arrival_times, build_prompts

log = logging.getLogger(__name__)

perf_counter = time.perf_counter

WATCH_INTERVAL_S = 0.1
FLUSH_RETRY_S = 0.2
FLUSH_MAX_S = 10.0
LEVEL_SLACK_S = 30.0


@dataclass(frozen=True)
class BenchmarkResult:
    levels: tuple[LevelResult, ...]
    stopped_early: str | None = None
    # Per-request records, aligned with ``levels`` (one tuple per level result); not part of to_frame().
    records: tuple[tuple[RequestRecord, ...], ...] = field(default=(), repr=False, compare=False)

    def to_frame(self) -> pd.DataFrame:
        cols = [f.name for f in fields(LevelResult)]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.levels], columns=cols)

    def to_csv(self, path: str | Path) -> None:
        self.to_frame().to_csv(path, index=False)


class BenchmarkError(RuntimeError):
    pass


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


_CONN_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, OSError)


def _error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return f"stalled: no data for {timeout_s:g} s (ReadTimeout)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# ---------------------------------------------------------------------------------------------- transport
#
# httpx's default transport is too slow for this job on one core: httpcore's AsyncConnectionPool re-scans every
# connection (a getpeername() syscall per idle one) on each request start and end, which is O(connections x
# requests), and its anyio network stream opens a cancel scope per read. Measured with benchmarks/
# client_ceiling.py, the pool alone cost seconds of TTFT at 64 streams. So the client keeps httpx.AsyncClient and
# httpcore's HTTP/1.1 state machine, and swaps in (1) a LIFO pool with O(1) check-out/return and (2) a plain
# asyncio-protocol network stream whose read timeout is a single loop.call_later.


class _Proto(asyncio.Protocol):
    __slots__ = ("transport", "chunks", "size", "eof", "exc", "waiter", "write_waiter", "paused", "reading_paused")

    def __init__(self) -> None:
        self.transport = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.write_waiter: asyncio.Future | None = None
        self.paused = False
        self.reading_paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > 4 * 1024 * 1024 and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self):
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc) -> None:
        self.eof = True
        self.exc = exc
        self._wake()
        ww = self.write_waiter
        if ww is not None and not ww.done():
            ww.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        ww = self.write_waiter
        if ww is not None and not ww.done():
            ww.set_result(None)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


def _expire(fut: asyncio.Future, exc_type) -> None:
    if not fut.done():
        fut.set_exception(exc_type("timed out"))


class _AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport, proto: _Proto) -> None:
        self._t = transport
        self._p = proto
        self._loop = asyncio.get_running_loop()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._p
        if not p.chunks:
            if p.eof:
                if p.exc is not None:
                    raise httpcore.ReadError(str(p.exc) or type(p.exc).__name__)
                return b""
            fut = self._loop.create_future()
            p.waiter = fut
            h = self._loop.call_later(timeout, _expire, fut, httpcore.ReadTimeout) if timeout is not None else None
            try:
                await fut
            finally:
                p.waiter = None
                if h is not None:
                    h.cancel()
            if not p.chunks:
                if p.exc is not None:
                    raise httpcore.ReadError(str(p.exc) or type(p.exc).__name__)
                return b""
        chunks = p.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) > max_bytes:
            p.chunks = [data[max_bytes:]]
            p.size = len(data) - max_bytes
            data = data[:max_bytes]
        else:
            p.chunks = []
            p.size = 0
        if p.reading_paused and p.size < 1024 * 1024:
            p.reading_paused = False
            self._t.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._p
        if p.eof or self._t.is_closing():
            raise httpcore.WriteError("connection closed")
        self._t.write(buffer)
        if p.paused:
            fut = self._loop.create_future()
            p.write_waiter = fut
            h = self._loop.call_later(timeout, _expire, fut, httpcore.WriteTimeout) if timeout is not None else None
            try:
                await fut
            finally:
                p.write_waiter = None
                if h is not None:
                    h.cancel()
            if p.exc is not None:
                raise httpcore.WriteError(str(p.exc))

    async def aclose(self) -> None:
        self._t.close()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        raise httpcore.ConnectError("TLS is not supported by the lean transport")

    def get_extra_info(self, info: str):
        if info == "is_readable":  # only asked of idle connections: data or EOF there means the server hung up
            return bool(self._p.chunks) or self._p.eof
        if info == "socket":
            return self._t.get_extra_info("socket")
        if info == "client_addr":
            return self._t.get_extra_info("sockname")
        if info == "server_addr":
            return self._t.get_extra_info("peername")
        return None


class _AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        loop = asyncio.get_running_loop()
        try:
            coro = loop.create_connection(
                _Proto, host, port, local_addr=(local_address, 0) if local_address else None
            )
            transport, proto = await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from None
        sock = transport.get_extra_info("socket")
        for opt in socket_options or ():
            sock.setsockopt(*opt)
        return _AsyncioStream(transport, proto)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not supported by the lean transport")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _PooledStream:
    """The response body; when closed, its connection goes back to the pool if it can be reused."""

    def __init__(self, stream, conn, pool: "_LeanPool") -> None:
        self._stream = stream
        self._conn = conn
        self._pool = pool
        self._closed = False

    def __aiter__(self):
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self._pool._release(self._conn)


class _LeanPool:
    """LIFO connection pool: O(1) check-out and return, no cross-connection scans."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, keepalive_expiry: float) -> None:
        self._backend = backend
        self._keepalive_expiry = keepalive_expiry
        self._idle: list = []
        self._all: set = set()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        conn = None
        while self._idle:
            c = self._idle.pop()
            if c.is_available() and not c.has_expired() and c.can_handle_request(request.url.origin):
                conn = c
                break
            self._all.discard(c)
            await c.aclose()
        if conn is None:
            conn = httpcore.AsyncHTTPConnection(
                origin=request.url.origin,
                keepalive_expiry=self._keepalive_expiry,
                http1=True,
                http2=False,
                retries=0,
                network_backend=self._backend,
            )
            self._all.add(conn)
        try:
            resp = await conn.handle_async_request(request)
        except BaseException:
            self._all.discard(conn)
            await conn.aclose()
            raise
        return httpcore.Response(
            status=resp.status,
            headers=resp.headers,
            content=_PooledStream(resp.stream, conn, self),
            extensions=resp.extensions,
        )

    def _release(self, conn) -> None:
        if conn.is_idle() and conn in self._all:
            self._idle.append(conn)
        else:
            self._all.discard(conn)
            if not conn.is_closed():
                asyncio.ensure_future(conn.aclose())

    async def aclose(self) -> None:
        conns = list(self._all)
        self._all.clear()
        self._idle.clear()
        for c in conns:
            try:
                await c.aclose()
            except Exception:  # noqa: BLE001 - closing best effort
                pass


class LeanTransport(httpx.AsyncHTTPTransport):
    """httpx transport for plain-HTTP/1.1 benchmarking: httpcore's protocol handling over a lean pool and an
    asyncio-protocol socket layer (see the comment above). Falls back to nothing: use it for http:// only."""

    def __init__(self, keepalive_expiry: float = 60.0) -> None:
        super().__init__(http1=True, http2=False, retries=0)
        self._pool = _LeanPool(_AsyncioBackend(), keepalive_expiry)


class _Client:
    """All the per-run state: the HTTP client, URLs and the request function."""

    def __init__(self, base_url: str, model: str, workload: Workload, check_server):
        self.base = base_url.rstrip("/")
        self.model = model
        self.wl = workload
        self.check_server = check_server
        self.endpoint = workload.endpoint
        self.url = {
            "completions": self.base + "/v1/completions",
            "chat": self.base + "/v1/chat/completions",
            "generate": self.base + "/generate",
        }[self.endpoint]
        max_c = max(lv.concurrency for lv in workload.levels)
        rt = float(workload.request_timeout_s)
        self.timeout_s = rt
        common = dict(
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(rt, connect=min(rt, 30.0), pool=None),
            headers={"accept-encoding": "identity", "content-type": "application/json"},
        )
        if self.base.startswith("http://"):
            # The concurrency semaphore bounds the connections: at most max concurrency + control requests.
            self.http = httpx.AsyncClient(transport=LeanTransport(keepalive_expiry=60.0), **common)
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
        if self.endpoint == "generate":
            payload = {
                ("input_ids" if p.ids is not None else "text"): (p.ids if p.ids is not None else p.text),
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
                "prompt": p.ids if p.ids is not None else p.text,
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
                    except Exception:  # noqa: BLE001 - the status is what matters
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
        except _CONN_ERRORS as e:
            rec.success = False
            rec.connection_error = True
            rec.error = _error_text(e, self.timeout_s)
        except Exception as e:  # noqa: BLE001 - every failure is counted, never raised
            rec.success = False
            rec.error = _error_text(e, self.timeout_s)

    async def _read_oai(self, resp: httpx.Response, rec: RequestRecord, st: float, key: bytes) -> None:
        """Parse an OpenAI-style SSE stream from raw bytes. A chunk carries text when ``key`` ("text": or
        "content":) is followed by a non-empty string; only the usage chunk is JSON-decoded."""
        klen = len(key)
        buf = b""
        ttft = 0.0
        last = st
        itl = rec.itl
        chunks = 0
        done_t = 0.0
        usage = None
        async for data in resp.aiter_raw():
            t = perf_counter()
            if buf:
                data = buf + data
            lines = data.split(b"\n")
            buf = lines.pop()
            for line in lines:
                if not line:
                    continue
                if line[-1:] == b"\r":
                    line = line[:-1]
                    if not line:
                        continue
                if line[:5] != b"data:":
                    if line[:1] == b":" or line[:6] in (b"event:", b"retry:") or line[:3] == b"id:":
                        continue
                    raise _MalformedStream(f"not an SSE field: {line[:80]!r}")
                payload = line[6:] if line[5:6] == b" " else line[5:]
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
                        else:
                            ttft = t - st
                        last = t
                        chunks += 1
                if b'"usage":{' in payload or b'"usage": {' in payload:
                    usage = payload
        if buf.strip():
            raise _MalformedStream(f"stream ended inside a line: {buf[:80]!r}")
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

    async def _read_generate(self, resp: httpx.Response, rec: RequestRecord, st: float) -> None:
        """SGLang's native /generate stream: every data line is JSON with the cumulative text and
        ``meta_info.completion_tokens``. Like bench_serving, a chunk that brings k new tokens contributes k
        equal ITL gaps."""
        buf = b""
        ttft = 0.0
        last = st
        itl = rec.itl
        chunks = 0
        done_t = 0.0
        out = 0
        loads = json.loads
        async for data in resp.aiter_raw():
            t = perf_counter()
            if buf:
                data = buf + data
            lines = data.split(b"\n")
            buf = lines.pop()
            for line in lines:
                line = line.strip()
                if not line:
                    continue
                if line[:5] != b"data:":
                    if line[:1] == b":" or line[:6] in (b"event:", b"retry:") or line[:3] == b"id:":
                        continue
                    raise _MalformedStream(f"not an SSE field: {line[:80]!r}")
                payload = line[5:].strip()
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
                        ttft = t - st
                    else:
                        new = n - out
                        if new <= 0:
                            continue
                        itl.extend([(t - last) / new] * new)
                    last = t
                    out = n
                    chunks += 1
        rec.chunks = chunks
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
        url = self.base + "/flush_cache"
        deadline = perf_counter() + FLUSH_MAX_S
        while True:
            try:
                r = await self.http.post(url, timeout=10.0)
            except httpx.HTTPError as e:
                reason = await self.confirm_death(0.5)
                if reason:
                    raise ServerDied(reason) from e
                log.warning("flush_cache failed: %s", _error_text(e, 10.0))
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

    async def _guarded(self, coro_tasks: list[asyncio.Task], budget_s: float | None) -> None:
        """Wait for all tasks while watching the server; on death or budget overrun cancel them all."""
        gathered = asyncio.gather(*coro_tasks)
        watcher = asyncio.ensure_future(self.watch()) if self.check_server is not None else None
        waiting = {gathered} | ({watcher} if watcher else set())
        try:
            done, _ = await asyncio.wait(waiting, timeout=budget_s, return_when=asyncio.FIRST_COMPLETED)
            if watcher is not None and watcher in done:
                watcher.result()  # raises ServerDied
            if gathered not in done:
                raise BenchmarkTimeout(f"level did not finish within its budget of {budget_s:.1f} s")
            gathered.result()
        finally:
            if watcher is not None:
                watcher.cancel()
            if not gathered.done():
                for t in coro_tasks:
                    t.cancel()
                try:
                    await asyncio.wait_for(asyncio.gather(*coro_tasks, return_exceptions=True), timeout=5.0)
                except (asyncio.TimeoutError, asyncio.CancelledError):
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

        tasks = [asyncio.ensure_future(one(b, r)) for b, r in zip(bodies, recs)]
        await self._guarded(tasks, self.timeout_s * math.ceil(n / level.concurrency) + LEVEL_SLACK_S)
        if not any(r.success for r in recs):
            reason = await self.confirm_death()
            if reason:
                raise ServerDied(reason)
            raise BenchmarkError(f"all {n} warm-up requests failed: {recs[0].error}")

    async def measure(self, level: Level, bodies: list[bytes], prompts: list[Prompt]) -> tuple[list, float]:
        recs = [RequestRecord(p.prompt_len, p.output_len) for p in prompts]
        arrivals = arrival_times(level, self.wl.seed)
        sem = asyncio.Semaphore(level.concurrency)
        t0 = perf_counter()

        async def one(i: int) -> None:
            if arrivals is not None:
                delay = t0 + float(arrivals[i]) - perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with sem:
                await self.request(bodies[i], recs[i])

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(bodies))]
        await self._guarded(tasks, level_budget_s(level, self.timeout_s))
        duration = perf_counter() - t0
        return recs, duration


async def _run(
    base_url: str,
    model: str,
    workload: Workload,
    check_server,
    early_stop,
    on_level,
) -> BenchmarkResult:
    workload.validate()
    c = _Client(base_url, model, workload, check_server)
    results: list[LevelResult] = []
    records: list[tuple[RequestRecord, ...]] = []
    stopped = None
    try:
        for level in workload.levels:
            prompts = build_prompts(workload, level)
            bodies = [c.body(p) for p in prompts]
            for rep in range(workload.repeats):
                await c.warmup(level)
                if workload.flush_cache:
                    await c.flush_cache()
                recs, duration = await c.measure(level, bodies, prompts)
                if any(r.connection_error for r in recs):
                    reason = await c.confirm_death()
                    if reason:
                        raise ServerDied(reason)
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
    finally:
        await c.http.aclose()
    return BenchmarkResult(levels=tuple(results), stopped_early=stopped or None, records=tuple(records))


def run_benchmark(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    check_server: Callable[[], str | None] | None = None,
    early_stop: Callable[[LevelResult], str | None] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> BenchmarkResult:
    """Run every level of ``workload`` (each ``workload.repeats`` times) and return the measurements.

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
        return asyncio.run(_run(base_url, model, workload, check_server, early_stop, on_level))
    box: dict = {}

    def target():
        try:
            box["r"] = asyncio.run(_run(base_url, model, workload, check_server, early_stop, on_level))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    th = threading.Thread(target=target, name="run_benchmark", daemon=True)
    th.start()
    th.join()
    if "e" in box:
        raise box["e"]
    return box["r"]
