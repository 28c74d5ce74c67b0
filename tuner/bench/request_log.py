"""A request log (your own traffic) read into typed records, and the traffic shape a workload replays from it.

Three formats, one JSON record a line (blank lines and lines that do not start with ``{`` are skipped, so a server's
stdout with other log lines in it reads too):

- OpenAI-format: a request with its response, as proxies and gateways log them. A time (``timestamp``, or the
  response's ``created``: Unix seconds or ISO 8601), ``usage: {prompt_tokens, completion_tokens}`` (top level or
  in ``response``), and optionally the prompt text (``messages`` or ``prompt``, top level or in ``request``).
- SGLang's own request log, ``--log-requests --log-requests-format json`` (to stdout or a ``--log-requests-target``
  folder): the ``request.finished`` events. Arrival is ``out.meta_info.request_received_ts`` when present, else the
  event's ``timestamp`` (when it finished) less ``e2e_latency``; lengths are ``prompt_tokens`` and
  ``completion_tokens``; the text is ``obj.text``. At ``--log-requests-level`` 0 and 1 SGLang leaves the text out,
  at 2 it cuts texts longer than 2048 characters to their ends (such a text counts as absent here); level 3 logs
  it whole. SGLang's plain-text log (``Receive: obj=GenerateReqInput(...)``, a Python repr) is not read.
- SGLang's ``--export-metrics-to-file`` (``sglang-request-metrics-*.log`` in ``--export-metrics-to-file-dir``):
  the request's fields as a JSON string in ``request_parameters`` (its ``text`` whole), then its meta_info at the
  top level; arrival as above, with ``response_sent_to_client_ts`` as the end time.

SGLang's request dumps (``--dump-requests-folder``, ``--crash-dump-folder``) are Python pickles of its own classes:
not read (unpickling runs code, and needs SGLang).

What is kept of the traffic (``Traffic``): each request's input and output length in tokens (the server's counts),
its arrival gap after the previous request, and its shared prefix: the earlier request whose text shares the
longest prefix with it, and how many tokens that is (the shared characters' share of its tokens, the smaller of
the two requests' estimates). Without the text, prefix sharing cannot be known and is not kept.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, ValidationError

from tuner.errors import TunerError

FORMATS = (
    'OpenAI-format {"timestamp": ..., "messages" or "prompt": ..., "usage": {"prompt_tokens": ..., '
    '"completion_tokens": ...}}, SGLang --log-requests-format json ("event": "request.finished") or SGLang '
    '--export-metrics-to-file ("request_parameters": ..., "prompt_tokens": ..., ...)'
)
# SGLang's --log-requests-level 2 keeps a long text's first and last 1024 characters around "...".
_SGLANG_CUT = 1024


class RequestLogError(TunerError, ValueError):
    """A request log that cannot be read as one; the message names the file (and line) and what to fix."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Usage(_Lenient):
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt


class _Message(_Lenient):
    role: str = ""
    content: str | list[Any] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: their text parts
            parts = (p.get("text", "") for p in self.content if isinstance(p, dict))
            return "".join(p for p in parts if isinstance(p, str))
        return self.content or ""


class _Body(_Lenient):
    """An OpenAI request or response body, or a log line that holds both at its top level."""

    messages: list[_Message] | None = None
    prompt: str | None = None
    usage: _Usage | None = None
    created: datetime | None = None

    def text(self) -> str | None:
        if self.messages is not None:
            return "\n".join(f"{m.role}\n{m.text()}" for m in self.messages)
        return self.prompt


class _OpenAILine(_Body):
    timestamp: datetime | None = None
    request: _Body | None = None
    response: _Body | None = None


class _MetaInfo(_Lenient):
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    e2e_latency: NonNegativeFloat | None = None
    request_received_ts: float | None = None


class _SGLangMetricsLine(_MetaInfo):
    """A line of SGLang's --export-metrics-to-file: the request's fields as a JSON string, then its meta_info."""

    request_parameters: str
    response_sent_to_client_ts: float | None = None


class _SGLangOut(_Lenient):
    meta_info: _MetaInfo


class _SGLangObj(_Lenient):
    text: str | list[Any] | None = None


class _SGLangFinished(_Lenient):
    timestamp: datetime
    obj: _SGLangObj
    out: _SGLangOut


