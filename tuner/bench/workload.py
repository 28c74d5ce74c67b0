"""Workload description for the benchmark client: load levels, SLOs, prompt generation and arrival schedules.

Everything here is pure (no I/O except reading a dataset file) and seeded, so a workload is reproducible:
the same ``Workload`` gives the same prompts and the same Poisson arrival times on every run.

Prompt kinds
------------
- ``ids``: ``input_len`` random token ids drawn uniformly from ``[IDS_LOW, IDS_HIGH)`` and sent as a list of ids
  (``prompt`` for /v1/completions, ``input_ids`` for /generate). The server does not re-tokenize them, so the
  prompt length is exact. This is the analogue of bench_serving's ``random-ids`` with ``--tokenize-prompt``; its
  default (without that flag) decodes the ids to text and the server re-encodes it, which changes the length.
- ``text``: random words from a small fixed vocabulary, ``input_len`` words. Real token counts depend on the
  tokenizer; the client records ``usage.prompt_tokens`` from the server when it is reported.
- ``dataset``: a ShareGPT-style JSON (list) or JSONL file; the first turn of ``conversations`` is the prompt.
  When the level's ``output_len`` is 0 the request's ``max_tokens`` is the word count of the second (gpt) turn.

Shapes (bench_serving's datasets, for ids and text prompts)
------------------------------------------------------------
- random, with ``range_ratio`` (``--random-range-ratio``): each request's input and output length is drawn
  uniformly from the integers ``[max(int(len * range_ratio), 1), len]``, as sglang 0.5's ``compute_random_lens``.
- shared prefix (``generated-shared-prefix``): ``groups`` system prompts of ``system_prompt_len`` tokens, each
  followed by ``prompts_per_group`` different questions of ``question_len`` tokens; requests are built group by
  group and then shuffled, so groups interleave. A level with more requests than ``groups * prompts_per_group``
  cycles through the groups again with new questions.

Your traffic (``request_log``, tuner/bench/request_log.py): a level's k-th request is the log's k-th (again from
the start past its end), with its input and output length and its shared prefix: a request that shared a prefix
with an earlier one in the log repeats that request's first tokens (ids or words) exactly, the rest is random.
Measured and warm-up prompts draw their random parts from different streams, so they share nothing.

Arrivals: with a request rate, gaps are gamma distributed with shape ``burstiness`` and scale
``1 / (rate * burstiness)`` (bench_serving's ``--burstiness``; mean gap 1/rate; 1 is a Poisson process, below 1
burstier, above 1 more regular). A request log's arrivals are its own gaps (past the log's end, one mean gap and
the log's gaps again), scaled so that the level's mean gap is 1/rate: its bursts keep their shape at every rate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tuner.bench.request_log import Traffic, log_traffic
from tuner.errors import TunerError

# Token ids for prompt_kind "ids": inside every common vocabulary (>= 32k) and above the special/byte tokens.
IDS_LOW = 1000
IDS_HIGH = 30000

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "if",
    "so",
    "no",
    "will",
    "more",
    "other",
    "its",
    "time",
    "can",
    "some",
    "only",
    "into",
    "them",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "these",
    "like",
    "over",
    "such",
    "our",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "system",
    "water",
    "house",
    "light",
    "river",
    "garden",
    "market",
    "window",
    "summer",
    "number",
    "paper",
    "music",
    "table",
]


@dataclass(frozen=True)
class Level:
    """One measurement: a fixed load shape against the running server."""

    concurrency: int
    input_len: int
    output_len: int
    num_prompts: int
    request_rate: float | None = None  # Poisson arrivals in req/s; None: send as fast as concurrency allows


@dataclass(frozen=True)
class SLO:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))


@dataclass(frozen=True)
class SharedPrefix:
    """bench_serving's generated-shared-prefix dataset (``--gsp-*``)."""

    groups: int = 16
    prompts_per_group: int = 16
    system_prompt_len: int = 2048
    question_len: int = 128
    output_len: int = 256

    @property
    def input_len(self) -> int:
        return self.system_prompt_len + self.question_len


