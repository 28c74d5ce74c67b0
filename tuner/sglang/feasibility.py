"""Failures predicted before launch: configs SGLang would refuse, recorded infeasible and never launched.

A failed launch costs about a minute of a GPU (docs/h200.md); some failures follow from facts known before it:
the model's config.json, the GPU's total memory (NVML) and the flags. The checks follow SGLang 0.5.17's own code
(paths inside the ``sglang`` package of the 0.5.17 wheel, ../shared/gpu/site_tierB.tar.xz):

- **KV pool** (``srt/mem_cache/kv_cache_configurator.py:1614-1657``, ``_profile_available_bytes``):
  ``rest_memory = available_after_weights - pre_model_load_memory * (1 - mem_fraction_static)``, in GiB; at or
  below 0 it raises ``ValueError: Loaded weights leave no GPU memory for the KV cache``. With
  ``available_after_weights = pre - weights`` this is ``pre * mem_fraction_static - weights``.
  Tokens: ``rest_memory // cell_size``, rounded down to ``--page-size`` (``srt/model_executor/pool_configurator.py
  :317-326``), where ``cell_size = kv_heads_per_gpu * (head_dim + v_head_dim) * layers * kv_bytes``
  (``_compute_cell_size``, :183 and :290), then ``min(.., --max-total-tokens)`` (``_apply_token_constraints``,
  kv_cache_configurator.py:1690).
- **Default --mem-fraction-static** (``srt/server_args.py:4607-4790``, ``_handle_gpu_memory_settings``):
  ``(gpu_mib - reserved) / gpu_mib`` rounded to 3 places, ``reserved = 512 + 1.5 * max(chunked_prefill, 2048) +
  tp * pp * 128 + graph reserve``, at least 10240 MiB on GPUs above 60 GiB.
- **Context length** (``srt/configs/model_config.py:767-795``): ``--context-length`` above the model's derived
  length (``get_context_length``, ``srt/utils/hf_transformers/common.py:463``: the first of max_sequence_length,
  seq_length, max_seq_len, model_max_length, max_position_embeddings, times the rope scaling factor) raises a
  ValueError unless ``SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1``.
- **Heads vs --tp-size** (``srt/models/qwen2.py:145-155``, the same asserts in llama.py and most models):
  attention heads divisible by tp; KV heads divisible by tp, or tp by KV heads when there are fewer.
- **A request longer than the pool or the context**: SGLang caps a request at ``min(context_len, pool) - 1``
  tokens and cuts its output short; the workload's longest request (input + output) must fit.
- **tp x dp (x pp) GPUs** that --gpus does not have (``too_many_gpus``).

Conservative by construction: a config that could run is never rejected. The pool is estimated optimistically:
the GPU's NVML total stands for SGLang's free memory before loading (the H200's NVML total is 140.40 GiB, SGLang
found 139.13 GiB free), weights count ``WEIGHT_MARGIN`` (97%) of their estimate, the default memory fraction
leaves out the CUDA-graph reserve (so it comes out larger than SGLang's), and quantized weights and KV caches take
their smallest plausible size. Checked against real SGLang 0.5.17 on an H200 (tests/data/sglang-0.5.17-h200-*.log,
docs/h200.md): the estimate is 0.6-1.2 GiB above SGLang's real pool (Qwen3-8B +1.1% at 0.85 and 0.95; Qwen3-32B
+1.8% at 0.9, +22% at 0.46 where the pool is only 3 GiB); every recorded KV refusal (8B at 0.05 and 0.105, 32B at
0.38 and 0.42) is predicted, and no config that started is rejected: the fraction rejected below is 0.105 for 8B
and 0.422 for 32B, against SGLang's real minima 0.1103 and 0.4391. Where a fact is unknown (no local config.json,
no NVML, an attention kind whose pool differs: MLA, sliding-window or hybrid models, a ``--quantization`` of
unquantized weights) that check is skipped, never guessed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from tuner.sglang import failures
from tuner.sglang.failures import FailureClass
from tuner.sglang.flags import FlagValue, ServerFlags

GIB = 1 << 30
# Weights count this share of their estimate, so the pool bound stays above SGLang's real pool even where the
# estimate overshoots the loaded bytes (weight files with tensors SGLang does not load, such as MTP heads). The
# architecture estimate was 0.1% under the loaded bytes for both models measured (Qwen3-8B 15.26 vs 15.28 GiB,
# Qwen3-32B 61.02 vs 61.04 GiB).
WEIGHT_MARGIN = 0.97
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "bf16": 2}
# --kv-cache-dtype -> bytes per element; fp4 variants carry scales on top (left out: a smaller cell is optimistic).
_KV_BYTES = {"fp8_e5m2": 1, "fp8_e4m3": 1, "mxfp8": 1, "bf16": 2, "bfloat16": 2, "fp4_e2m1": 0.5, "nvfp4": 0.5}
_CONTEXT_KEYS = ("max_sequence_length", "seq_length", "max_seq_len", "model_max_length", "max_position_embeddings")
_ALLOW_LONGER = "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"


@dataclass(frozen=True)
class ModelFacts:
    """What config.json (and the weight files, when present) say about memory, heads and context. A surface's
    header carries them for a replay; facts given rather than read (`tune import --context-length`) may be only
    the context length: a fact that is None is not known, and the checks that need it are skipped."""

    context_len: int  # SGLang's name (ModelConfig.context_len): what --context-length may not exceed
    path: str = ""  # the folder whose config.json was read; "" where the facts were given
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    v_head_dim: int | None = None
    num_layers: int | None = None
    dtype_bytes: int | None = None
    quantized: bool = False
    weight_bytes: float | None = None
    weights_from: str | None = None  # "safetensors" | "architecture"
    standard_kv: bool = False  # one K and V per layer and KV head (not MLA, sliding-window or hybrid)

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelFacts | None:
        """None when the folder has no readable config.json (a hub id, or weights elsewhere)."""
        path = Path(folder).expanduser() / "config.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        cfg = raw.get("text_config") or raw
        try:
            return cls._from_config(str(folder), cfg, raw, Path(folder).expanduser())
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None

    @classmethod
    def _from_config(cls, path: str, cfg: dict, raw: dict, folder: Path) -> ModelFacts:
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        hidden = int(cfg["hidden_size"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        layers = int(cfg["num_hidden_layers"])
        dtype = str(cfg.get("torch_dtype") or raw.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
        dtype_bytes = _DTYPE_BYTES.get(dtype.replace("torch.", ""), 2)
        quant = raw.get("quantization_config") or cfg.get("quantization_config")
        rope = cfg.get("rope_scaling") or {}
        factor = 1.0
        if rope and "original_max_position_embeddings" not in rope and rope.get("rope_type") != "llama3":
            factor = float(rope.get("factor", 1))
        context = next((int(factor * cfg[k]) for k in _CONTEXT_KEYS if cfg.get(k) is not None), 2048)
        layer_types = set(cfg.get("layer_types") or ["full_attention"])
        standard = (
            "kv_lora_rank" not in cfg
            and not cfg.get("sliding_window")
            and layer_types == {"full_attention"}
            and not any(k.startswith(("mamba", "linear_", "ssm")) for k in cfg)
        )
        safetensors = sorted(folder.glob("*.safetensors"))
        if safetensors:
            weight_bytes, source = float(sum(f.stat().st_size for f in safetensors)), "safetensors"
        else:
            weight_bytes, source = (
                _architecture_bytes(cfg, heads, kv, head_dim, hidden, layers, dtype_bytes, quant),
                "architecture",
            )
        return cls(
            context,
            path,
            heads,
            kv,
            head_dim,
            int(cfg.get("v_head_dim") or head_dim),
            layers,
            dtype_bytes,
            bool(quant),
            weight_bytes,
            source,
            standard,
        )


def _architecture_bytes(
    cfg: dict, heads: int, kv: int, head_dim: int, hidden: int, layers: int, dtype_bytes: int, quant: dict | None
) -> float:
    """Weights from the shapes: embeddings, attention projections and the MLP of every layer (norms left out).

    A lower bound for MoE models (the smaller of a dense and an expert MLP per layer) and for quantized ones
    (linear layers at the quantization's bits, scales left out).
    """
    vocab = int(cfg["vocab_size"])
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    mlp = 3 * hidden * inter
    experts = cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts")
    if experts and cfg.get("moe_intermediate_size"):
        mlp = min(mlp, int(experts) * 3 * hidden * int(cfg["moe_intermediate_size"]))
    linear_bytes: float = dtype_bytes
    if quant:
        bits = quant.get("bits") or quant.get("w_bit")
        if not isinstance(bits, (int, float)):
            bits = 8 if "fp8" in str(quant.get("quant_method", "")) else 4
        linear_bytes = float(bits) / 8
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    return embeddings * dtype_bytes + layers * (attn + mlp) * linear_bytes


@dataclass(frozen=True)
class Prediction:
    """A config SGLang would refuse (or could not serve the workload with), and why."""

    failure: FailureClass
    detail: str


@dataclass(frozen=True)
class KvEstimate:
    mem_fraction_static: float
    mem_fraction_source: str  # "flag" | "SGLang's default"
    weights_gib: float  # per GPU, the estimate (no margin)
    cell_bytes: float
    estimate_tokens: int  # the best estimate of max_total_num_tokens
    bound_tokens: int  # the optimistic bound the checks use (never below the real pool)
    rest_gib_bound: float


@dataclass
class Feasibility:
    """Everything known before launch; ``predict`` says which flags cannot start (or serve the workload)."""

    model: ModelFacts | None
    gpu_mib: float | None  # NVML total of the trial's GPU
    gpus: tuple[int, ...]  # --gpus
    longest_request: int | None  # input + output tokens of the workload's longest request; None: unknown
    env: dict[str, str]

    def predict(self, flags: ServerFlags, gpus_needed: int) -> Prediction | None:
        if gpus_needed > len(self.gpus):
            have = ",".join(map(str, self.gpus))
            return Prediction(
                failures.TOO_MANY_GPUS, f"needs {gpus_needed} GPUs (tp x dp) but --gpus {have} gives {len(self.gpus)}"
            )
        m = self.model
        if m is None:
            return None
        d = flags.as_dict()
        tp = _int(d.get("tp-size") or d.get("tensor-parallel-size")) or 1
        heads, kv_heads = m.num_attention_heads, m.num_kv_heads
        if heads and kv_heads and not d.get("enable-dp-attention"):
            bad = (heads % tp != 0) or (kv_heads >= tp and kv_heads % tp != 0) or (kv_heads < tp and tp % kv_heads != 0)
            if bad:
                return Prediction(
                    failures.PREDICTED_TP_HEADS,
                    f"--tp-size {tp} does not divide the model's {heads} attention "
                    f"heads / {kv_heads} KV heads (SGLang asserts it while building the model)",
                )
        context = _int(d.get("context-length"))
        if context and context > m.context_len and self.env.get(_ALLOW_LONGER, "").lower() not in ("1", "true"):
            return Prediction(
                failures.PREDICTED_CONTEXT,
                f"--context-length {context} is above the model's {m.context_len} "
                f"({'config.json' if m.path else 'as given, no config.json read'}); "
                f"SGLang refuses it unless {_ALLOW_LONGER}=1",
            )
        effective_context = context or m.context_len
        if self.longest_request and effective_context < self.longest_request:
            return Prediction(
                failures.PREDICTED_KV_TOO_SMALL,
                f"context length {effective_context} is shorter than the workload's longest request "
                f"({self.longest_request} tokens in and out): SGLang would cut it short",
            )
        kv = self.kv_estimate(flags)
        if kv is None:
            return None
        assert self.gpu_mib is not None  # kv_estimate answers only where the GPU's total is known
        if kv.rest_gib_bound <= 0:
            return Prediction(
                failures.PREDICTED_OOM_KV,
                f"--mem-fraction-static {kv.mem_fraction_static:g} ({kv.mem_fraction_source}) of "
                f"{self.gpu_mib / 1024:.1f} GiB leaves no room for the KV cache after "
                f"~{kv.weights_gib:.1f} GiB of weights per GPU ({m.weights_from})",
            )
        if self.longest_request and kv.bound_tokens < self.longest_request:
            return Prediction(
                failures.PREDICTED_KV_TOO_SMALL,
                f"KV pool of at most {kv.bound_tokens} tokens is smaller than the workload's longest "
                f"request ({self.longest_request} tokens in and out)",
            )
        return None

    def kv_estimate(self, flags: ServerFlags) -> KvEstimate | None:
        """SGLang's KV pool for these flags, or None where a fact it depends on is unknown."""
        m = self.model
        if m is None or not m.standard_kv or self.gpu_mib is None:
            return None
        kv_heads, head_dim, v_head_dim, layers, weight_bytes = (
            m.num_kv_heads,
            m.head_dim,
            m.v_head_dim,
            m.num_layers,
            m.weight_bytes,
        )
        if not (kv_heads and head_dim and v_head_dim and layers) or weight_bytes is None:
            return None  # given facts (a surface's header) without the shapes config.json has
        d = flags.as_dict()
        if d.get("quantization") and m.weights_from == "architecture" and not m.quantized:
            return None  # online quantization: weights shrink by an amount the config does not say
        tp = _int(d.get("tp-size") or d.get("tensor-parallel-size")) or 1
        pp = _int(d.get("pp-size") or d.get("pipeline-parallel-size")) or 1
        kv_bytes = self._kv_bytes(d)
        if kv_bytes is None:
            return None
        mfs, source = self._mem_fraction(d, tp, pp)
        weights_gib = weight_bytes / (tp * pp) / GIB
        total_gib = self.gpu_mib / 1024
        cell = max(1, kv_heads // tp) * (head_dim + v_head_dim) * math.ceil(layers / pp) * kv_bytes
        page = _int(d.get("page-size")) or 1
        cap = _int(d.get("max-total-tokens"))

        def tokens(rest_gib: float) -> int:
            n = max(0, int(rest_gib * GIB // cell)) // page * page
            return min(n, cap // page * page) if cap else n

        rest_bound = total_gib * mfs - weights_gib * WEIGHT_MARGIN
        return KvEstimate(
            mfs, source, weights_gib, cell, tokens(total_gib * mfs - weights_gib), tokens(rest_bound), rest_bound
        )

    def _kv_bytes(self, d: dict[str, FlagValue]) -> float | None:
        m = self.model
        assert m is not None
        name = str(d.get("kv-cache-dtype") or "auto")
        if name != "auto":
            return _KV_BYTES.get(name)
        if m.quantized:
            return 1  # a quantized checkpoint may carry an fp8 KV cache scheme: assume the smallest
        dtype = d.get("dtype")
        return _DTYPE_BYTES.get(str(dtype), m.dtype_bytes) if dtype and dtype != "auto" else m.dtype_bytes

    def _mem_fraction(self, d: dict[str, FlagValue], tp: int, pp: int) -> tuple[float, str]:
        given = d.get("mem-fraction-static")
        if given is not None:
            return float(given), "flag"
        gpu = float(self.gpu_mib or 0)
        chunk = _int(d.get("chunked-prefill-size"))
        if chunk is None:
            chunk = 2048 if gpu < 35 * 1024 else 4096 if gpu < 60 * 1024 else 8192 if gpu < 160 * 1024 else 16384
        activation = max(chunk, 2048) if chunk > 0 else max(_int(d.get("max-prefill-tokens")) or 16384, 2048)
        # The CUDA-graph reserve is left out: a smaller reserve, a larger fraction, an optimistic pool.
        reserved = 512 + activation * 1.5 + tp * pp / 8 * 1024
        if gpu > 60 * 1024:
            reserved = max(reserved, 10 * 1024)
        return round((gpu - reserved) / gpu, 3), "SGLang's default"


def _int(value: FlagValue | None) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def launch_env(kind: str, env: dict[str, str]) -> dict[str, str]:
    """The environment SGLang will see: a process inherits ours, a container only gets the run file's."""
    return {**os.environ, **env} if kind == "process" else dict(env)