@dataclass(frozen=True)
class LoggedRequest:
    arrival_s: float  # Unix seconds (or the log's own clock: only differences are used)
    input_tokens: int
    output_tokens: int
    text: str | None  # None: the log has no (whole) text for it


@dataclass(frozen=True)
class Traffic:
    """The shape a workload replays, in arrival order: per request its lengths, the gap before it (the first's
    is 0), and the earlier request it shares a prefix with (-1: none or unknown) and how many tokens."""

    input_lens: np.ndarray
    output_lens: np.ndarray
    gaps_s: np.ndarray
    parent: np.ndarray
    shared: np.ndarray
    with_text: int  # requests whose text was logged: prefix sharing is known among these only

    def __len__(self) -> int:
        return len(self.input_lens)

    @property
    def rate(self) -> float:
        """Requests per second over the log: the rate a level's rate is scaled from."""
        return (len(self) - 1) / float(self.gaps_s.sum())

    @property
    def gap_cv(self) -> float:
        """Coefficient of variation of the gaps between arrivals: 1 for Poisson arrivals, above 1 burstier."""
        gaps = self.gaps_s[1:]
        return float(gaps.std() / gaps.mean())

    @property
    def shared_fraction(self) -> float:
        """Share of all prompt tokens that repeat an earlier request's prefix."""
        return float(self.shared.sum() / self.input_lens.sum())

    def summary(self) -> dict[str, Any]:
        """What a trial record says about the log's traffic."""
        q = (50, 90, 99)
        return {
            "requests": len(self),
            "rate_rps": round(self.rate, 4),
            "gap_cv": round(self.gap_cv, 4),
            "input_tokens_p50_p90_p99": [int(v) for v in np.percentile(self.input_lens, q)],
            "output_tokens_p50_p90_p99": [int(v) for v in np.percentile(self.output_lens, q)],
            "prefix_sharing": (
                round(self.shared_fraction, 4)
                if self.with_text == len(self)
                else f"unknown for {len(self) - self.with_text} of {len(self)} requests (no prompt text logged)"
            ),
        }


def _where(path: str | Path, n: int) -> str:
    return f"{path}:{n}"


