"""The classifier on SGLang's real failure texts (both 0.5.5 and 0.5.17 wordings), in precedence order."""

import pytest

from tuner.sglang import failures
from tuner.sglang.failures import Phase, classify

ARGPARSE = (
    "sglang serve: error: argument --schedule-policy: invalid choice: 'bogus' (choose from 'lpm', "
    "'random', 'fcfs', 'dfs-weight', 'lof', 'priority', 'routing-key')"
)
KV_0517 = (
    "ValueError: Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static=0.05. "
    "Raise --mem-fraction-static above 0.111 (minimum viable = 1 - available/pre = 0.1103).\n"
    "Received sigquit from a child process. It usually means the child failed."
)
KV_055 = (
    "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
    "Current value: self.server_args.mem_fraction_static=0.05"
)
GRAPH_OOM = (
    "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 448.00 MiB. GPU 7 has a "
    "total capacity of 95.00 GiB\nPossible solutions:\n1. set --mem-fraction-static to a smaller value"
)
GRAPH_OTHER = "Exception: Capture cuda graph failed: ninja: build stopped: subcommand failed.\nPossible solutions:"
RUNTIME_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 18.00 MiB. GPU 0 has a total capacity "
    "of 139.80 GiB of which 6.31 MiB is free\nSIGQUIT received ... It usually means one child failed."
)
UNBALANCED = "ValueError: The memory capacity is unbalanced. Some GPUs may be occupied by other processes."
SCHED = "Scheduler hit an exception: Traceback (most recent call last):\nRuntimeError: boom"


@pytest.mark.parametrize(
    "phase, code, log, kwargs, expected",
    [
        (Phase.STARTUP, 2, ARGPARSE, {}, "invalid_flag"),
        (Phase.STARTUP, 137, KV_0517, {}, "oom_kv"),
        (Phase.STARTUP, 137, KV_0517, {"gpu_busy_before": True}, "gpu_busy"),
        (Phase.STARTUP, 1, KV_055, {}, "oom_kv"),
        (Phase.STARTUP, 1, UNBALANCED + "\n" + KV_055, {}, "gpu_busy"),
        (Phase.STARTUP, 1, GRAPH_OOM, {}, "oom_cuda_graph"),
        (Phase.STARTUP, 1, GRAPH_OTHER, {}, "cuda_graph_failed"),
        (Phase.BENCHMARK, 137, RUNTIME_OOM, {}, "oom_runtime"),
        (Phase.BENCHMARK, 1, "Decode out of memory. Try to lower your batch size.", {}, "oom_runtime"),
        (Phase.STARTUP, 139, "", {}, "segfault"),
        (Phase.BENCHMARK, 139, "Fatal Python error: Segmentation fault", {}, "segfault"),
        (Phase.STARTUP, 137, SCHED, {}, "scheduler_crash"),
        (Phase.STARTUP, None, "Capture cuda graph begin.", {"timed_out": True}, "startup_timeout"),
        (Phase.BENCHMARK, None, "", {"timed_out": True}, "bench_timeout"),
        (Phase.BENCHMARK, 1, "Decode batch, #running-req: 9", {}, "died_during_benchmark"),
        (Phase.BENCHMARK, None, "", {"unhealthy": True}, "unhealthy"),
        (Phase.STARTUP, 1, "ImportError: libnuma.so.1: cannot open shared object file", {}, "crashed"),
        # Exit status 2 at startup is argparse's, whatever the log says; under load it is only a death.
        (Phase.STARTUP, 2, "", {}, "invalid_flag"),
        (Phase.BENCHMARK, 2, "", {}, "died_during_benchmark"),
        # An argparse line in the log of a server that is still running (a timeout) is not a refused flag.
        (Phase.STARTUP, None, ARGPARSE, {"timed_out": True}, "startup_timeout"),
        (Phase.BENCHMARK, None, "Health check failed. Server couldn't get a response", {}, "unhealthy"),
        (Phase.BENCHMARK, None, "Decode batch, #running-req: 9", {}, "crashed"),
    ],
)
def test_classes(phase, code, log, kwargs, expected):
    assert classify(phase=phase, exit_code=code, log=log, **kwargs).name == expected


def test_every_class_explains_and_hints():
    for c in failures.ALL.values():
        assert c.explanation and c.hint


def test_log_tail_reads_the_end_of_large_logs(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("x" * 1_000_000 + "\n" + KV_0517)
    assert failures.log_tail(log).endswith("the child failed.")
    assert failures.log_tail(tmp_path / "missing.log") == ""
    small = tmp_path / "small.log"
    small.write_bytes(b"abc\xffdef")  # a torn UTF-8 sequence (the log is cut at a byte offset) is replaced
    assert failures.log_tail(small) == "abc\ufffddef"
    assert failures.log_tail(small, max_bytes=3) == "def"


def test_real_sglang_0_5_17_log_raises_no_false_alarm():
    """A healthy server.log from SGLang 0.5.17 on an H200 (tests/data): its import warnings, CUDA-graph capture
    lines and shutdown must not read as an OOM, a segfault or a graph failure when the server dies later."""
    from pathlib import Path

    log = (Path(__file__).parent / "data" / "sglang-0.5.17-h200-healthy.log").read_text()
    assert "The server is fired up and ready to roll!" in log
    assert classify(phase=Phase.BENCHMARK, exit_code=137, log=log).name == "died_during_benchmark"
    assert classify(phase=Phase.STARTUP, exit_code=1, log=log).name == "crashed"
    assert classify(phase=Phase.BENCHMARK, exit_code=137, log=log + "\n" + RUNTIME_OOM).name == "oom_runtime"
    assert classify(phase=Phase.STARTUP, exit_code=137, log=log + "\n" + KV_0517).name == "oom_kv"


def test_argparse_error_is_the_parsers_last_line():
    log = (
        "usage: launch_server.py [-h] ...\nlaunch_server.py: error: argument --tp-size: invalid int value: 'x'\n"
        "later noise\n  launch_server.py: error: argument --port: expected one argument  \nmore\n"
    )
    assert failures.argparse_error(log) == "launch_server.py: error: argument --port: expected one argument"
    assert failures.argparse_error(ARGPARSE) == ARGPARSE
    assert failures.argparse_error("Traceback: ValueError: boom\n") == ""