@dataclass(frozen=True)
class StableWarmup:
    """Before the first measured level, bursts of requests at the level's batch size until two consecutive
    bursts' median TTFT and median ITL agree within ``tolerance`` (relative), or ``max_s`` has passed: kernels
    built on first use (triton, flashinfer, tvm-ffi JIT; 215 s on a fresh H200 with flashinfer, and its first
    measured level still compiling: docs/h200-chat.md) are built before anything is measured."""

    tolerance: float = 0.2
    max_s: float = 60.0
    max_burst: int = 64  # requests per burst at most (the level's concurrency, when smaller)
    output_len: int = 32  # tokens per warm-up request: enough for an ITL


@dataclass(frozen=True)
class Workload:
    levels: tuple[Level, ...]
    endpoint: str = "completions"  # completions | chat | generate
    prompt_kind: str = "ids"  # ids (random token ids) | text (random text) | dataset
    dataset: str | None = None  # ShareGPT-style JSON/JSONL
    seed: int = 1
    warmup_requests: int = 2
    flush_cache: bool = True
    repeats: int = 1
    slo: SLO = field(default_factory=SLO)
    request_timeout_s: float = 600.0
    range_ratio: float = 1.0  # bench_serving --random-range-ratio: lengths uniform in [len * ratio, len]
    burstiness: float = 1.0  # bench_serving --burstiness: gamma shape of the arrival gaps; 1 = Poisson
    shared_prefix: SharedPrefix | None = None
    request_log: str | None = None  # your traffic: its lengths, shared prefixes and arrival gaps (request_log.py)
    stable_warmup: StableWarmup | None = None  # None: only ``warmup_requests`` before each level

    def tokens_in_flight(self) -> int:
        """The most tokens the requests hold at once: at each level, concurrency x (input + output); a KV pool
        smaller than this queues or retracts requests (tuner.sglang.kv)."""
        return max(
            (min(lv.concurrency, lv.num_prompts) * (lv.input_len + lv.output_len) for lv in self.levels), default=0
        )

    def longest_request(self) -> int | None:
        """The most tokens one request holds (prompt and output); None for a dataset, whose are not known in tokens."""
        if self.dataset:
            return None
        if self.request_log is not None:
            t = log_traffic(self.request_log)
            return int((t.input_lens + t.output_lens).max())
        return max(lv.input_len + lv.output_len for lv in self.levels)

    def describe(self) -> dict:
        """What a trial record says about the prompts and arrivals (levels are recorded on their own)."""
        if self.shared_prefix is not None:
            shape = {"dataset": "shared-prefix", **vars(self.shared_prefix)}
        elif self.request_log is not None:
            shape = {"dataset": "request-log", "path": self.request_log, **log_traffic(self.request_log).summary()}
        elif self.prompt_kind == "dataset":
            shape = {"dataset": "sharegpt", "path": self.dataset}
        else:
            lv = self.levels[0]
            shape = {
                "dataset": "random",
                "input_len": lv.input_len,
                "output_len": lv.output_len,
                "range_ratio": self.range_ratio,
            }
        return {
            **shape,
            "prompt_kind": self.prompt_kind,
            "endpoint": self.endpoint,
            "seed": self.seed,
            "arrival": "log" if self.request_log else "poisson" if self.burstiness == 1.0 else "gamma",
            "burstiness": self.burstiness,
        }

    def validate(self) -> None:
        if self.endpoint not in ("completions", "chat", "generate"):
            raise ValueError(f"unknown endpoint {self.endpoint!r} (completions | chat | generate)")
        if self.prompt_kind not in ("ids", "text", "dataset"):
            raise ValueError(f"unknown prompt_kind {self.prompt_kind!r} (ids | text | dataset)")
        if self.prompt_kind == "dataset" and not self.dataset:
            raise ValueError("prompt_kind 'dataset' needs Workload.dataset (a ShareGPT-style JSON/JSONL path)")
        if self.endpoint == "chat" and self.prompt_kind == "ids":
            raise ValueError("the chat endpoint takes text: use prompt_kind 'text' or 'dataset'")
        if not self.levels:
            raise ValueError("a workload needs at least one level")
        if not 0.0 <= self.range_ratio <= 1.0:
            raise ValueError(f"range_ratio {self.range_ratio:g} must be in [0, 1]")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness {self.burstiness:g} must be above 0")
        sp = self.shared_prefix
        if sp is not None:
            if self.prompt_kind == "dataset":
                raise ValueError("a shared-prefix workload generates its prompts: use prompt_kind ids or text")
            if min(sp.groups, sp.prompts_per_group, sp.system_prompt_len, sp.question_len, sp.output_len) < 1:
                raise ValueError(f"{sp}: every shared-prefix number must be at least 1")
        if self.request_log is not None and (
            self.prompt_kind == "dataset" or sp is not None or self.range_ratio != 1.0 or self.burstiness != 1.0
        ):
            raise ValueError(
                "a request-log workload takes its lengths, prefixes and arrivals from the log: prompt_kind ids "
                "or text, and no shared_prefix, range_ratio or burstiness"
            )
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        for lv in self.levels:
            if lv.concurrency < 1 or lv.num_prompts < 1:
                raise ValueError(f"{lv}: concurrency and num_prompts must be >= 1")
            if lv.output_len < 0 or lv.input_len < 0:
                raise ValueError(f"{lv}: lengths must be >= 0")
            if lv.output_len == 0 and self.prompt_kind != "dataset":
                raise ValueError(f"{lv}: output_len 0 is only meaningful with a dataset")
            if self.prompt_kind != "dataset" and lv.input_len < 1:
                raise ValueError(f"{lv}: input_len must be >= 1")
            if lv.request_rate is not None and not lv.request_rate > 0:
                raise ValueError(f"{lv}: request_rate must be > 0 or None")