def _one_line(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    return f"{loc}: {e['msg'].lower()}" if loc else e["msg"].lower()


def _openai(rec: dict[str, Any], where: str) -> LoggedRequest:
    try:
        line = _OpenAILine.model_validate(rec)
    except ValidationError as exc:
        raise RequestLogError(f"{where}: {_one_line(exc)}") from None
    usage = line.usage or (line.response.usage if line.response else None)
    when = line.timestamp or line.created or (line.response.created if line.response else None)
    if usage is None or when is None:
        missing = " and ".join(k for k, v in (("a time", when), ("usage", usage)) if v is None)
        raise RequestLogError(f"{where}: no {missing}; expected a record of {FORMATS}")
    text = line.text()
    if text is None and line.request is not None:
        text = line.request.text()
    return LoggedRequest(when.timestamp(), usage.prompt_tokens, usage.completion_tokens, text)


def _arrival(meta: _MetaInfo, end: float | None, where: str) -> float:
    if meta.request_received_ts is not None:
        return meta.request_received_ts
    if end is not None and meta.e2e_latency is not None:
        return end - meta.e2e_latency
    raise RequestLogError(f"{where}: no meta_info request_received_ts, or end time and e2e_latency: no arrival time")


def _whole(text: object) -> str | None:
    if not isinstance(text, str):
        return None  # no text logged, or a batch's list
    if len(text) == 2 * _SGLANG_CUT + 3 and text[_SGLANG_CUT : _SGLANG_CUT + 3] == "...":
        return None  # cut by --log-requests-level 2: its prefix past the cut is unknown
    return text


def _sglang(rec: dict[str, Any], where: str) -> LoggedRequest:
    try:
        line = _SGLangFinished.model_validate(rec)
    except ValidationError as exc:
        raise RequestLogError(f"{where}: SGLang request.finished event: {_one_line(exc)}") from None
    meta = line.out.meta_info
    arrival = _arrival(meta, line.timestamp.timestamp(), where)
    return LoggedRequest(arrival, meta.prompt_tokens, meta.completion_tokens, _whole(line.obj.text))


def _sglang_metrics(rec: dict[str, Any], where: str) -> LoggedRequest:
    try:
        line = _SGLangMetricsLine.model_validate(rec)
        params = json.loads(line.request_parameters)
    except ValidationError as exc:
        raise RequestLogError(f"{where}: SGLang --export-metrics-to-file record: {_one_line(exc)}") from None
    except json.JSONDecodeError as exc:
        raise RequestLogError(f"{where}: request_parameters: not JSON ({exc.msg})") from None
    arrival = _arrival(line, line.response_sent_to_client_ts, where)
    text = params.get("text") if isinstance(params, dict) else None
    return LoggedRequest(arrival, line.prompt_tokens, line.completion_tokens, _whole(text))


def read_request_log(path: str | Path) -> list[LoggedRequest]:
    """The log's requests in arrival order. Raises ``RequestLogError``, one line, for a file that is not a
    request log of either format, or has fewer than two requests."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RequestLogError(
            f"{path}: not text (a binary file?); expected one JSON record a line of {FORMATS}"
        ) from None
    except OSError as exc:
        raise RequestLogError(f"{path}: cannot read it ({exc.strerror})") from None
    out: list[LoggedRequest] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.lstrip().startswith("{"):
            continue  # a blank line, or another log line beside SGLang's JSON events
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestLogError(
                f"{_where(path, n)}: not JSON ({exc.msg}); expected one record a line of {FORMATS}"
            ) from None
        if not isinstance(rec, dict):
            raise RequestLogError(f"{_where(path, n)}: not a JSON object; expected one record a line of {FORMATS}")
        if "event" in rec:  # SGLang's JSON request log
            if rec["event"] == "request.finished":
                out.append(_sglang(rec, _where(path, n)))
        elif "request_parameters" in rec:
            out.append(_sglang_metrics(rec, _where(path, n)))
        else:
            out.append(_openai(rec, _where(path, n)))
    if len(out) < 2:
        hint = (
            ": SGLang's plain-text request log is not read; restart it with --log-requests-format json"
            if "Finish: obj=" in raw
            else f"; expected one JSON record a line of {FORMATS}"
        )
        raise RequestLogError(f"{path}: {len(out)} requests (a replay needs at least 2){hint}")
    out.sort(key=lambda r: r.arrival_s)
    if out[-1].arrival_s == out[0].arrival_s:
        raise RequestLogError(f"{path}: every request arrives at the same time; a log's rate needs two times")
    return out


def _common(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slices (each compared at C speed)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def traffic(requests: list[LoggedRequest]) -> Traffic:
    """The traffic shape of requests in arrival order. A request's parent is the earlier request sharing the
    longest text prefix with it: among texts in sorted order that is one of its two neighbours."""
    n = len(requests)
    ins = np.array([max(1, r.input_tokens) for r in requests], dtype=np.int64)
    outs = np.array([max(1, r.output_tokens) for r in requests], dtype=np.int64)
    times = np.array([r.arrival_s for r in requests])
    gaps = np.diff(times, prepend=times[0])
    parent = np.full(n, -1, dtype=np.int64)
    shared = np.zeros(n, dtype=np.int64)
    seen: list[tuple[str, int]] = []  # earlier texts, sorted
    for i, r in enumerate(requests):
        if not r.text:
            continue
        k = bisect.bisect_left(seen, (r.text, -1))
        best, chars = -1, 0
        for text, j in seen[max(k - 1, 0) : k + 1]:
            c = _common(r.text, text)
            if c > chars:
                best, chars = j, c
        if best >= 0:
            other = requests[best].text
            assert other is not None  # only texts are in seen
            tokens = min(int(ins[i] * chars / len(r.text)), int(ins[best] * chars / len(other)))
            if tokens > 0:
                parent[i], shared[i] = best, tokens
        seen.insert(k, (r.text, i))
    return Traffic(ins, outs, gaps, parent, shared, sum(1 for r in requests if r.text))


_CACHE: dict[str, Traffic] = {}


def log_traffic(path: str) -> Traffic:
    """``traffic(read_request_log(path))``, read once per process."""
    if path not in _CACHE:
        _CACHE[path] = traffic(read_request_log(path))
    return _CACHE[path]
