#!/usr/bin/env python3
"""SGLang stand-in server: a TEST STAND-IN, NOT SGLang.

This single file, standard library only (Python >= 3.10), imitates the *interface* of
``python -m sglang.launch_server`` from SGLang 0.5.17 so that CPU-only tests can drive the
tuner end to end: the same flags (argparse, ``prog="sglang serve"``, exit code 2 on bad flags),
the same startup log lines, the same HTTP endpoints, and the same failure messages, exit codes
and signals.  It runs no model: it simulates a continuous-batching scheduler with a
deterministic performance model and emits one filler word per token.

Environment variables
---------------------
SGLANG_STANDIN_IMPORT_DELAY  seconds slept before argument parsing (SGLang's slow imports); 0
SGLANG_STANDIN_STARTUP_S     startup time in seconds without torch.compile; 1.0
SGLANG_STANDIN_COMPILE_S     extra startup with --enable-torch-compile, scaled by
                             max(0.5, torch_compile_max_bs / 32); 3.0
SGLANG_STANDIN_SPEED         multiplies every serving time (decode steps, prefill); 1.0
SGLANG_STANDIN_GPU_GB        simulated GPU memory in GB; 80
SGLANG_STANDIN_CHILD         "0" disables the scheduler-like child process; 1
SGLANG_STANDIN_FAULTS        fault rules (below).  Unset: the defaults
                             ``oom_kv_startup:mem-fraction-static<0.2;oom_under_load:mem-fraction-static>=0.95``.
                             Empty string: no faults.

Startup and memory
------------------
Weights take 16 GB (divided by --tp-size).  --mem-fraction-static defaults to 0.85.  The KV pool
gets ``gpu_gb * mem_fraction_static - weights`` GB at 144 KiB per token (Qwen3-8B, bf16; half
with an fp8 --kv-cache-dtype), capped by --max-total-tokens.  max_running_requests defaults to
``min(tokens // 2, clamp(tokens / 40960 * 512, 2048, 4096))`` like SGLang.  The HTTP server
listens at once; /health and /health_generate answer 503 until warmup is done, then 200.

Performance model (deterministic)
---------------------------------
One asyncio task runs the scheduler.  Each decode step gives every running request one token
and takes ``SPEED * (a + b * B)`` seconds for a running batch of B requests, where, starting
from a = 4.9 ms, b = 0.08 ms (about 5 ms at B=1 and 10 ms at B=64 with default flags):

* CUDA graph off (--disable-cuda-graph, --cuda-graph-backend-decode disabled) or
  B > cuda graph max bs (default 256 on a >= 60 GB GPU):        a *= 1.6
* --enable-torch-compile, while the graph is used and B <= --torch-compile-max-bs:
                                                                a *= 0.72, b *= 0.95
* --disable-overlap-schedule:                                   a *= 1.08
* fp8 --kv-cache-dtype:                                         b *= 0.88
* --tp-size T:                                                  a *= 1 + 0.15 (T-1), b /= T
* attention backend (whole step): auto resolves to fa3 (1.00); flashinfer 1.01;
  triton 0.96 + 0.03 * log2(splits / 14)^2 (optimum at --triton-attention-num-kv-splits
  12..16, default 8 gives 0.98); flex_attention 1.30; torch_native 1.80; others 1.05.
  --triton-attention-num-kv-splits only matters with triton.
* --mem-fraction-static (whole step): 1 + 0.5 * max(0, 0.92 - mfs)  (KV headroom; default
  0.85 costs 3.5 %).  Requests are also admitted only while the sum of (input + output)
  tokens of running requests fits the KV pool, and up to max_running_requests.
* --schedule-policy (whole step): lof 0.985 when the running requests have different
  max_new_tokens (equal to fcfs otherwise); random 1.01; dfs-weight 1.005; others 1.00.
  lpm and dfs-weight fall back to fcfs with --disable-radix-cache.  lof also orders the waiting
  queue by longest output first.  ``priority`` fails at startup like SGLang
  (ValueError: Unknown schedule_policy).
* --num-continuous-decode-steps has no effect (like SGLang).
* Prefill: new requests are prefilled together (up to --max-prefill-tokens, in chunks of
  --chunked-prefill-size) in a step of ``SPEED * (3 ms + 0.03 ms * new_tokens)`` that stalls
  decoding; with --enable-mixed-chunk the running requests also decode in that step.  The
  prefill yields the first token, so TTFT = queue wait + prefill.
* Radix cache (off with --disable-radix-cache): a prompt's leading tokens that an earlier finished prefill
  already had, in whole blocks of 16 tokens (ids, or words of text), are not prefilled again (at least one
  token always is); /flush_cache empties it; nothing is evicted otherwise.  --schedule-policy lpm admits the
  waiting requests with the longest cached prefix first.  The prefill log line reports #cached-token.

At concurrency 16 the default config runs about 6.4 ms per step; the best region
(--enable-torch-compile with --torch-compile-max-bs >= the concurrency, --attention-backend
triton with 12..16 KV splits, --mem-fraction-static 0.92..0.94, lof) runs about 4.5 ms: about
30 % less time per token.  torch.compile alone gives about 25 %.

Without ``ignore_eos`` a request may stop early at a deterministic pseudo-random point (like a
model emitting EOS); with ``ignore_eos`` it returns exactly max_tokens tokens.

Fault rules (SGLANG_STANDIN_FAULTS)
-----------------------------------
``fault:cond[,cond...][;fault:cond...]``; a cond is ``flag OP value`` with OP one of
``== != < <= > >=`` and the flag's CLI name without dashes (``mem-fraction-static>=0.95``,
``enable-torch-compile==true``).  Conditions are compared with the *resolved* value.  A fault
with no condition (``hang:``) always fires.  Faults:

oom_kv_startup       0.5.17 KV-cache ValueError after "Load weight end", sigquit line, SIGKILL self
oom_kv_startup_v055  0.5.5 "RuntimeError: Not enough memory. Please try to increase
                     --mem-fraction-static ..." traceback, exit 1
cuda_graph_oom       "Exception: Capture cuda graph failed: CUDA out of memory ..." + hint, exit 1
segfault             a real SIGSEGV during startup (exit -11 / 139)
hang                 startup stalls forever after "Capture cuda graph begin" (/health stays 503)
gpu_busy             "ValueError: The memory capacity is unbalanced ..." exit 1
scheduler_crash      serves; first decode batch: "Scheduler hit an exception", sigquit line, SIGKILL
oom_under_load       serves; once the running batch exceeds 8: torch.OutOfMemoryError, SIGKILL
die_under_load       after 5 completed requests: os._exit(1) mid-stream, no log
unhealthy            after 5 completed requests: /health 503, streams stall, process stays alive
segfault_under_load  a real SIGSEGV once the running batch exceeds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

VERSION = "0.5.17"
FAULT_NAMES = (
    "oom_kv_startup",
    "oom_kv_startup_v055",
    "cuda_graph_oom",
    "segfault",
    "hang",
    "gpu_busy",
    "scheduler_crash",
    "oom_under_load",
    "die_under_load",
    "unhealthy",
    "segfault_under_load",
)
DEFAULT_FAULTS = "oom_kv_startup:mem-fraction-static<0.2;oom_under_load:mem-fraction-static>=0.95"

CONTEXT_LEN = 40960
WEIGHTS_GB = 16.0
KV_BYTES_PER_TOKEN = 36 * 8 * 128 * 2 * 2  # layers * kv heads * head dim * bf16 * (K and V)
ARCH = "Qwen3ForCausalLM"
EOS_TOKEN_ID = 151645

VOCAB = [
    " the",
    " of",
    " and",
    " to",
    " a",
    " in",
    " is",
    " that",
    " for",
    " it",
    " as",
    " was",
    " with",
    " be",
    " by",
    " on",
    " not",
    " he",
    " this",
    " are",
    " or",
    " his",
    " from",
    " at",
    " which",
    " but",
    " have",
    " an",
    " had",
    " they",
    " you",
    " were",
    " their",
    " one",
    " all",
    " we",
    " can",
    " her",
    " has",
    " there",
    " been",
    " if",
    " more",
    " when",
    " will",
    " would",
    " who",
    " so",
    " no",
    " time",
    " model",
    " server",
    " token",
    " batch",
    " cache",
    " graph",
    " kernel",
    " memory",
    " tensor",
    " queue",
    " prefix",
    " decode",
    " prefill",
    " stream",
]
VOCAB_JSON = [json.dumps(w)[1:-1] for w in VOCAB]  # JSON-escaped body without quotes

ATTENTION_BACKENDS = [
    "triton",
    "torch_native",
    "flex_attention",
    "nsa",
    "cutlass_mla",
    "fa3",
    "fa4",
    "flashinfer",
    "flashmla",
    "trtllm_mla",
    "trtllm_mha",
    "dual_chunk_flash_attn",
    "aiter",
    "wave",
    "intel_amx",
    "ascend",
    "intel_xpu",
]
QUANTIZATIONS = [
    "awq",
    "fp8",
    "gptq",
    "marlin",
    "gptq_marlin",
    "awq_marlin",
    "bitsandbytes",
    "gguf",
    "modelopt",
    "modelopt_fp8",
    "modelopt_fp4",
    "petit_nvfp4",
    "w8a8_int8",
    "w8a8_fp8",
    "moe_wna16",
    "qoq",
    "w4afp8",
    "mxfp4",
    "auto-round",
    "compressed-tensors",
]
KV_CACHE_DTYPES = ["auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16", "fp4_e2m1"]
SCHEDULE_POLICIES = ["lpm", "random", "fcfs", "dfs-weight", "lof", "priority", "routing-key"]


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        return default


def log(msg: str) -> None:
    try:
        sys.stdout.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")
        sys.stdout.flush()
    except OSError:  # like SGLang's logging module: a line that cannot be written (a full disk) is dropped
        pass


# --------------------------------------------------------------------------------------------
# CLI


class SGLangArgumentParser(argparse.ArgumentParser):
    def _check_value(self, action, value):  # keep the Python 3.11 wording on every Python
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {choices})")


def build_parser() -> argparse.ArgumentParser:
    p = SGLangArgumentParser(prog="sglang serve")
    a = p.add_argument
    a(
        "--model-path",
        "--model",
        type=str,
        required=True,
        help="The path of the model weights. This can be a local folder or a Hugging Face repo ID.",
    )
    a(
        "--served-model-name",
        type=str,
        default=None,
        help="Override the model name returned by the v1/models endpoint in OpenAI API server.",
    )
    a("--host", type=str, default="127.0.0.1", help="The host of the HTTP server.")
    a("--port", type=int, default=30000, help="The port of the HTTP server.")
    a(
        "--trust-remote-code",
        action="store_true",
        help="Whether or not to allow for custom models defined on the Hub in their own modeling files.",
    )
    a("--load-format", type=str, default="auto", help="The format of the model weights to load.")
    a("--quantization", type=str, default=None, choices=QUANTIZATIONS, help="The quantization method.")
    a(
        "--kv-cache-dtype",
        type=str,
        default="auto",
        choices=KV_CACHE_DTYPES,
        help='Data type for kv cache storage. "auto" will use model data type.',
    )
    a(
        "--mem-fraction-static",
        type=float,
        default=None,
        help="The fraction of the memory used for static allocation (model weights and KV cache memory "
        "pool). Use a smaller value if you see out-of-memory errors.",
    )
    a("--max-running-requests", type=int, default=None, help="The maximum number of running requests.")
    a(
        "--max-total-tokens",
        type=int,
        default=None,
        help="The maximum number of tokens in the memory pool. If not specified, it will be automatically "
        "calculated based on the memory usage fraction. This option is typically used for development "
        "and debugging purposes.",
    )
    a(
        "--chunked-prefill-size",
        type=int,
        default=None,
        help="The maximum number of tokens in a chunk for the chunked prefill. Setting this to -1 means "
        "disabling chunked prefill.",
    )
    # Parsed like SGLang's (the H200 long-context space tunes it); the stand-in's KV pool is not paged.
    a("--page-size", type=int, default=None, help="The number of tokens in a page.")
    # Parsed like SGLang's (the imported LLMSYS-HPOBench sweep's space tunes them); the stand-in keeps its own
    # CONTEXT_LEN and has no peers to check.
    a(
        "--context-length",
        type=int,
        default=None,
        help="The model's maximum context length. Defaults to None (will use the value from the model's "
        "config.json instead).",
    )
    a(
        "--enable-p2p-check",
        action="store_true",
        help="Enable P2P check for GPU access, otherwise the p2p access is allowed by default.",
    )
    a(
        "--max-prefill-tokens",
        type=int,
        default=16384,
        help="The maximum number of tokens in a prefill batch. The real bound will be the maximum of this "
        "value and the model's maximum context length.",
    )
    a(
        "--schedule-policy",
        type=str,
        default="fcfs",
        choices=SCHEDULE_POLICIES,
        help="The scheduling policy of the requests.",
    )
    a(
        "--schedule-conservativeness",
        type=float,
        default=1.0,
        help="How conservative the schedule policy is. A larger value means more conservative scheduling.",
    )
    a("--tp-size", "--tensor-parallel-size", type=int, default=1, help="The tensor parallelism size.")
    a("--dp-size", "--data-parallel-size", type=int, default=1, help="The data parallelism size.")
    a("--log-level", type=str, default="info", help="The logging level of all loggers.")
    a("--enable-metrics", action="store_true", help="Enable log prometheus metrics.")
    a(
        "--attention-backend",
        type=str,
        default=None,
        choices=ATTENTION_BACKENDS,
        help="Choose the kernels for attention layers.",
    )
    a(
        "--decode-attention-backend",
        type=str,
        default=None,
        choices=ATTENTION_BACKENDS,
        help="Choose the kernels for decode attention layers (have priority over --attention-backend).",
    )
    a(
        "--prefill-attention-backend",
        type=str,
        default=None,
        choices=ATTENTION_BACKENDS,
        help="Choose the kernels for prefill attention layers (have priority over --attention-backend).",
    )
    a("--sampling-backend", type=str, default=None, help="Choose the kernels for sampling layers.")
    a(
        "--grammar-backend",
        type=str,
        default=None,
        choices=["xgrammar", "outlines", "llguidance", "none"],
        help="Choose the backend for grammar-guided decoding.",
    )
    a("--disable-radix-cache", action="store_true", help="Disable RadixAttention for prefix caching.")
    a(
        "--cuda-graph-max-bs",
        type=int,
        default=None,
        help="Deprecated: use --cuda-graph-max-bs-decode. Set the maximum batch size for cuda graph.",
    )
    a(
        "--cuda-graph-max-bs-decode",
        type=int,
        default=None,
        help="Set the maximum batch size for the decode cuda graph. It will extend the cuda graph capture "
        "batch size to this value.",
    )
    a(
        "--cuda-graph-max-bs-prefill",
        type=int,
        default=None,
        help="Set the maximum batch size for the prefill cuda graph.",
    )
    a(
        "--cuda-graph-backend-decode",
        type=str,
        default=None,
        help="The cuda graph backend for decode. Use 'disabled' to disable the decode cuda graph.",
    )
    a(
        "--cuda-graph-backend-prefill",
        type=str,
        default=None,
        help="The cuda graph backend for prefill. Use 'disabled' to disable the prefill cuda graph.",
    )
    a(
        "--disable-cuda-graph",
        action="store_true",
        help="Deprecated: use --cuda-graph-backend-decode=disabled and --cuda-graph-backend-prefill=disabled. "
        "Disable cuda graph.",
    )
    a("--disable-prefill-cuda-graph", action="store_true", help="Disable the prefill cuda graph.")
    a(
        "--disable-flashinfer",
        action="store_true",
        help="Deprecated: use --attention-backend and --sampling-backend. Disable flashinfer.",
    )
    a(
        "--disable-custom-all-reduce",
        action="store_true",
        help="Disable the custom all-reduce kernel and fall back to NCCL.",
    )
    a(
        "--disable-overlap-schedule",
        action="store_true",
        help="Disable the overlap scheduler, which overlaps the CPU scheduler with GPU model worker.",
    )
    a(
        "--enable-mixed-chunk",
        action="store_true",
        help="Enabling mixing prefill and decode in a batch when using chunked prefill.",
    )
    a(
        "--enable-torch-compile",
        action="store_true",
        help="Optimize the model with torch.compile. Experimental feature.",
    )
    a("--torch-compile-max-bs", type=int, default=32, help="Set the maximum batch size when using torch compile.")
    a(
        "--triton-attention-num-kv-splits",
        type=int,
        default=8,
        help="The number of KV splits in flash decoding Triton kernel. Larger value is better in longer "
        "context scenarios. The default value is 8.",
    )
    a(
        "--num-continuous-decode-steps",
        type=int,
        default=1,
        help="Run multiple continuous decoding steps to reduce scheduling overhead. This can potentially "
        "increase throughput but may also increase time-to-first-token latency. The default value is 1, "
        "meaning only run one decoding step at a time.",
    )
    a("--skip-server-warmup", action="store_true", help="If set, skip warmup.")
    return p


# --------------------------------------------------------------------------------------------
# Faults

OPS = ("<=", ">=", "==", "!=", "<", ">")


class FaultRuleError(ValueError):
    pass


def parse_faults(spec: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    rules = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, conds = part.partition(":")
        name = name.strip()
        if name not in FAULT_NAMES:
            raise FaultRuleError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
        parsed = []
        for cond in conds.split(","):
            cond = cond.strip()
            if not cond:
                continue
            for op in OPS:
                if op in cond:
                    flag, _, value = cond.partition(op)
                    parsed.append((flag.strip().lstrip("-").replace("-", "_"), op, value.strip()))
                    break
            else:
                raise FaultRuleError(f"bad condition {cond!r} in fault {name!r}")
        rules.append((name, parsed))
    return rules


def _coerce(raw: str, like):
    low = raw.lower()
    if isinstance(like, bool) or low in ("true", "false"):
        return low in ("true", "1", "yes")
    if isinstance(like, (int, float)):
        return float(raw)
    if low in ("none", "null"):
        return None
    return raw


def cond_holds(args: dict, flag: str, op: str, raw: str) -> bool:
    if flag not in args:
        raise FaultRuleError(f"unknown flag {flag!r} in a fault condition")
    have = args[flag]
    try:
        want = _coerce(raw, have)
    except ValueError:
        return False
    if isinstance(have, bool) or isinstance(want, bool):
        have = bool(have)
        want = bool(want)
    if op == "==":
        return have == want
    if op == "!=":
        return have != want
    if have is None or want is None:
        return False
    try:
        return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op]
    except TypeError:
        return False


def active_faults(args: dict) -> set[str]:
    spec = os.environ.get("SGLANG_STANDIN_FAULTS")
    if spec is None:
        spec = DEFAULT_FAULTS
    fired = set()
    for name, conds in parse_faults(spec):
        if all(cond_holds(args, *c) for c in conds):
            fired.add(name)
    return fired


# --------------------------------------------------------------------------------------------
# Process helpers

CHILD_CODE = r"""
import os, signal, sys, time
ppid = int(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.getppid() == ppid:
    time.sleep(0.2)
"""

CHILD: subprocess.Popen | None = None


def start_child() -> None:
    global CHILD
    if os.environ.get("SGLANG_STANDIN_CHILD", "1").strip() == "0":
        return
    CHILD = subprocess.Popen([sys.executable, "-c", CHILD_CODE, str(os.getpid())], stdin=subprocess.DEVNULL)


def kill_child() -> None:
    if CHILD is not None and CHILD.poll() is None:
        try:
            CHILD.kill()
            CHILD.wait(timeout=1)
        except Exception:
            pass


def kill_self() -> None:
    """Like SGLang's kill_process_tree after a child's sigquit: children first, then SIGKILL."""
    sys.stdout.flush()
    sys.stderr.flush()
    kill_child()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def segfault() -> None:
    import ctypes
    import faulthandler

    sys.stdout.flush()
    faulthandler.enable()
    ctypes.string_at(0)
    time.sleep(10)


def traceback_text(frames: list[tuple[str, int, str, str]], last: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        lines.append(f'  File "/usr/local/lib/python3.12/dist-packages/sglang/{path}", line {line}, in {func}')
        lines.append(f"    {code}")
    lines.append(last)
    return "\n".join(lines)


SCHED_FRAMES = [
    (
        "srt/managers/scheduler.py",
        3050,
        "run_scheduler_process",
        "scheduler = Scheduler(server_args, port_args, gpu_id, tp_rank, moe_ep_rank, pp_rank, dp_rank)",
    ),
    ("srt/managers/scheduler.py", 318, "__init__", "self.init_model_worker()"),
    ("srt/managers/tp_worker.py", 247, "__init__", "self.model_runner = ModelRunner("),
    ("srt/model_executor/model_runner.py", 362, "__init__", "self.initialize(min_per_gpu_memory)"),
]


def scheduler_exception(frames, last: str) -> None:
    log("Scheduler hit an exception: " + traceback_text(SCHED_FRAMES + frames, last))
    log("Received sigquit from a child process. It usually means the child failed.")


def exit_with_traceback(frames, last: str, code: int = 1) -> None:
    text = traceback_text(frames, last)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    kill_child()
    os._exit(code)


# --------------------------------------------------------------------------------------------
# Simulation


class Request:
    __slots__ = (
        "aborted",
        "arrival",
        "blocks",
        "cached",
        "created",
        "done",
        "finish_reason",
        "first_token_time",
        "generated",
        "input_len",
        "kind",
        "max_new",
        "model",
        "prefilled",
        "prefix",
        "rid",
        "seed",
        "stop_at",
        "stream",
        "suffix",
        "text_parts",
        "writer",
    )

    def __init__(self, rid, input_len, max_new, stop_at, stream, kind, writer, model, seed):
        self.rid = rid
        self.input_len = input_len
        self.max_new = max_new
        self.stop_at = stop_at
        self.generated = 0
        self.stream = stream
        self.kind = kind  # completions | chat | generate
        self.writer = writer
        self.done = asyncio.get_running_loop().create_future()
        self.prefix = b""
        self.suffix = b""
        self.text_parts: list[str] = []
        self.prefilled = 0
        self.created = int(time.time())
        self.model = model
        self.arrival = time.monotonic()
        self.first_token_time = None
        self.finish_reason = None
        self.aborted = False
        self.seed = seed
        self.blocks: list[int] = []  # chained hashes of the prompt's whole 16-token blocks
        self.cached = 0

    @property
    def reserve(self) -> int:
        return self.input_len + self.max_new


class Server:
    def __init__(self, args: argparse.Namespace, resolved: dict, faults: set[str]):
        self.args = args
        self.r = resolved
        self.faults = faults
        self.ready = False
        self.unhealthy = False
        self.speed = env_float("SGLANG_STANDIN_SPEED", 1.0)
        self.waiting: list[Request] = []
        self.prefilling: list[Request] = []
        self.running: list[Request] = []
        self.wake = asyncio.Event()
        self.next_rid = 0
        self.completed = 0
        self.decoded_steps = 0
        self.decode_batches = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.requests_total = 0
        self.last_gen_throughput = 0.0
        self._log_t = time.monotonic()
        self._log_tokens = 0
        self.served_name = args.served_model_name or args.model_path
        self.pool = resolved["max_total_num_tokens"]
        self.max_running = resolved["max_running_requests"]
        self.graph_on = not (args.disable_cuda_graph or (args.cuda_graph_backend_decode or "").lower() == "disabled")
        self.graph_bs = resolved["cuda_graph_max_bs_decode"]
        self.radix: set[int] | None = None if args.disable_radix_cache else set()
        self.policy = args.schedule_policy
        if args.disable_radix_cache and self.policy in ("lpm", "dfs-weight"):
            self.policy = "fcfs"
        self._step_factor = self._static_factor()

    # ---- performance model -------------------------------------------------------------------
    def _static_factor(self) -> float:
        a = self.args
        backend = self.r["attention_backend"]
        if backend == "triton":
            s = max(1, a.triton_attention_num_kv_splits)
            attn = 0.96 + 0.03 * math.log2(s / 14) ** 2
        else:
            attn = {"fa3": 1.0, "flashinfer": 1.01, "flex_attention": 1.30, "torch_native": 1.80}.get(backend, 1.05)
        mfs = 1 + 0.5 * max(0.0, 0.92 - self.r["mem_fraction_static"])
        return attn * mfs

    def step_time(self, batch: list[Request]) -> float:
        a_, b_ = 0.0049, 0.00008
        B = len(batch)
        args = self.args
        graph = self.graph_on and self.graph_bs >= B
        if not graph:
            a_ *= 1.6
        elif args.enable_torch_compile and args.torch_compile_max_bs >= B:
            a_ *= 0.72
            b_ *= 0.95
        if args.disable_overlap_schedule:
            a_ *= 1.08
        if args.kv_cache_dtype.startswith("fp8") or args.kv_cache_dtype.startswith("fp4"):
            b_ *= 0.88
        tp = max(1, args.tp_size)
        a_ *= 1 + 0.15 * (tp - 1)
        b_ /= tp
        f = self._step_factor
        if self.policy == "lof":
            if B > 1 and len({r.max_new for r in batch}) > 1:
                f *= 0.985
        elif self.policy == "random":
            f *= 1.01
        elif self.policy == "dfs-weight":
            f *= 1.005
        return self.speed * (a_ + b_ * B) * f

    def prefill_time(self, tokens: int) -> float:
        return (
            self.speed
            * (0.003 + 0.00003 * tokens)
            * (1 + 0.15 * (max(1, self.args.tp_size) - 1))
            / max(1, self.args.tp_size)
        )

    # ---- scheduling ----------------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        self.requests_total += 1
        self.prompt_tokens_total += req.input_len
        self.waiting.append(req)
        self.wake.set()

    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    def cached_len(self, req: Request) -> int:
        if self.radix is None:
            return 0
        n = 0
        for h in req.blocks:
            if h not in self.radix:
                break
            n += 1
        return min(n * PREFIX_BLOCK, req.input_len - 1)

    def _admit(self) -> None:
        if not self.waiting:
            return
        if self.policy == "lpm":
            self.waiting.sort(key=lambda r: -self.cached_len(r))
        elif self.policy == "lof":
            self.waiting.sort(key=lambda r: -r.max_new)
        elif self.policy == "random":
            self.waiting.sort(key=lambda r: zlib.crc32(str(r.rid).encode()))
        used = sum(r.reserve for r in self.running) + sum(r.reserve for r in self.prefilling)
        cons = self.args.schedule_conservativeness
        while self.waiting and len(self.running) + len(self.prefilling) < self.max_running:
            req = self.waiting[0]
            need = req.input_len + int(req.max_new * min(1.0, max(0.0, cons)))
            if used + need > self.pool and (self.running or self.prefilling):
                break
            self.waiting.pop(0)
            req.cached = req.prefilled = self.cached_len(req)
            self.prefilling.append(req)
            used += need

    def _prefill_batch(self) -> tuple[list[Request], int]:
        """Which requests get prefill work this step and how many tokens."""
        budget = self.args.max_prefill_tokens
        chunk = self.r["chunked_prefill_size"]
        if chunk and chunk > 0:
            budget = min(budget, chunk)
        budget = max(budget, 1)
        tokens = 0
        finished = []
        for req in self.prefilling:
            left = req.input_len - req.prefilled
            take = min(left, budget - tokens)
            if take <= 0 and tokens > 0:
                break
            if not (chunk and chunk > 0):
                take = left  # no chunking: whole prompt at once
            req.prefilled += take
            tokens += take
            if req.prefilled >= req.input_len:
                finished.append(req)
            if tokens >= budget:
                break
        return finished, tokens

    async def run_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        t_next = loop.time()
        idle = True
        while True:
            if self.unhealthy:
                await asyncio.sleep(3600)
                continue
            self._drop_aborted()
            self._admit()
            if not self.prefilling and not self.running:
                self.wake.clear()
                idle = True
                await self.wake.wait()
                continue
            if idle:
                t_next = loop.time()
                idle = False
            if self.prefilling:
                n_new_seq = len(self.prefilling)
                cached = sum(r.cached for r in self.prefilling)
                finished, tokens = self._prefill_batch()
                dur = self.prefill_time(tokens)
                mixed = self.args.enable_mixed_chunk and self.running
                if mixed:
                    dur += self.speed * 0.00008 * len(self.running)
                t_next = await self._wait_until(loop, t_next + dur)
                log(
                    f"Prefill batch, #new-seq: {n_new_seq}, #new-token: {tokens}, #cached-token: {cached}, "
                    f"token usage: {self._usage():.2f}, #running-req: {len(self.running)}, "
                    f"#queue-req: {len(self.waiting)}"
                )
                if mixed:
                    self._decode_emit(list(self.running))
                for req in finished:
                    self.prefilling.remove(req)
                    if self.radix is not None:
                        self.radix.update(req.blocks)
                    req.first_token_time = time.monotonic()
                    if not self._emit(req):
                        self.running.append(req)
            else:
                batch = list(self.running)
                self._check_load_faults(batch)
                dur = self.step_time(batch)
                t_next = await self._wait_until(loop, t_next + dur)
                self._decode_emit(batch)
                self._decode_log(batch)
            await asyncio.sleep(0)

    async def _wait_until(self, loop, target: float) -> float:
        now = loop.time()
        if target > now:
            await asyncio.sleep(target - now)
            return target
        if now - target > 0.25:  # far behind (CPU bound): do not burst to catch up
            return now
        return target

    def _usage(self) -> float:
        used = sum(r.input_len + r.generated for r in self.running)
        return used / max(1, self.pool)

    def _drop_aborted(self) -> None:
        for lst in (self.running, self.prefilling, self.waiting):
            for req in [r for r in lst if r.stream and r.writer.transport.is_closing()]:
                lst.remove(req)
                req.aborted = True
                if not req.done.done():
                    req.done.set_result(None)

    def _check_load_faults(self, batch: list[Request]) -> None:
        if not batch:
            return
        f = self.faults
        if "scheduler_crash" in f:
            scheduler_exception(
                [
                    ("srt/managers/scheduler.py", 1108, "event_loop_overlap", "batch_result = self.run_batch(batch)"),
                    (
                        "srt/managers/tp_worker.py",
                        412,
                        "forward_batch_generation",
                        "logits_output, can_run_cuda_graph = self.model_runner.forward(",
                    ),
                ],
                "RuntimeError: CUDA error: an illegal memory access was encountered\n"
                "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
                "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            )
            kill_self()
        if len(batch) > 8 and "oom_under_load" in f:
            cap = self.r["gpu_capacity_gib"]
            scheduler_exception(
                [
                    ("srt/managers/scheduler.py", 1108, "event_loop_overlap", "batch_result = self.run_batch(batch)"),
                    (
                        "srt/layers/logits_processor.py",
                        604,
                        "_get_logits",
                        "logits = torch.matmul(hidden_states.to(lm_head.weight.dtype), lm_head.weight.T)",
                    ),
                ],
                f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 18.00 MiB. GPU 0 has a total "
                f"capacity of {cap:.2f} GiB of which 6.31 MiB is free. Including non-PyTorch memory, this process "
                f"has {cap - 0.01:.2f} GiB memory in use. Of the allocated memory {cap - 1.2:.2f} GiB is allocated "
                f"by PyTorch, and 412.19 MiB is reserved by PyTorch but unallocated.",
            )
            log("SIGQUIT received. signum=3, frame=None. It usually means one child failed.")
            kill_self()
        if len(batch) > 8 and "segfault_under_load" in f:
            segfault()
        if self.completed >= 5 and "die_under_load" in f:
            os._exit(1)

    def _decode_emit(self, batch: list[Request]) -> None:
        self.decoded_steps += 1
        for req in batch:
            if req.aborted:
                continue
            if self._emit(req):
                self.running.remove(req)

    def _emit(self, req: Request) -> bool:
        """Produce one token for req; True when the request has finished."""
        i = req.generated
        req.generated += 1
        self.generation_tokens_total += 1
        self._log_tokens += 1
        idx = (req.seed + i * 7) % len(VOCAB)
        finished = req.generated >= req.stop_at
        if finished:
            req.finish_reason = "length" if req.generated >= req.max_new else "stop"
        if req.stream:
            w = req.writer
            if w.transport.is_closing():
                req.aborted = True
                if not req.done.done():
                    req.done.set_result(None)
                return True
            data = self._chunk(req, idx, finished)
            w.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            req.text_parts.append(VOCAB[idx])
        if finished:
            self.completed += 1
            if not req.done.done():
                req.done.set_result(None)
            if self.completed >= 5 and "unhealthy" in self.faults:
                self.unhealthy = True
        return finished

    def _chunk(self, req: Request, idx: int, finished: bool) -> bytes:
        word = VOCAB_JSON[idx]
        if req.kind == "generate":
            req.text_parts.append(VOCAB[idx])
            text = json.dumps("".join(req.text_parts))
            fr = json.dumps(finish_reason_native(req)) if finished else "null"
            return (
                f'data: {{"text": {text}, "meta_info": {{"id": "{req.rid}", "finish_reason": {fr}, '
                f'"prompt_tokens": {req.input_len}, "weight_version": "default", '
                f'"completion_tokens": {req.generated}, "cached_tokens": 0, '
                f'"e2e_latency": {time.monotonic() - req.arrival:.4f}}}}}\n\n'
            ).encode()
        fr = f'"{req.finish_reason}"' if finished else "null"
        ms = str(EOS_TOKEN_ID) if finished and req.finish_reason == "stop" else "null"
        if req.kind == "chat":
            role = '"role":"assistant",' if req.generated == 1 else ""
            body = (
                f'{{"index":0,"delta":{{{role}"content":"{word}","reasoning_content":null,"tool_calls":null}},'
                f'"logprobs":null,"finish_reason":{fr},"matched_stop":{ms}}}'
            )
        else:
            body = f'{{"index":0,"text":"{word}","logprobs":null,"finish_reason":{fr},"matched_stop":{ms}}}'
        return req.prefix + body.encode() + req.suffix

    def _decode_log(self, batch: list[Request]) -> None:
        self.decode_batches += 1
        if self.decode_batches % 40:
            return
        now = time.monotonic()
        dt = now - self._log_t
        self.last_gen_throughput = self._log_tokens / dt if dt > 0 else 0.0
        self._log_t, self._log_tokens = now, 0
        used = sum(r.input_len + r.generated for r in self.running)
        graph = self.graph_on and len(batch) <= self.graph_bs
        log(
            f"Decode batch, #running-req: {len(batch)}, #token: {used}, token usage: {used / max(1, self.pool):.2f}, "
            f"cuda graph: {graph}, gen throughput (token/s): {self.last_gen_throughput:.2f}, "
            f"#queue-req: {len(self.waiting)}"
        )


def finish_reason_native(req: Request):
    if req.finish_reason == "length":
        return {"type": "length", "length": req.generated}
    return {"type": "stop", "matched": EOS_TOKEN_ID}


# --------------------------------------------------------------------------------------------
# HTTP

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def response_bytes(status: int, body: bytes, ctype: str = "application/json", close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\ncontent-type: {ctype}\r\n"
        f"content-length: {len(body)}\r\nserver: sglang-standin\r\n"
    )
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


def json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()


def error_body(status: int, message: str) -> bytes:
    return json_bytes(
        {
            "object": "error",
            "message": message,
            "type": "BadRequestError" if status == 400 else "Error",
            "param": None,
            "code": status,
        }
    )


def count_words(text: str) -> int:
    return max(1, len(text.split()))


PREFIX_BLOCK = 16


def prefix_blocks(tokens) -> list[int]:
    """Chained hashes of the whole 16-token blocks: block i's hash stands for the prompt's first 16 (i+1) tokens."""
    out, h = [], 0
    for i in range(0, len(tokens) - PREFIX_BLOCK + 1, PREFIX_BLOCK):
        h = hash((h, tuple(tokens[i : i + PREFIX_BLOCK])))
        out.append(h)
    return out


class HTTPHandler:
    def __init__(self, server: Server):
        self.s = server

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(response_bytes(400, b"", close=True))
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        parts.append(await reader.readexactly(size))
                        await reader.readexactly(2)
                    body = b"".join(parts)
                elif headers.get("content-length"):
                    body = await reader.readexactly(int(headers["content-length"]))
                close = headers.get("connection", "").lower() == "close" or version.strip() == "HTTP/1.0"
                path = target.split("?", 1)[0]
                try:
                    await self.route(method.upper(), path, body, writer, close)
                except HTTPError as e:
                    writer.write(response_bytes(e.status, error_body(e.status, e.message), close=close))
                except (ConnectionError, asyncio.CancelledError):
                    return
                if writer.transport.is_closing():
                    return
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def route(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter, close: bool) -> None:
        s = self.s

        def send(status, obj=None, ctype="application/json"):
            w.write(
                response_bytes(
                    status, obj if isinstance(obj, bytes) else (b"" if obj is None else json_bytes(obj)), ctype, close
                )
            )

        if path in ("/health", "/health_generate"):
            if not s.ready:
                return send(503)
            if s.unhealthy:
                log("Health check failed. Server couldn't get a response from detokenizer for last 20 seconds.")
                return send(503)
            return send(200)
        if path in ("/get_server_info", "/server_info"):
            return send(200, self.server_info())
        if path in ("/get_model_info", "/model_info"):
            return send(
                200,
                {
                    "model_path": s.args.model_path,
                    "tokenizer_path": s.args.model_path,
                    "is_generation": True,
                    "preferred_sampling_params": None,
                    "weight_version": "default",
                    "has_image_understanding": False,
                    "has_audio_understanding": False,
                    "model_type": "qwen3",
                    "architectures": [ARCH],
                },
            )
        if path == "/v1/models":
            return send(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": s.served_name,
                            "object": "model",
                            "created": int(time.time()),
                            "owned_by": "sglang",
                            "root": s.served_name,
                            "parent": None,
                            "max_model_len": CONTEXT_LEN,
                        }
                    ],
                },
            )
        if path == "/flush_cache":
            text = (
                b"Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting "
                b"requests, the operation will not be performed.)\n"
            )
            if s.busy():
                log(
                    "Cache not flushed because there are pending requests. "
                    f"#queue-req: {len(s.waiting)}, #running-req: {len(s.running) + len(s.prefilling)}"
                )
                return send(400, text, "text/plain; charset=utf-8")
            if s.radix is not None:
                s.radix.clear()
            log("Cache flushed successfully!")
            return send(200, text, "text/plain; charset=utf-8")
        if path == "/metrics" and s.args.enable_metrics:
            return send(200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/get_load":
            return send(
                200,
                [
                    {
                        "dp_rank": 0,
                        "num_reqs": len(s.running) + len(s.waiting) + len(s.prefilling),
                        "num_waiting_reqs": len(s.waiting),
                        "num_tokens": sum(r.input_len + r.generated for r in s.running),
                    }
                ],
            )
        if path == "/ping":
            return send(200, b"", "text/plain")
        if path in ("/v1/completions", "/v1/chat/completions", "/generate"):
            if method != "POST":
                raise HTTPError(405, "Method Not Allowed")
            try:
                req_json = json.loads(body or b"{}")
            except ValueError:
                raise HTTPError(400, "Invalid JSON body") from None
            if not isinstance(req_json, dict):
                raise HTTPError(400, "The request body must be a JSON object")
            kind = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/generate": "generate"}[path]
            return await self.generate(kind, req_json, w, close)
        raise HTTPError(404, "Not Found")

    def server_info(self) -> dict:
        s = self.s
        info = dict(vars(s.args))
        info.update({k: v for k, v in s.r.items() if k in vars(s.args)})
        sched = {
            "max_total_num_tokens": s.pool,
            "max_running_requests": s.max_running,
            "max_req_input_len": s.r["max_req_input_len"],
            "context_len": CONTEXT_LEN,
            "available_gpu_mem": s.r["available_gpu_mem"],
        }
        info.update(sched)
        info["internal_states"] = [
            dict(
                sched,
                last_gen_throughput=s.last_gen_throughput,
                num_running_reqs=len(s.running),
                num_queue_reqs=len(s.waiting),
            )
        ]
        info["version"] = VERSION
        info["standin"] = True
        return info

    def metrics(self) -> str:
        s = self.s
        lab = f'{{model_name="{s.served_name}"}}'
        rows = [
            ("sglang:num_running_reqs", "gauge", len(s.running)),
            ("sglang:num_queue_reqs", "gauge", len(s.waiting)),
            ("sglang:token_usage", "gauge", round(s._usage(), 4)),
            ("sglang:gen_throughput", "gauge", round(s.last_gen_throughput, 2)),
            ("sglang:cache_hit_rate", "gauge", 0.0),
            ("sglang:num_retracted_reqs", "gauge", 0),
            ("sglang:is_cuda_graph", "gauge", 1.0 if s.graph_on else 0.0),
            ("sglang:prompt_tokens_total", "counter", s.prompt_tokens_total),
            ("sglang:generation_tokens_total", "counter", s.generation_tokens_total),
            ("sglang:num_requests_total", "counter", s.requests_total),
        ]
        out = []
        for name, typ, val in rows:
            out += [f"# HELP {name} {name}", f"# TYPE {name} {typ}", f"{name}{lab} {val}"]
        return "\n".join(out) + "\n"

    async def generate(self, kind: str, body: dict, w: asyncio.StreamWriter, close: bool) -> None:
        s = self.s
        if kind == "generate":
            sp = body.get("sampling_params") or {}
            max_new = sp.get("max_new_tokens", 128)
            ignore_eos = bool(sp.get("ignore_eos", False))
            if body.get("input_ids") is not None:
                ids = body["input_ids"]
                if ids and isinstance(ids[0], list):
                    ids = ids[0]
                input_len, key, tokens = len(ids), repr(ids[:64]), ids
            else:
                text = body.get("text", "")
                if isinstance(text, list):
                    text = text[0] if text else ""
                input_len, key, tokens = count_words(str(text)), str(text)[:512], str(text).split()
        else:
            if not isinstance(body.get("model", ""), str):
                # SGLang's pydantic request models declare model: str (absent: a default name); its validation
                # handler answers 400, not FastAPI's 422.
                req = "CompletionRequest" if kind == "completions" else "ChatCompletionRequest"
                raise HTTPError(
                    400,
                    f"1 validation error for {req}\nmodel\n  Input should be a valid string "
                    f"[type=string_type, input_value={body['model']!r}]",
                )
            max_new = body.get("max_completion_tokens") or body.get("max_tokens")
            if max_new is None:
                max_new = 16 if kind == "completions" else CONTEXT_LEN
            ignore_eos = bool(body.get("ignore_eos", False))
            if kind == "completions":
                prompt = body.get("prompt", "")
                if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)):
                    if len(prompt) > 1:
                        raise HTTPError(400, "The stand-in serves one prompt per request")
                    prompt = prompt[0]
                if isinstance(prompt, list):
                    input_len, key, tokens = len(prompt), repr(prompt[:64]), prompt
                else:
                    input_len, key, tokens = count_words(str(prompt)), str(prompt)[:512], str(prompt).split()
            else:
                msgs = body.get("messages") or []
                words = 0
                for m in msgs:
                    c = m.get("content", "") if isinstance(m, dict) else ""
                    if isinstance(c, list):
                        c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                    words += count_words(str(c)) + 4
                input_len, key = words + 3, json.dumps(msgs)[:512]
                tokens = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict)).split()
                if kind == "chat" and max_new == CONTEXT_LEN:
                    max_new = max(1, CONTEXT_LEN - input_len)
        if not isinstance(max_new, int) or max_new < 0:
            raise HTTPError(400, "max_tokens must be a non-negative integer")
        if input_len + max_new > CONTEXT_LEN:
            raise HTTPError(
                400,
                f"Requested token count exceeds the model's maximum context length of {CONTEXT_LEN} "
                f"tokens. You requested a total of {input_len + max_new} tokens: {input_len} tokens "
                f"from the input messages and {max_new} tokens for the completion. Please reduce the "
                f"number of tokens in the input messages or the completion to fit within the limit.",
            )
        if input_len >= s.r["max_req_input_len"]:
            raise HTTPError(
                400,
                f"The input ({input_len} tokens) is longer than the model's context length "
                f"({s.r['max_req_input_len']} tokens).",
            )
        stream = bool(body.get("stream", False))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        h = zlib.crc32(f"{key}|{max_new}|{input_len}".encode())
        stop_at = max_new
        if not ignore_eos and max_new > 1 and h % 2 == 1:
            stop_at = max(1, max_new // 4 + (h >> 8) % (max_new - max_new // 4))
        s.next_rid += 1
        rid = f"{h:08x}{s.next_rid:08x}"
        model = body.get("model") or s.served_name
        req = Request(rid, input_len, max_new, stop_at, stream, kind, w, model, h % len(VOCAB))
        req.blocks = prefix_blocks(tokens)
        created = req.created
        if kind == "completions":
            oid = f"cmpl-{rid}"
            req.prefix = (
                f'data: {{"id":"{oid}","object":"text_completion","created":{created},'
                f'"model":{json.dumps(model)},"choices":['
            ).encode()
        elif kind == "chat":
            oid = f"chatcmpl-{rid}"
            req.prefix = (
                f'data: {{"id":"{oid}","object":"chat.completion.chunk","created":{created},'
                f'"model":{json.dumps(model)},"choices":['
            ).encode()
        else:
            oid = rid
        req.suffix = b'],"usage":null}\n\n'
        if max_new == 0:
            req.stop_at = 0
        if stream:
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                "cache-control: no-cache\r\nserver: sglang-standin\r\n"
            )
            if close:
                head += "connection: close\r\n"
            w.write(head.encode() + b"\r\n")
        if max_new == 0:
            req.done.set_result(None)
        else:
            s.submit(req)
        await req.done
        if req.aborted:
            raise ConnectionResetError
        usage = {
            "prompt_tokens": input_len,
            "completion_tokens": req.generated,
            "total_tokens": input_len + req.generated,
            "prompt_tokens_details": None,
            "reasoning_tokens": 0,
        }
        if stream:
            tail = []
            if include_usage and kind != "generate":
                obj = "text_completion" if kind == "completions" else "chat.completion.chunk"
                tail.append(
                    b"data: "
                    + json_bytes(
                        {"id": oid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage}
                    )
                    + b"\n\n"
                )
            tail.append(b"data: [DONE]\n\n")
            out = b"".join(b"%x\r\n%s\r\n" % (len(t), t) for t in tail) + b"0\r\n\r\n"
            w.write(out)
            return
        text = "".join(req.text_parts)
        fr = req.finish_reason or "length"
        ms = EOS_TOKEN_ID if fr == "stop" else None
        if kind == "completions":
            obj = {
                "id": oid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": fr, "matched_stop": ms}],
                "usage": usage,
            }
        elif kind == "chat":
            obj = {
                "id": oid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "reasoning_content": None,
                            "tool_calls": None,
                        },
                        "logprobs": None,
                        "finish_reason": fr,
                        "matched_stop": ms,
                    }
                ],
                "usage": usage,
            }
        else:
            obj = {
                "text": text,
                "meta_info": {
                    "id": rid,
                    "finish_reason": finish_reason_native(req) if req.generated else {"type": "length", "length": 0},
                    "prompt_tokens": input_len,
                    "weight_version": "default",
                    "completion_tokens": req.generated,
                    "cached_tokens": 0,
                    "e2e_latency": round(time.monotonic() - req.arrival, 4),
                },
            }
        w.write(response_bytes(200, json_bytes(obj), close=close))


# --------------------------------------------------------------------------------------------
# Startup


def resolve(args: argparse.Namespace) -> dict:
    gpu_gb = env_float("SGLANG_STANDIN_GPU_GB", 80.0)
    tp = max(1, args.tp_size)
    mfs = args.mem_fraction_static if args.mem_fraction_static is not None else 0.85
    if gpu_gb < 35:
        chunk_default, graph_default = 2048, 24
    elif gpu_gb < 60:
        chunk_default, graph_default = 4096, 32
    else:
        chunk_default, graph_default = 8192, 256 if tp < 4 else 512
    chunk = args.chunked_prefill_size if args.chunked_prefill_size is not None else chunk_default
    graph_bs = args.cuda_graph_max_bs_decode or args.cuda_graph_max_bs or graph_default
    weights = WEIGHTS_GB / tp
    bytes_per_token = KV_BYTES_PER_TOKEN / (2 if args.kv_cache_dtype.startswith(("fp8", "fp4")) else 1) / tp
    kv_gb = max(gpu_gb * mfs - weights, 0.01 * gpu_gb)  # with faults off, keep a small pool
    tokens = int(kv_gb * 2**30 / bytes_per_token)
    if args.max_total_tokens:
        tokens = min(tokens, args.max_total_tokens)
    max_num_reqs = min(max(int(tokens / CONTEXT_LEN * 512), 2048), 4096)
    max_running = min(args.max_running_requests or tokens // 2, max_num_reqs)
    max_running = max(1, max_running)
    attention = args.attention_backend or ("triton" if args.disable_flashinfer else "fa3")
    graph_mem = 0.0 if args.disable_cuda_graph else min(2.5, 0.3 + graph_bs / 256 * 1.2)
    avail_after_pool = max(0.0, gpu_gb * (1 - mfs))
    return {
        "gpu_gb": gpu_gb,
        "gpu_capacity_gib": gpu_gb * 0.98888,
        "weights_gb": weights,
        "mem_fraction_static": mfs,
        "chunked_prefill_size": chunk,
        "cuda_graph_max_bs": args.cuda_graph_max_bs or graph_bs,
        "cuda_graph_max_bs_decode": graph_bs,
        "attention_backend": attention,
        "max_total_num_tokens": tokens,
        "max_running_requests": max_running,
        "max_req_input_len": min(CONTEXT_LEN - 1, tokens - 1),
        "kv_gb_each": tokens * bytes_per_token / 2 / 2**30,
        "avail_after_pool": avail_after_pool,
        "graph_mem": graph_mem,
        "available_gpu_mem": round(max(0.0, avail_after_pool - graph_mem), 2),
        "min_viable_mfs": (weights + 0.15) / gpu_gb,
        "served_model_name": args.served_model_name or args.model_path,
        "sampling_backend": args.sampling_backend or "flashinfer",
        "grammar_backend": args.grammar_backend or "xgrammar",
    }


def fault_args(args: argparse.Namespace, r: dict) -> dict:
    d = dict(vars(args))
    for k in (
        "mem_fraction_static",
        "chunked_prefill_size",
        "cuda_graph_max_bs",
        "cuda_graph_max_bs_decode",
        "attention_backend",
        "served_model_name",
    ):
        d[k] = r[k]
    d["max_total_tokens"] = args.max_total_tokens if args.max_total_tokens is not None else r["max_total_num_tokens"]
    d["max_running_requests"] = r["max_running_requests"]
    return d


async def startup(server: Server) -> None:
    args, r, faults = server.args, server.r, server.faults
    cap = r["gpu_capacity_gib"]
    startup_s = env_float("SGLANG_STANDIN_STARTUP_S", 1.0)
    compile_s = 0.0
    if args.enable_torch_compile:
        compile_s = env_float("SGLANG_STANDIN_COMPILE_S", 3.0) * max(0.5, args.torch_compile_max_bs / 32)
    t0 = time.monotonic()
    if args.disable_cuda_graph:
        log(
            "The --disable-cuda-graph flag is deprecated. Use --cuda-graph-backend-decode=disabled and "
            "--cuda-graph-backend-prefill=disabled instead."
        )
    if args.cuda_graph_max_bs is not None:
        log("The --cuda-graph-max-bs flag is deprecated. Use --cuda-graph-max-bs-decode instead.")
    log(f"server_args={args!r}")
    log("Init torch distributed begin.")
    await asyncio.sleep(startup_s * 0.1)
    if "gpu_busy" in faults:
        exit_with_traceback(
            [*SCHED_FRAMES, ("srt/model_executor/model_runner.py", 687, "init_torch_distributed", "raise ValueError(")],
            f"ValueError: The memory capacity is unbalanced. Some GPUs may be occupied by other processes. "
            f"min_per_gpu_memory={cap * 0.4:.4f}, local_gpu_memory={cap * 0.99:.4f}, "
            f"local_gpu_memory * 0.9={cap * 0.99 * 0.9:.4f}",
        )
    log("Init torch distributed ends. mem usage=0.00 GB")
    log("Load Config: " + args.model_path)
    log(f"Load weight begin. avail mem={cap:.2f} GB")
    await asyncio.sleep(startup_s * 0.35)
    avail = cap - r["weights_gb"]
    log(
        f"Load weight end. elapsed={time.monotonic() - t0:.2f} s, type={ARCH}, dtype=torch.bfloat16, "
        f"avail mem={avail:.2f} GB, mem usage={r['weights_gb']:.2f} GB."
    )
    mfs = r["mem_fraction_static"]
    if "oom_kv_startup" in faults:
        need = r["min_viable_mfs"]
        scheduler_exception(
            [
                ("srt/model_executor/model_runner.py", 540, "initialize", "self.init_memory_pool(min_per_gpu_memory)"),
                (
                    "srt/model_executor/model_runner.py",
                    1702,
                    "init_memory_pool",
                    "self.max_total_num_tokens = self.profile_max_num_token(total_gpu_memory)",
                ),
                ("srt/model_executor/pool_configurator.py", 88, "profile_max_num_token", "raise ValueError("),
            ],
            f"ValueError: Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static={mfs}. "
            f"Raise --mem-fraction-static above {math.ceil(need * 1000) / 1000:.3f} (minimum viable = 1 - "
            f"available/pre = {need:.4f}). Loaded weights use {r['weights_gb']:.2f} GB of {cap:.2f} GB.",
        )
        kill_self()
    if "oom_kv_startup_v055" in faults:
        exit_with_traceback(
            [*SCHED_FRAMES, ("srt/model_executor/model_runner.py", 1664, "init_memory_pool", "raise RuntimeError(")],
            f"RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
            f"Current value: self.server_args.mem_fraction_static={mfs}",
        )
    tokens = r["max_total_num_tokens"]
    log(
        f"KV Cache is allocated. dtype: torch.bfloat16, #tokens: {tokens}, K size: {r['kv_gb_each']:.2f} GB, "
        f"V size: {r['kv_gb_each']:.2f} GB"
    )
    log(f"Memory pool end. avail mem={r['avail_after_pool']:.2f} GB")
    await asyncio.sleep(startup_s * 0.05)
    if args.schedule_policy == "priority":
        scheduler_exception(
            [
                ("srt/managers/scheduler.py", 452, "__init__", "self.policy = SchedulePolicy("),
                (
                    "srt/managers/schedule_policy.py",
                    120,
                    "_validate_and_adjust_policy",
                    'raise ValueError(f"Unknown schedule_policy: {policy=}")',
                ),
            ],
            "ValueError: Unknown schedule_policy: policy='priority'",
        )
        kill_self()
    graph_on = server.graph_on
    if graph_on or "hang" in faults or "cuda_graph_oom" in faults:
        log(f"Capture cuda graph begin. This can take up to several minutes. avail mem={r['avail_after_pool']:.2f} GB")
    if "hang" in faults:
        while True:
            await asyncio.sleep(3600)
    if "cuda_graph_oom" in faults:
        await asyncio.sleep(startup_s * 0.1)
        free_mib = 312.0
        exit_with_traceback(
            [
                *SCHED_FRAMES,
                (
                    "srt/model_executor/model_runner.py",
                    2030,
                    "init_device_graphs",
                    "self.graph_runner = CudaGraphRunner(self)",
                ),
                (
                    "srt/model_executor/cuda_graph_runner.py",
                    396,
                    "__init__",
                    'raise Exception(f"Capture cuda graph failed: {e}\\n{CUDA_GRAPH_CAPTURE_FAILED_MSG}")',
                ),
            ],
            f"Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 448.00 MiB. GPU 0 has a "
            f"total capacity of {cap:.2f} GiB of which {free_mib:.2f} MiB is free. Including non-PyTorch memory, "
            f"this process has {cap - 0.3:.2f} GiB memory in use.\n"
            "Possible solutions:\n"
            "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)\n"
            "2. set --cuda-graph-max-bs-decode to a smaller value (e.g., 16)\n"
            "3. disable torch compile by not using --enable-torch-compile\n"
            "4. disable decode CUDA graph by --cuda-graph-backend-decode=disabled. "
            "(Not recommended. Huge performance loss)\n"
            "Open an issue on GitHub https://github.com/sgl-project/sglang/issues/new/choose \n",
        )
    if "segfault" in faults:
        await asyncio.sleep(startup_s * 0.05)
        segfault()
    if graph_on:
        bs = [1, 2, 4, 8, *range(16, r["cuda_graph_max_bs_decode"] + 1, 8)]
        bs = [b for b in bs if b <= r["cuda_graph_max_bs_decode"]] or [1]
        log(f"Capture cuda graph bs {bs}")
        t_cap = time.monotonic()
        # Kernels built on first use, as triton's are: paid once per TRITON_CACHE_DIR, then read from it.
        kernels = (
            Path(os.environ["TRITON_CACHE_DIR"]) / "standin-kernels.bin" if os.environ.get("TRITON_CACHE_DIR") else None
        )
        if kernels is None or not kernels.exists():
            await asyncio.sleep(env_float("SGLANG_STANDIN_JIT_S", 0.0))
            if kernels is not None:
                kernels.parent.mkdir(parents=True, exist_ok=True)
                kernels.write_bytes(b"standin")
        await asyncio.sleep(startup_s * 0.3 + compile_s)
        log(
            f"Capture cuda graph end. Time elapsed: {time.monotonic() - t_cap:.2f} s. mem usage={r['graph_mem']:.2f} "
            f"GB. avail mem={r['available_gpu_mem']:.2f} GB."
        )
    else:
        await asyncio.sleep(startup_s * 0.3)
    log(
        f"max_total_num_tokens={tokens}, chunked_prefill_size={r['chunked_prefill_size']}, "
        f"max_prefill_tokens={args.max_prefill_tokens}, max_running_requests={r['max_running_requests']}, "
        f"context_len={CONTEXT_LEN}, available_gpu_mem={r['available_gpu_mem']:.2f} GB"
    )
    if not args.skip_server_warmup:
        await asyncio.sleep(startup_s * 0.1)
    server.ready = True
    log("The server is fired up and ready to roll!")


async def amain(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stopping = {"sig": None}

    def on_signal(sig):
        if stopping["sig"] is None:
            stopping["sig"] = sig
            log(f"Received {signal.Signals(sig).name}. Shutting down.")
            kill_child()
            sys.stdout.flush()
            os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    r = resolve(args)
    try:
        faults = active_faults(fault_args(args, r))
    except (FaultRuleError, ValueError) as e:
        sys.stderr.write(f"sglang-standin: bad SGLANG_STANDIN_FAULTS: {e}\n")
        sys.stderr.flush()
        os._exit(3)
    server = Server(args, r, faults)
    handler = HTTPHandler(server)
    try:
        srv = await asyncio.start_server(handler.handle, args.host, args.port, limit=1 << 20, reuse_address=True)
    except OSError as e:
        log(
            f"ERROR:    [Errno {e.errno}] error while attempting to bind on address ({args.host!r}, {args.port}): "
            f"{e.strerror}"
        )
        kill_child()
        os._exit(1)
    start_child()
    sched_task = loop.create_task(server.run_scheduler())
    await startup(server)
    async with srv:
        await asyncio.gather(srv.serve_forever(), sched_task)


def main(argv=None) -> None:
    def early_signal(sig, frame):
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, early_signal)
    signal.signal(signal.SIGINT, early_signal)
    delay = env_float("SGLANG_STANDIN_IMPORT_DELAY", 0.0)
    if delay > 0:
        time.sleep(delay)
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