# LoadSearch fields that choose which rates a search spends its levels on, not what a level measures: a replay of
# a recorded search may change them (tuner/trial/replay.py), and the records say which were on.
SEARCH_STRATEGY = ("from_incumbent", "saturation_stop", "interpolate", "cut_short")


@dataclass(frozen=True)
class LoadSearch:
    """The SLO-goodput load search's rates and level sizes (run by tuner/bench/load_search.py)."""

    start_rate: float = 2.0
    max_rate: float = 128.0
    factor: float = 2.0
    bisect_steps: int = 2
    level_duration_s: float = 20.0
    min_prompts: int = 32
    max_concurrency: int | None = None
    # How the search spends its levels (issue 22); each off gives the plain ramp-and-bisect of before.
    # from_incumbent: start a trial near the highest rate the study's best feasible trial held (one grid level
    # below it first), and stop a trial that breaks the SLO there: it cannot beat the incumbent.
    from_incumbent: bool = True
    # saturation_stop: stop rising once completed requests/s stop rising with the offered rate (see
    # load_search.saturated): a higher rate cannot raise goodput, which is at most that.
    saturation_stop: bool = True
    # interpolate: between the last passing and the first failing rate, probe where the binding limit's ratio,
    # log-linear in the rate, crosses 1 (snapped down to the bisections' grid) instead of the midpoint.
    interpolate: bool = True
    # cut_short: a level ends once its verdict is settled, when enough requests are already past a percentile
    # limit that the level's statistic must be past it too; in-flight requests are cancelled (load_search.settled).
    # A level that holds runs to its end.
    cut_short: bool = True

    def validate(self) -> None:
        if not 0 < self.start_rate <= self.max_rate:
            raise ValueError(f"start_rate {self.start_rate:g} must be above 0 and at most max_rate {self.max_rate:g}")
        if not self.factor > 1:
            raise ValueError(f"factor {self.factor:g} must be above 1")
        if self.bisect_steps < 0 or self.min_prompts < 1 or not self.level_duration_s > 0:
            raise ValueError("bisect_steps must be >= 0, min_prompts >= 1 and level_duration_s > 0")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency {self.max_concurrency} must be at least 1")

    def level(self, template: Level, rate: float) -> Level:
        n = max(self.min_prompts, math.ceil(rate * self.level_duration_s))
        return replace(template, request_rate=rate, num_prompts=n, concurrency=self.max_concurrency or n)


