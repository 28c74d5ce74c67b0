"""How fast can the benchmark client itself go? Its streamed-token ceiling on one CPU core, and its TTFT error.

A fast fake OpenAI /v1/completions server (raw asyncio protocol, one SSE event per HTTP chunk, SGLang-shaped
JSON chunks) runs in a separate process pinned to one CPU; this process (the client, tuner.bench.client's
run_benchmark) is pinned to another. The server decodes in "steps" like an inference engine: each step writes one
token to every running stream, then sleeps ``--step-ms`` (0 = as fast as it can, which saturates the client).

Reported per concurrency:
- ``tok/s``: the client's measured output_throughput (streamed tokens per second of wall clock);
- ``tok/cpu-s``: streamed tokens per CPU-second the client process used (its per-core capacity even when the
  server, not the client, is the limit);
- TTFT error: the client's TTFT minus the server's own (first write - request parsed), and the delivery lag
  (client first-chunk time - server first-write time, both CLOCK_REALTIME), mean and p99 in ms. Measured in a
  non-saturating phase (``--latency-step-ms``); under saturation data queues in socket buffers by definition.

Run: ``python benchmarks/client_ceiling.py`` (defaults: 64 and 256 streams, 128 in / 256 out tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ------------------------------------------------------------------------------------------------ server


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


TOKEN = _chunk(
    b'data: {"id":"cmpl-5e1f0c7a9b2d4e6f8a0b1c2d3e4f5a6b","object":"text_completion","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"text":" token","logprobs":null,"finish_reason":null,'
    b'"matched_stop":null}],"usage":null}\n\n'
)
DONE = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class _Stream:
    __slots__ = ("conn", "key", "left", "n", "recv")

    def __init__(self, conn, n, key, recv):
        self.conn, self.left, self.n, self.key, self.recv = conn, n, n, key, recv


class _Conn(asyncio.Protocol):
    def __init__(self, srv):
        self.srv = srv
        self.buf = b""
        self.paused = False
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            clen = 0
            for h in head[1:]:
                k, _, v = h.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v)
            if len(self.buf) < end + 4 + clen:
                return
            body = self.buf[end + 4 : end + 4 + clen]
            self.buf = self.buf[end + 4 + clen :]
            method, path, _ = head[0].split(" ", 2)
            self.srv.handle(self, method, path, body)

    def plain(self, status, data: bytes):
        reason = {200: "OK", 404: "Not Found"}[status]
        self.tr.write(b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n\r\n%s" % (status, reason.encode(), len(data), data))


class FastServer:
    def __init__(self, step_s: float):
        self.step_s = step_s
        self.active: list[_Stream] = []
        self.wake = asyncio.Event()
        self.stamps: dict[str, list[float]] = {}  # key -> [recv, first_write]
        self.tokens = 0

    def handle(self, conn, method, path, body):
        if path == "/v1/completions":
            recv = time.time()
            req = json.loads(body)
            key = ",".join(map(str, req["prompt"][:8])) if isinstance(req["prompt"], list) else req["prompt"][:40]
            conn.tr.write(HEAD)
            self.active.append(_Stream(conn, int(req["max_tokens"]), key, recv))
            self.wake.set()
        elif path == "/timestamps":
            conn.plain(200, json.dumps({"stamps": self.stamps, "tokens": self.tokens}).encode())
        elif path == "/reset":
            self.stamps.clear()
            self.tokens = 0
            conn.plain(200, b"ok")
        else:
            conn.plain(404, b"no such endpoint")

    async def steps(self):
        while True:
            if not self.active:
                self.wake.clear()
                await self.wake.wait()
            now = time.time()
            keep = []
            for s in self.active:
                tr = s.conn.tr
                if tr.is_closing():
                    continue
                if s.conn.paused:
                    keep.append(s)
                    continue
                tr.write(TOKEN)
                if s.left == s.n:
                    self.stamps[s.key] = [s.recv, now]
                s.left -= 1
                self.tokens += 1
                if s.left == 0:
                    usage = json.dumps(
                        {"id": "x", "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": s.n}}
                    ).encode()
                    tr.write(_chunk(b"data: " + usage + b"\n\n") + DONE)
                else:
                    keep.append(s)
            self.active = keep
            await asyncio.sleep(self.step_s)


async def _serve(port_file: str, step_ms: float):
    srv = FastServer(step_ms / 1000.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(srv), "127.0.0.1", 0, backlog=2048)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    await srv.steps()  # forever, the connections served alongside (a task only weakly held could be collected)


def start_server(cpu: int, step_ms: float) -> tuple[subprocess.Popen, str]:
    port_file = f"/tmp/client_ceiling_port_{os.getpid()}_{step_ms}"
    Path(port_file).unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", port_file, "--step-ms", str(step_ms), "--server-cpu", str(cpu)]
    )
    for _ in range(200):
        if Path(port_file).exists() and Path(port_file).read_text():
            return proc, f"http://127.0.0.1:{Path(port_file).read_text()}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


# ------------------------------------------------------------------------------------------------ client


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(url: str, concurrency: int, input_len: int, output_len: int, num_prompts: int) -> dict:
    import httpx

    from tuner.bench.client import run_benchmark
    from tuner.bench.workload import Level, Workload, build_prompts

    level = Level(concurrency, input_len, output_len, num_prompts)
    wl = Workload(levels=(level,), warmup_requests=min(concurrency, 8), request_timeout_s=60.0, seed=3)
    httpx.post(url + "/reset")
    offset = time.time() - time.perf_counter()  # perf_counter -> CLOCK_REALTIME
    c0 = _cpu_s()
    res = run_benchmark(url, "bench", wl)
    cpu = _cpu_s() - c0
    r = res.levels[0]
    stamps = httpx.get(url + "/timestamps").json()["stamps"]
    prompts = build_prompts(wl, level)
    ttft_err, lag = [], []
    for p, rec in zip(prompts, res.records[0], strict=True):
        st = stamps.get(",".join(map(str, p.ids[:8])))
        if not rec.success or st is None:
            continue
        recv, first = st
        client_first = rec.start + rec.ttft + offset
        lag.append(client_first - first)
        ttft_err.append(rec.ttft - (first - recv))
    ttft_err_ms = np.asarray(ttft_err) * 1000
    lag_ms = np.asarray(lag) * 1000
    return {
        "concurrency": concurrency,
        "completed": r.completed,
        "failed": r.failed,
        "duration_s": r.duration_s,
        "tok_s": r.output_throughput,
        "tok_per_cpu_s": r.total_output_tokens / cpu if cpu > 0 else float("nan"),
        "client_cpu_util": cpu / r.duration_s,  # includes warm-up time; ~1.0 = the client core is saturated
        "median_ttft_ms": r.median_ttft_ms,
        "median_itl_ms": r.median_itl_ms,
        "ttft_err_mean_ms": float(ttft_err_ms.mean()) if len(ttft_err_ms) else float("nan"),
        "ttft_err_p99_ms": float(np.percentile(ttft_err_ms, 99)) if len(ttft_err_ms) else float("nan"),
        "lag_mean_ms": float(lag_ms.mean()) if len(lag_ms) else float("nan"),
        "lag_p99_ms": float(np.percentile(lag_ms, 99)) if len(lag_ms) else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--waves", type=int, default=4, help="num_prompts = waves * concurrency")
    ap.add_argument("--step-ms", type=float, default=0.0, help="server decode step for the ceiling phase")
    ap.add_argument("--latency-step-ms", type=float, default=20.0, help="server step for the TTFT-error phase")
    ap.add_argument("--latency-concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    if a.serve:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {a.server_cpu})
        asyncio.run(_serve(a.serve, a.step_ms))
        return

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.client_cpu})
    out = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0], "phases": {}}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for phase, step, concs in (
        ("ceiling", a.step_ms, a.concurrency),
        ("latency", a.latency_step_ms, a.latency_concurrency),
    ):
        proc, url = start_server(a.server_cpu, step)
        try:
            rows = []
            for c in concs:
                row = measure(url, c, a.input_len, a.output_len, a.waves * max(c, 4))
                row["server_step_ms"] = step
                rows.append(row)
                print(
                    f"[{phase}] c={c:4d} step={step:g}ms  {row['tok_s']:9.0f} tok/s  "
                    f"{row['tok_per_cpu_s']:9.0f} tok/cpu-s"
                    f"  cpu={row['client_cpu_util']:.2f}  failed={row['failed']}"
                    f"  TTFT err mean {row['ttft_err_mean_ms']:.3f} p99 {row['ttft_err_p99_ms']:.3f} ms"
                    f"  lag mean {row['lag_mean_ms']:.3f} p99 {row['lag_p99_ms']:.3f} ms",
                    flush=True,
                )
            out["phases"][phase] = rows
        finally:
            proc.terminate()
            proc.wait(5)
    print(f"load average after: {os.getloadavg()}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
