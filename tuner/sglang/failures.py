"""Why a trial failed: a fixed-precedence classification from exit status, phase and SGLang's own log lines.

Precedence follows what is most specific and most actionable: a bad flag explains everything after it, a
busy GPU explains a "no memory for the KV cache" message, and so on down to a plain timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from tuner.sglang import endpoints


class Phase(StrEnum):
    LAUNCH = "launch"
    STARTUP = "startup"
    BENCHMARK = "benchmark"


@dataclass(frozen=True)
class FailureClass:
    name: str
    explanation: str
    hint: str


def _c(name: str, explanation: str, hint: str) -> FailureClass:
    return FailureClass(name, explanation, hint)


INVALID_FLAG = _c(
    "invalid_flag",
    "SGLang's argument parser refused a flag (exit 2) before touching the GPU.",
    "Fix the flag name or value in the search space; `tune start` validates against `--help` first.",
)
GPU_BUSY = _c(
    "gpu_busy",
    "The GPU was already in use by another process when the server started.",
    "Free the GPU (see the processes named in server.log) or pick other --gpus.",
)
OOM_KV = _c(
    "oom_kv",
    "The weights left no room for the KV cache under this --mem-fraction-static.",
    "Raise --mem-fraction-static (its low bound in the space is too low for this model and GPU).",
)
OOM_CUDA_GRAPH = _c(
    "oom_cuda_graph",
    "CUDA graph capture ran out of GPU memory.",
    "Lower --mem-fraction-static or --cuda-graph-max-bs(-decode), or drop --enable-torch-compile.",
)
CUDA_GRAPH_FAILED = _c(
    "cuda_graph_failed",
    "CUDA graph capture failed for a reason other than memory.",
    "Try --disable-cuda-graph / --cuda-graph-backend-decode=disabled, or a smaller --torch-compile-max-bs.",
)
OOM_RUNTIME = _c(
    "oom_runtime",
    "CUDA ran out of memory while serving (activation or decode spikes under load).",
    "Lower --mem-fraction-static, --chunked-prefill-size or --max-running-requests.",
)
SEGFAULT = _c(
    "segfault",
    "The server crashed with a segmentation fault (SIGSEGV, exit 139).",
    "Disable the feature this GPU does not support (cuda graph, flashinfer, custom all-reduce, torch compile).",
)
SCHEDULER_CRASH = _c(
    "scheduler_crash",
    "SGLang's scheduler raised an exception and the launcher tore the server down.",
    "Read the traceback in server.log; the flag combination is likely unsupported.",
)
STARTUP_TIMEOUT = _c(
    "startup_timeout",
    "The server did not become healthy within the startup timeout.",
    "Raise the startup timeout for these flags (torch compile takes minutes) or drop the slow feature.",
)
BENCH_TIMEOUT = _c(
    "bench_timeout",
    "The benchmark did not finish in its time budget.",
    "The config is far too slow for this workload; lower the load or raise the benchmark timeout.",
)
DIED = _c(
    "died_during_benchmark",
    "The server process exited while the benchmark was running.",
    "Lower --mem-fraction-static or --max-running-requests; see the end of server.log.",
)
UNHEALTHY = _c(
    "unhealthy",
    f"The server stayed up but {endpoints.HEALTH} failed during the benchmark.",
    "The server hung under load; see server.log for the detokenizer/scheduler state.",
)
REQUESTS_FAILED = _c(
    "requests_failed",
    "The server started and stayed up but answered every warm-up request with an error (in failure_detail).",
    "A KV pool or --context-length shorter than the workload's requests is the usual cause: raise "
    "--mem-fraction-static / --max-total-tokens / --context-length, or shorten the requests.",
)
CRASHED = _c(
    "crashed",
    "The server exited with an error that matches no known SGLang failure.",
    "Read the end of server.log.",
)
TOO_MANY_GPUS = _c(
    "too_many_gpus",
    "The trial's tp-size x dp-size (x pp-size) needs more GPUs than --gpus gives: it was not launched.",
    "Give more --gpus, or narrow tp-size/dp-size in the search space to what this machine has.",
)
PREDICTED_OOM_KV = _c(
    "predicted_oom_kv",
    "Predicted before launch (not launched): the weights leave no GPU memory for the KV cache under this "
    '--mem-fraction-static, which SGLang 0.5.17 refuses ("Loaded weights leave no GPU memory for the KV cache").',
    "Raise the low bound of --mem-fraction-static in the space, or use more --tp-size.",
)
PREDICTED_KV_TOO_SMALL = _c(
    "predicted_kv_too_small",
    "Predicted before launch (not launched): the KV pool or the context length is shorter than the workload's "
    "longest request, which SGLang would cut short.",
    "Raise --mem-fraction-static / --max-total-tokens / --context-length, or shorten the workload's requests.",
)
PREDICTED_CONTEXT = _c(
    "predicted_context_length",
    "Predicted before launch (not launched): --context-length is above the model's maximum, which SGLang refuses "
    "unless SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1.",
    "Keep --context-length within the model's max_position_embeddings (config.json).",
)
PREDICTED_TP_HEADS = _c(
    "predicted_tp_heads",
    "Predicted before launch (not launched): --tp-size does not divide the model's attention or KV heads.",
    "Use a --tp-size that divides the attention heads (and the KV heads, or is a multiple of them).",
)
INTERRUPTED = _c(
    "interrupted",
    "The tuner was stopped (Ctrl-C, SIGTERM or killed) during this trial.",
    "Nothing to change: the trial's parameters are re-run when the study resumes.",
)

# Not a failure: the server ran and was measured, but its KV pool cannot hold the workload (infeasible).
KV_POOL_TOO_SMALL = _c(
    "kv_pool_too_small",
    "The server started with a KV cache pool smaller than the workload's concurrent requests need "
    "(concurrency x (input + output) tokens): it queued or retracted requests, so its numbers are not comparable.",
    "Raise --mem-fraction-static or --max-total-tokens, or free the GPU (another process may hold its memory).",
)

ALL = {
    c.name: c
    for c in (
        INVALID_FLAG,
        GPU_BUSY,
        OOM_KV,
        OOM_CUDA_GRAPH,
        CUDA_GRAPH_FAILED,
        OOM_RUNTIME,
        SEGFAULT,
        SCHEDULER_CRASH,
        STARTUP_TIMEOUT,
        BENCH_TIMEOUT,
        DIED,
        UNHEALTHY,
        REQUESTS_FAILED,
        CRASHED,
        TOO_MANY_GPUS,
        PREDICTED_OOM_KV,
        PREDICTED_KV_TOO_SMALL,
        PREDICTED_CONTEXT,
        PREDICTED_TP_HEADS,
        INTERRUPTED,
    )
}

_ARGPARSE = re.compile(r"^[\w. -]+: error: (argument |unrecognized arguments|ambiguous option|the following)", re.M)
_UNBALANCED = "The memory capacity is unbalanced"
# 0.5.5: "Not enough memory. Please try to increase --mem-fraction-static"; 0.5.17+: "Loaded weights leave no GPU
# memory for the KV cache"; "Memory pool size is too small" is the tiny-pool assert.
_KV = re.compile(
    r"Not enough memory\. Please try to increase --mem-fraction-static|Loaded weights leave no GPU "
    r"memory for the KV cache|Memory pool size is too small"
)
_GRAPH = "Capture cuda graph failed"
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|Decode out of memory|CUBLAS_STATUS_ALLOC_FAILED")
_SEGV = re.compile(r"Segmentation fault|Fatal Python error: Segmentation fault|SIGSEGV")
# Not "SIGQUIT received ... one child failed": SGLang 0.5.17 logs that on every shutdown by SIGTERM too.
_SCHED = re.compile(r"Scheduler hit an exception|Received sigquit from a child process")
_HEALTH = "Health check failed"


def classify(
    *,
    phase: Phase,
    exit_code: int | None,
    log: str,
    timed_out: bool = False,
    unhealthy: bool = False,
    gpu_busy_before: bool = False,
) -> FailureClass:
    """Classify a failed trial. ``exit_code`` is None if the server was still running (timeout, unhealthy)."""
    if (exit_code == 2 and phase != Phase.BENCHMARK) or (_ARGPARSE.search(log) and exit_code is not None):
        return INVALID_FLAG
    if _UNBALANCED in log:
        return GPU_BUSY
    if _KV.search(log):
        # 0.5.17 words a busy GPU exactly like a too-low fraction: only the memory in use before launch tells.
        return GPU_BUSY if gpu_busy_before else OOM_KV
    if _GRAPH in log:
        return OOM_CUDA_GRAPH if _OOM.search(log) else CUDA_GRAPH_FAILED
    if _OOM.search(log):
        return OOM_RUNTIME
    if exit_code == 139 or _SEGV.search(log):
        return SEGFAULT
    if _SCHED.search(log):
        return SCHEDULER_CRASH
    if timed_out:
        return STARTUP_TIMEOUT if phase == Phase.STARTUP else BENCH_TIMEOUT
    if phase == Phase.BENCHMARK:
        if exit_code is not None:
            return DIED
        if unhealthy or _HEALTH in log:
            return UNHEALTHY
    return CRASHED


def argparse_error(log: str) -> str:
    """SGLang's argument parser's own line ("launch_server.py: error: argument --x: invalid int value: 'y'")."""
    found = list(_ARGPARSE.finditer(log))
    return log[found[-1].start() :].splitlines()[0].strip() if found else ""


def log_tail(path, max_bytes: int = 256_000) -> str:
    """The end of a server log: failure messages are near the end, and logs of long runs are large."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