@dataclass(frozen=True)
class Prompt:
    """One request's prompt: ``ids`` (token ids) or ``text``; ``prompt_len`` is the nominal length in tokens
    (exact for ids, words for text); ``output_len`` is the max_tokens to ask for. ``ids`` is a numpy array:
    a Python list of 32k ints per long-context prompt would cost ~1 MB each."""

    prompt_len: int
    output_len: int
    ids: np.ndarray | None = None
    text: str | None = None
    group: int | None = None  # shared-prefix group


# ---------------------------------------------------------------------------------------------- helpers


def concurrency_sweep(
    input_len: int,
    output_len: int,
    concurrencies: Sequence[int],
    num_prompts: int | None = None,
    request_rate: float | None = None,
) -> tuple[Level, ...]:
    """One level per concurrency. ``num_prompts`` default: ``max(4 * c, 8)`` so every slot turns over at least
    four times (the ramp-up and drain tails are then a minor part of the measurement)."""
    return tuple(
        Level(
            concurrency=int(c),
            input_len=int(input_len),
            output_len=int(output_len),
            num_prompts=int(num_prompts) if num_prompts is not None else max(4 * int(c), 8),
            request_rate=request_rate,
        )
        for c in concurrencies
    )


def seed_response_time(input_len: int = 128, num_prompts: int = 5) -> tuple[Level, ...]:
    """The seed's single-user test: one stream, outputs of 10 / 50 / 100 / 500 tokens."""
    return tuple(
        Level(concurrency=1, input_len=input_len, output_len=o, num_prompts=num_prompts) for o in (10, 50, 100, 500)
    )


def seed_concurrency(input_len: int = 128, output_len: int = 128, num_prompts: int | None = None) -> tuple[Level, ...]:
    """The seed's concurrency test: 1, 5, 10 and 20 simultaneous users."""
    return concurrency_sweep(input_len, output_len, (1, 5, 10, 20), num_prompts=num_prompts)


def arrival_times(level: Level, seed: int, burstiness: float = 1.0) -> np.ndarray | None:
    """Offsets in seconds from the level start at which each request is released (then still capped by the
    concurrency semaphore), or None when requests are sent as fast as concurrency allows.

    Like bench_serving: the first request goes at t=0 and each next one after a gamma gap of shape
    ``burstiness`` and scale ``1/(request_rate * burstiness)`` (mean ``1/request_rate``); burstiness 1 is a
    Poisson process, drawn as exponential gaps."""
    if level.request_rate is None or math.isinf(level.request_rate):
        return None
    rng = np.random.default_rng([int(seed), 0x5EED, level.num_prompts])
    if burstiness == 1.0:
        gaps = rng.exponential(1.0 / level.request_rate, size=level.num_prompts)
    else:
        gaps = rng.gamma(burstiness, 1.0 / (level.request_rate * burstiness), size=level.num_prompts)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def level_arrivals(workload: Workload, level: Level) -> np.ndarray | None:
    """``arrival_times`` of the level, or for a request-log workload the log's gaps at the level's rate."""
    if workload.request_log is None:
        return arrival_times(level, workload.seed, workload.burstiness)
    if level.request_rate is None or math.isinf(level.request_rate):
        return None
    return log_arrivals(log_traffic(workload.request_log), level.num_prompts, level.request_rate)


def log_arrivals(t: Traffic, n: int, rate: float) -> np.ndarray:
    """Offsets of ``n`` requests replaying the log's gaps: the k-th request's gap is the log's k-th (after the
    log's last request, one mean gap, then the log's gaps again), all scaled by one factor so that the level's
    span is ``(n - 1) / rate``: its offered rate is the level's, whichever part of the log it replays."""
    gaps = t.gaps_s.copy()
    gaps[0] = 1.0 / t.rate  # the gap into a repeat of the log
    gaps = np.resize(gaps, n)
    gaps[0] = 0.0
    span = float(gaps.sum())
    if span > 0:  # else the log sent these n at one instant, and so does the level
        gaps *= (n - 1) / rate / span
    return np.cumsum(gaps)


