"""A minimal HTTP/1.1 transport for httpx, written for measured speed: the benchmark client streams tens of
thousands of SSE chunks per second from one core, which httpx's own transport cannot (benchmarks/RESULTS.md).

It also stamps when each response's first bytes arrived, in the event loop's read callback, so that a busy
client does not add its own delay to TTFT: ``ARRIVED`` carries that time to the request's coroutine.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

import httpx

# httpx's default transport costs too much per streamed chunk for this job on one core: httpcore's
# AsyncConnectionPool re-scans every connection (a getpeername() syscall per idle one) at each request start and
# end, O(connections x requests), its anyio stream opens a cancel scope per read, and h11 turns every HTTP chunk
# into an event that climbs five async-generator layers. Measured with benchmarks/client_ceiling.py, the pool
# alone cost seconds of TTFT at 64 streams. So the client keeps httpx.AsyncClient (requests, headers, timeouts,
# exceptions) with its own HTTP/1.1 transport: an asyncio protocol per connection, a LIFO pool, and a chunked
# decoder that hands over everything that arrived in one socket read as one piece. A client that falls behind
# therefore pays per read, not per token; all events in one read get the same arrival time, taken in the
# protocol's read callback.

perf_counter = time.perf_counter
# When the bytes a read returns first arrived (perf_counter), set by the transport for the reading coroutine.
ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)

CONN_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, OSError)


def error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return f"stalled: no data for {timeout_s:g} s (ReadTimeout)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None  # set by connection_made, before any data
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.write_waiter: asyncio.Future | None = None
        self.paused = False
        self.reading_paused = False
        self.first_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.chunks:
            # Stamped here, in the event loop's read callback, not when the request's coroutine gets to run:
            # with 64 streams answered in one decode step, the last would otherwise be stamped many ms late.
            self.first_at = perf_counter()
        self.chunks.append(data)
        self.size += len(data)
        if self.size > 4 * 1024 * 1024 and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None  # asyncio calls connection_made before data_received
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


def _expire(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


_HDR_END = b"\r\n\r\n"


class _Conn:
    """One HTTP/1.1 connection: a protocol, a byte buffer, and the timeouts of the request in flight."""

    def __init__(self, transport, proto: _Proto, loop) -> None:
        self.t = transport
        self.p = proto
        self.loop = loop
        self.buf = b""
        self.idle_since = 0.0
        self.arrived = 0.0  # when the bytes now in ``buf`` arrived
        self.request: httpx.Request | None = None

    def reusable(self, now: float, expiry: float) -> bool:
        p = self.p
        return not (p.eof or p.chunks or self.buf or self.t.is_closing() or now - self.idle_since > expiry)

    def close(self) -> None:
        self.t.close()

    async def fill(self, timeout: float | None) -> bool:
        """Move newly received bytes into ``buf``; False at EOF."""
        p = self.p
        if not p.chunks:
            if p.eof:
                if p.exc is not None:
                    raise httpx.ReadError(f"connection lost: {p.exc}", request=self.request)
                return False
            fut = self.loop.create_future()
            p.waiter = fut
            try:
                await self._wait(fut, timeout, httpx.ReadTimeout)
            finally:
                p.waiter = None
            if not p.chunks:
                if p.exc is not None:
                    raise httpx.ReadError(f"connection lost: {p.exc}", request=self.request)
                return False
        chunks = p.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.arrived = p.first_at
        p.chunks = []
        p.size = 0
        if p.reading_paused:
            p.reading_paused = False
            self.t.resume_reading()
        self.buf = self.buf + data if self.buf else data
        return True

    async def _wait(
        self, fut: asyncio.Future, timeout: float | None, timeout_exc: type[httpx.TimeoutException]
    ) -> None:
        """Wait for the protocol to resolve ``fut``, or fail it with ``timeout_exc`` after ``timeout`` seconds."""
        h = None
        if timeout is not None:
            h = self.loop.call_later(timeout, _expire, fut, timeout_exc("timed out", request=self.request))
        try:
            await fut
        finally:
            if h is not None:
                h.cancel()

    async def write(self, data: bytes, timeout: float | None) -> None:
        p = self.p
        if p.eof or self.t.is_closing():
            raise httpx.WriteError("connection closed by the server", request=self.request)
        self.t.write(data)
        if p.paused:
            fut = self.loop.create_future()
            p.write_waiter = fut
            try:
                await self._wait(fut, timeout, httpx.WriteTimeout)
            finally:
                p.write_waiter = None
            if p.exc is not None:
                raise httpx.WriteError(str(p.exc), request=self.request)


class _Body(httpx.AsyncByteStream):
    """A response body: content-length, chunked or read-until-close. Each iteration yields all the payload bytes
    that one socket read brought."""

    def __init__(self, conn: _Conn, pool: H1Transport, mode: str, length: int, keep_alive: bool, read_to):
        self.c = conn
        self.pool = pool
        self.mode = mode  # "length" | "chunked" | "close"
        self.left = length
        self.keep_alive = keep_alive
        self.read_to = read_to
        self.complete = False
        self.closed = False

    def _peer_closed(self):
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body", request=self.c.request
        )

    async def __aiter__(self):
        c = self.c
        if self.mode == "length":
            while self.left > 0:
                if not c.buf and not await c.fill(self.read_to):
                    raise self._peer_closed()
                piece = c.buf[: self.left]
                c.buf = c.buf[len(piece) :]
                self.left -= len(piece)
                ARRIVED.set(c.arrived)
                yield piece
            self.complete = True
            return
        if self.mode == "close":
            if c.buf:
                piece, c.buf = c.buf, b""
                ARRIVED.set(c.arrived)
                yield piece
            while await c.fill(self.read_to):
                piece, c.buf = c.buf, b""
                ARRIVED.set(c.arrived)
                yield piece
            self.complete = True
            self.keep_alive = False
            return
        # chunked
        left = 0  # bytes of the current chunk still to come; -1: expecting the CRLF after chunk data
        while True:
            buf = c.buf
            pos = 0
            n = len(buf)
            out = []
            done = False
            while pos < n:
                if left > 0:
                    take = min(left, n - pos)
                    out.append(buf[pos : pos + take])
                    pos += take
                    left -= take
                    if left == 0:
                        left = -1
                    continue
                if left == -1:
                    if n - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise httpx.RemoteProtocolError("malformed chunked body", request=c.request)
                    pos += 2
                    left = 0
                    continue
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > 1024:
                        raise httpx.RemoteProtocolError("chunk size line too long", request=c.request)
                    break
                try:
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(
                        f"bad chunk size {buf[pos:eol][:40]!r}", request=c.request
                    ) from None
                if size == 0:
                    # last chunk: skip the (usually empty) trailers up to the blank line
                    if buf[eol : eol + 4] == _HDR_END:
                        pos = eol + 4
                        done = True
                        break
                    end = buf.find(_HDR_END, eol)
                    if end < 0:
                        break
                    pos = end + 4
                    done = True
                    break
                pos = eol + 2
                left = size
            c.buf = buf[pos:] if pos < n else b""
            if out:
                ARRIVED.set(c.arrived)
                yield out[0] if len(out) == 1 else b"".join(out)
            if done:
                self.complete = True
                return
            if not await c.fill(self.read_to):
                raise self._peer_closed()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool._release(self.c, self.complete and self.keep_alive)


class H1Transport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 transport for httpx.AsyncClient: LIFO keep-alive pool, no retries, no TLS.

    Idle connections older than ``keepalive_expiry`` are dropped (uvicorn, which serves SGLang, closes idle
    keep-alive connections after 5 s)."""

    def __init__(self, keepalive_expiry: float = 4.0) -> None:
        self.expiry = keepalive_expiry
        self.idle: list[_Conn] = []
        self.all: set[_Conn] = set()

    async def _connect(self, request: httpx.Request, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        host = request.url.host
        port = request.url.port or 80
        try:
            tr, proto = await asyncio.wait_for(loop.create_connection(_Proto, host, port), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from None
        except OSError as e:
            raise httpx.ConnectError(f"{e.strerror or e}", request=request) from None
        conn = _Conn(tr, proto, loop)
        self.all.add(conn)
        return conn

    def _release(self, conn: _Conn, reusable: bool) -> None:
        conn.request = None
        if reusable and conn in self.all and not conn.p.eof:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            self.all.discard(conn)
            conn.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol("this transport speaks plain http only", request=request)
        to = request.extensions.get("timeout", {})
        conn = None
        now = time.monotonic()
        while self.idle:
            cand = self.idle.pop()
            if cand.reusable(now, self.expiry):
                conn = cand
                break
            self.all.discard(cand)
            cand.close()
        if conn is None:
            conn = await self._connect(request, to.get("connect"))
        conn.request = request
        try:
            # request: head + body (the body is in memory for every request this client makes)
            assert isinstance(request.stream, httpx.AsyncByteStream)  # an AsyncClient's request streams async
            body = b"".join([part async for part in request.stream])
            head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
            has_len = False
            for k, v in request.headers.raw:
                lk = k.lower()
                if lk == b"content-length":
                    has_len = True
                elif lk == b"transfer-encoding":
                    continue
                head.append(b"%s: %s\r\n" % (k, v))
            if body and not has_len:
                head.append(b"content-length: %d\r\n" % len(body))
            elif not body and not has_len and request.method in ("POST", "PUT", "PATCH"):
                head.append(b"content-length: 0\r\n")
            head.append(b"\r\n")
            await conn.write(b"".join(head) + body, to.get("write"))
            # response head
            read_to = to.get("read")
            while True:
                end = conn.buf.find(_HDR_END)
                if end >= 0:
                    break
                if len(conn.buf) > 65536:
                    raise httpx.RemoteProtocolError("response head too long", request=request)
                if not await conn.fill(read_to):
                    raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)
            raw_head = conn.buf[:end]
            conn.buf = conn.buf[end + 4 :]
            lines = raw_head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise httpx.RemoteProtocolError(f"bad status line {lines[0][:80]!r}", request=request)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else b""
            headers = []
            length = -1
            chunked = False
            keep_alive = parts[0] == b"HTTP/1.1"
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k = k.strip()
                v = v.strip()
                headers.append((k, v))
                lk = k.lower()
                if lk == b"content-length":
                    length = int(v)
                elif lk == b"transfer-encoding":
                    chunked = b"chunked" in v.lower()
                elif lk == b"connection":
                    lv = v.lower()
                    keep_alive = b"close" not in lv and (keep_alive or b"keep-alive" in lv)
        except BaseException:
            self.all.discard(conn)
            conn.close()
            raise
        if chunked:
            mode = "chunked"
        elif length >= 0:
            mode = "length"
        elif status in (204, 304) or 100 <= status < 200 or request.method == "HEAD":
            mode, length = "length", 0
        else:
            mode = "close"
        stream = _Body(conn, self, mode, length, keep_alive, read_to)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
            request=request,
        )

    async def aclose(self) -> None:
        for c in list(self.all):
            c.close()
        self.all.clear()
        self.idle.clear()
