"""The SGLang stand-in behaves like SGLang 0.5.17 at its interface (flags, logs, HTTP, failures)."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

try:
    from standin import STANDIN, free_port
except ImportError:  # tests/ became a package
    from tests.standin import STANDIN, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stand-in signals are Linux-only")

MODEL = "Qwen/Qwen3-8B"


def launch(*flags: str, faults: str | None = None, startup_s: float = 0.3, **env: str):
    port = free_port()
    e = dict(
        os.environ,
        **{
            "SGLANG_STANDIN_SPEED": "0.02",
            "SGLANG_STANDIN_STARTUP_S": str(startup_s),
            "SGLANG_STANDIN_COMPILE_S": "0.2",
            **env,
        },
    )
    e.pop("SGLANG_STANDIN_FAULTS", None)
    if faults is not None:
        e["SGLANG_STANDIN_FAULTS"] = faults
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--model-path", MODEL, "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=e,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60) -> list[int]:
    """Poll /health until 200; return the status codes seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()}")
        try:
            code = httpx.get(base + "/health", timeout=2).status_code
            seen.append(code)
            if code == 200:
                return seen
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout} s; saw {seen}")


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def standin_children_of(ppid: int) -> list[int]:
    """Live stand-in child processes started by ``ppid`` (found by their command line, even once orphaned)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"PR_SET_PDEATHSIG" in b"".join(argv) and str(ppid).encode() in argv and alive(int(d.name)):
            found.append(int(d.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def server():
    proc, base = launch("--enable-metrics", startup_s=0.5)
    try:
        seen = wait_ready(base, proc)
        yield proc, base, seen
    finally:
        stop(proc)


def test_bad_flag_exits_2_with_argparse_line():
    proc = subprocess.run(
        [sys.executable, str(STANDIN), "--model-path", MODEL, "--schedule-policy", "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "sglang serve: error: argument --schedule-policy: invalid choice: 'bogus' "
        "(choose from 'lpm', 'random', 'fcfs', 'dfs-weight', 'lof', 'priority', 'routing-key')"
    )
    proc = subprocess.run(
        [sys.executable, str(STANDIN), "--model-path", MODEL, "--cuda-graph-max-bs-d", "8", "--cuda-graph", "8"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "ambiguous option: --cuda-graph could match" in proc.stderr


def test_help_lists_flags_like_argparse():
    out = subprocess.run([sys.executable, str(STANDIN), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "  --schedule-policy {lpm,random,fcfs,dfs-weight,lof,priority,routing-key}" in out
    assert "  --port PORT" in out
    assert "  --tp-size TP_SIZE, --tensor-parallel-size TP_SIZE" in out
    assert "Deprecated" in out.split("  --disable-cuda-graph", 1)[1].split("\n  --", 1)[0]


def test_health_503_then_200_and_startup_log(server):
    _proc, base, seen = server
    assert seen[0] == 503 and seen[-1] == 200
    assert httpx.get(base + "/health_generate").status_code == 200


def test_streamed_completion_ignore_eos_is_exact(server):
    _, base, _ = server
    body = {
        "model": MODEL,
        "prompt": list(range(100)),
        "max_tokens": 37,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    texts, usage, done = [], None, False
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                texts.append(chunk["choices"][0]["text"])
            if chunk.get("usage"):
                usage = chunk["usage"]
    assert done and len(texts) == 37 and all(texts)
    assert usage == {**usage, "prompt_tokens": 100, "completion_tokens": 37, "total_tokens": 137}


def test_non_stream_chat_and_generate(server):
    _, base, _ = server
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 9, "ignore_eos": True},
        )
        assert r.json()["usage"]["completion_tokens"] == 9
        r = c.post(
            "/generate", json={"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}}
        )
        assert r.json()["meta_info"]["completion_tokens"] == 4
        # without ignore_eos a request may stop early, never late, and the same request stops at the same point
        n = [
            c.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 50}).json()["usage"]["completion_tokens"]
            for _ in range(2)
        ]
        assert n[0] == n[1] <= 50
        assert c.get("/nope").status_code == 404
        # SGLang's request models type model as a string: null is refused (400, its validation handler)
        r = c.post("/v1/completions", json={"model": None, "prompt": "a b c", "max_tokens": 1})
        assert r.status_code == 400 and "Input should be a valid string" in r.json()["message"]
        assert c.post("/flush_cache").status_code == 200
        assert "sglang:num_running_reqs" in c.get("/metrics").text


def test_server_info_has_resolved_args(server):
    _, base, _ = server
    info = httpx.get(base + "/get_server_info").json()
    assert info["version"] == "0.5.17" and info["standin"] is True
    assert info["mem_fraction_static"] == 0.85 and info["schedule_policy"] == "fcfs"
    assert info["max_total_num_tokens"] > 100_000
    assert httpx.get(base + "/v1/models").json()["data"][0]["id"] == MODEL


def test_sigterm_exits_0_and_child_is_gone():
    proc, base = launch()
    wait_ready(base, proc)
    kids = child_pids(proc.pid)
    assert len(kids) == 1 and alive(kids[0])
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    deadline = time.monotonic() + 30
    while alive(kids[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(kids[0])


def test_segfault_fault_is_a_real_segfault():
    proc, _ = launch("--enable-torch-compile", faults="segfault:enable-torch-compile==true")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGSEGV, out
    assert "Capture cuda graph begin" in out


def test_low_mem_fraction_is_oom_kv_startup_and_sigkill():
    proc, _ = launch("--mem-fraction-static", "0.1")  # default rules: oom_kv_startup below 0.2
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out
    assert "ValueError: Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static=0.1." in out
    assert "Received sigquit from a child process. It usually means the child failed." in out
    assert "The server is fired up" not in out
    # like SGLang's kill_process_tree, the scheduler-like child goes down with the launcher
    deadline = time.monotonic() + 30
    while standin_children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not standin_children_of(proc.pid)


def test_hang_keeps_health_503():
    proc, base = launch(faults="hang:")
    before = []
    try:
        for line in proc.stdout:  # up to the point where it hangs, however long a loaded machine takes to get there
            before.append(line)
            if "Capture cuda graph begin" in line:
                break
        time.sleep(0.8)  # longer than the rest of a healthy startup (0.3 s in all)
        assert proc.poll() is None, "".join(before)
        assert httpx.get(base + "/health", timeout=30).status_code == 503
    finally:
        out = "".join(before) + stop(proc)
    # It hung in startup (never ready) and still shut down cleanly on SIGTERM, as SGLang does.
    assert "fired up and ready to roll" not in out
    assert "Received SIGTERM. Shutting down." in out
    assert proc.returncode == 0


def test_oom_under_load_kills_mid_stream():
    proc, base = launch("--mem-fraction-static", "0.96")  # default rules: oom_under_load at >= 0.95
    wait_ready(base, proc)

    client = httpx.Client(base_url=base, timeout=10, limits=httpx.Limits(max_connections=32))

    def one(i):
        body = {"prompt": [i] * 10, "max_tokens": 5000, "ignore_eos": True, "stream": True}
        try:
            with client.stream("POST", "/v1/completions", json=body) as r:
                return sum(1 for line in r.iter_lines() if line == "data: [DONE]")
        except httpx.TransportError:
            return -1

    with client, concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "torch.OutOfMemoryError: CUDA out of memory." in out
    assert -1 in results


def _load_module():
    spec = importlib.util.spec_from_file_location("sglang_standin", STANDIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_performance_model_has_a_better_region():
    mod = _load_module()

    def step(*flags, outs=(128,)):
        args = mod.build_parser().parse_args(["--model-path", MODEL, *flags])
        srv = mod.Server(args, mod.resolve(args), set())
        batch = [mod.Request.__new__(mod.Request) for _ in range(16)]
        for i, r in enumerate(batch):
            r.max_new = outs[i % len(outs)]
        return srv.step_time(batch)

    default = step()
    best = step(
        "--enable-torch-compile",
        "--torch-compile-max-bs",
        "16",
        "--attention-backend",
        "triton",
        "--triton-attention-num-kv-splits",
        "14",
        "--mem-fraction-static",
        "0.93",
        "--schedule-policy",
        "lof",
        outs=(64, 128, 256),
    )
    assert best < default / 1.15
    assert 0.004 < step("--disable-cuda-graph") / 1.6 < default
    # no-ops and optimum
    assert step("--num-continuous-decode-steps", "4") == default
    assert step("--triton-attention-num-kv-splits", "16") == default
    tri = {s: step("--attention-backend", "triton", "--triton-attention-num-kv-splits", str(s)) for s in (4, 8, 14, 32)}
    assert min(tri, key=tri.get) == 14
    assert step("--enable-torch-compile", "--torch-compile-max-bs", "8") == default  # batch 16 > compiled bs