def _level_rng(seed: int, level: Level, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), salt, level.input_len, level.output_len, level.num_prompts])


def random_lens(full_len: int, range_ratio: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """bench_serving's ``compute_random_lens``: uniform integers in ``[max(int(full_len * ratio), 1), full_len]``."""
    return rng.integers(max(int(full_len * range_ratio), 1), full_len + 1, size=n)


def _segments(kind: str, lengths: Sequence[int] | np.ndarray, rng: np.random.Generator) -> list:
    """One random ids array or text per length, drawn as one flat stream (fast for 32k-token prompts)."""
    if kind == "ids":
        flat = rng.integers(IDS_LOW, IDS_HIGH, size=int(sum(lengths)), dtype=np.int64)
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    words = np.asarray(_WORDS)
    flat = words[rng.integers(0, len(_WORDS), size=int(sum(lengths)))]
    return [" ".join(part) for part in np.split(flat, np.cumsum(lengths)[:-1])] if len(lengths) else []


def _prompt(kind: str, body, prompt_len: int, output_len: int, group: int | None = None) -> Prompt:
    if kind == "ids":
        return Prompt(prompt_len, output_len, ids=body, group=group)
    return Prompt(prompt_len, output_len, text=body, group=group)


def shared_prefix_prompts(workload: Workload, n: int, rng: np.random.Generator) -> list[Prompt]:
    """bench_serving's generated-shared-prefix: per group one system prompt (the same in every level of the
    workload, seeded by the workload seed alone), per request a new question; built group by group, then
    shuffled."""
    sp = workload.shared_prefix
    assert sp is not None, "a shared-prefix workload's prompts"
    kind = workload.prompt_kind
    systems = _segments(kind, [sp.system_prompt_len] * sp.groups, np.random.default_rng([int(workload.seed), 0x5157]))
    per_round = sp.groups * sp.prompts_per_group
    groups = [(k % per_round) // sp.prompts_per_group for k in range(n)]
    questions = _segments(kind, [sp.question_len] * n, rng)
    prompts = []
    for g, q in zip(groups, questions, strict=True):
        body = np.concatenate([systems[g], q]) if kind == "ids" else f"{systems[g]}\n\n{q}"
        prompts.append(_prompt(kind, body, sp.input_len, sp.output_len, g))
    return [prompts[int(i)] for i in rng.permutation(n)]


def request_log_prompts(workload: Workload, n: int, rng: np.random.Generator) -> list[Prompt]:
    """The log's requests in order, ``n`` of them (from the start again past the log's end): each its lengths,
    and the first ``shared`` tokens of its parent's prompt in the same pass over the log, then random ones."""
    assert workload.request_log is not None, "a request-log workload's prompts"
    t = log_traffic(workload.request_log)
    kind = workload.prompt_kind
    bodies: list = []
    for start in range(0, n, len(t)):
        m = min(len(t), n - start)
        fresh = _segments(kind, t.input_lens[:m] - t.shared[:m], rng)  # ids, or words (split below)
        this: list = []
        for i in range(m):
            body = fresh[i] if kind == "ids" else fresh[i].split()
            if t.shared[i]:
                head = this[t.parent[i]][: t.shared[i]]
                body = np.concatenate([head, body]) if kind == "ids" else head + body
            this.append(body)
        bodies += this
    return [
        _prompt(
            kind, b if kind == "ids" else " ".join(b), int(t.input_lens[k % len(t)]), int(t.output_lens[k % len(t)])
        )
        for k, b in enumerate(bodies)
    ]


class DatasetError(TunerError, ValueError):
    """A ShareGPT dataset file that cannot be read as one; the message names the file (and line) and what to fix."""


_SHAPES = (
    'ShareGPT {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]} or OpenAI '
    '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'
)
_PROMPT_ROLES = ("human", "user")


def _text(turn: object) -> object:
    return turn.get("value", turn.get("content", "")) if isinstance(turn, dict) else str(turn)


def _role(turn: object) -> object:
    return turn.get("from", turn.get("role")) if isinstance(turn, dict) else None


def _exchange(rec: object) -> tuple[str, int] | None:
    """(prompt, reference output length in words) of a record's first prompt and its reply; None if it has none."""
    if not isinstance(rec, dict):
        return None
    conv = rec.get("conversations", rec.get("conversation", rec.get("messages")))
    if not isinstance(conv, list) or len(conv) < 2:
        return None
    start = 0
    if any(_role(t) is not None for t in conv):  # the first user turn (a system prompt may come before it)
        start = next((i for i, t in enumerate(conv) if _role(t) in _PROMPT_ROLES), len(conv))
    if start + 1 >= len(conv):
        return None
    prompt, reply = _text(conv[start]), _text(conv[start + 1])
    if not prompt or not isinstance(prompt, str):
        return None  # no text to send (a JSON null, or content parts)
    return prompt, max(1, len(reply.split()) if isinstance(reply, str) else 1)


def load_sharegpt(path: str | Path) -> list[tuple[str, int]]:
    """(prompt, reference output length in words) for every conversation with a prompt and a reply: ShareGPT
    records (``conversations``) or OpenAI chat records (``messages``), as a JSON list or JSONL. Raises
    ``DatasetError``, one line, for a file that is none of these."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not text (a binary file?); expected a JSON or JSONL file of {_SHAPES}") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror})") from None
    if raw.lstrip().startswith("["):
        try:
            records = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    else:
        records = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}:{n}: not JSON ({exc.msg}); a dataset is a JSON list, or one JSON record a line, of "
                    f"{_SHAPES}"
                ) from None
    out = [e for rec in (records if isinstance(records, list) else [records]) if (e := _exchange(rec))]
    if not out:
        raise DatasetError(f"{path}: no conversation with a prompt and a reply; expected records of {_SHAPES}")
    return out


_DATASET_CACHE: dict[str, list[tuple[str, int]]] = {}


def read_dataset(path: str) -> list[tuple[str, int]]:
    """``load_sharegpt(path)``, read once per process."""
    if path not in _DATASET_CACHE:
        _DATASET_CACHE[path] = load_sharegpt(path)
    return _DATASET_CACHE[path]


def build_prompts(workload: Workload, level: Level, *, warmup: bool = False, n: int | None = None) -> list[Prompt]:
    """The level's prompts, seeded by (workload.seed, level shape). Warm-up prompts use a different stream so
    they never share a prefix with the measured ones."""
    n = level.num_prompts if n is None else n
    rng = _level_rng(workload.seed, level, 0xA11CE if warmup else 0x9A7)
    kind = workload.prompt_kind
    if workload.shared_prefix is not None:
        return shared_prefix_prompts(workload, n, rng)
    if workload.request_log is not None:
        return request_log_prompts(workload, n, rng)
    if kind in ("ids", "text"):
        if workload.range_ratio == 1.0:  # no draw: the same prompts per seed as fixed-length workloads always had
            ins, outs = np.full(n, level.input_len), np.full(n, level.output_len)
        else:
            ins = random_lens(level.input_len, workload.range_ratio, n, rng)
            outs = random_lens(level.output_len, workload.range_ratio, n, rng)
        return [_prompt(kind, b, int(i), int(o)) for b, i, o in zip(_segments(kind, ins, rng), ins, outs, strict=True)]
    # dataset
    data = read_dataset(str(workload.dataset))
    order = rng.permutation(len(data))
    prompts = []
    for i in range(n):
        text, ref_out = data[int(order[i % len(order)])]
        out_len = level.output_len if level.output_len > 0 else ref_out
        prompts.append(Prompt(len(text.split()), out_len, text=text))
    return prompts
