"""SGLang's startup log, read for where a server's startup seconds went.

Real SGLang 0.5.17 lines (tests/data/sglang-0.5.17-h200-healthy.log), each stamped ``[YYYY-MM-DD HH:MM:SS]`` (with
``TP0``-style rank tags under TP/DP), in order::

    [..13:55:43] Multimodal feature transport auto-resolved ...      first line: imports are done
    [..13:56:14] Load weight begin. avail mem=139.13 GB              scheduler spawned, model config read
    [..13:56:14] Load weight end. elapsed=0.11 s, type=...
    [..13:56:18] Memory pool end. avail mem=6.20 GB                  KV pool allocated
    [..13:56:18] Capture target prefill CUDA graph begin. ...        0.5.5: "Capture cuda graph begin. ..."
    [..13:56:25] Capture target prefill CUDA graph end. elapsed=7.11 s, ...
    [..13:56:28] Capture target decode CUDA graph end. elapsed=3.09 s, ...   0.5.5: "... end. Time elapsed: 3.09 s."
    [..13:56:29] The server is fired up and ready to roll!           after its own warm-up request

SGLang 0.5.17 logs no JIT or compile step on its own line: kernels built on first use (triton, flashinfer, tvm-ffi,
torch.compile under --enable-torch-compile) land in whichever phase first ran them, mostly the CUDA-graph capture
and the warm-up (docs: a fresh machine adds ~80 s of builds to the first launch). The log's timestamps are whole
seconds, so a phase between two stamped lines is known to about a second; the ``elapsed=`` figures are exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime

_STAMP = re.compile(r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?)(?: [A-Z]+\d+)*\] (?P<msg>.*)$", re.M)
_LOAD_BEGIN = re.compile(r"^Load weight begin\b")
_LOAD_END = re.compile(r"^Load weight end\.(?: elapsed=(?P<s>[\d.]+) s)?")
_POOL_END = re.compile(r"^Memory pool end\b")
_CAPTURE_BEGIN = re.compile(r"^Capture (?:[\w-]+ )*(?:cuda|CUDA) graph begin\b")
_CAPTURE_END = re.compile(
    r"^Capture (?:[\w-]+ )*(?:cuda|CUDA) graph end\.(?: (?:elapsed=|Time elapsed: )(?P<s>[\d.]+) s)?"
)
_FIRED_UP = "The server is fired up and ready to roll!"

# (field, short label for status, long label for the report)
PHASES = (
    ("imports_s", "imports", "process start and imports (launch to the first log line)"),
    ("spawn_s", "spawn", "scheduler spawn, distributed init, model config (to 'Load weight begin')"),
    ("weights_s", "weights", "weights loaded"),
    ("kv_pool_s", "KV pool", "KV pool allocated (to 'Memory pool end')"),
    ("cuda_graph_s", "graphs", "CUDA-graph capture (kernels built on first use included)"),
    ("warmup_s", "warm-up", "warm-up until 'fired up'"),
)


def _at(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace(",", "."))
    except ValueError:
        return None


@dataclass(frozen=True)
class StartupPhases:
    """Seconds of each startup phase SGLang's log shows; None for a phase it did not log (or not reach)."""

    imports_s: float | None = None
    spawn_s: float | None = None
    weights_s: float | None = None
    kv_pool_s: float | None = None
    cuda_graph_s: float | None = None
    warmup_s: float | None = None
    reached: str | None = None  # the last phase the log reached ("fired up" for a server that started)

    @classmethod
    def of(cls, log: str, startup_s: float | None = None) -> StartupPhases:
        """The phases of one server's log; ``startup_s`` (launch to ready, as the tuner measured it) gives the
        imports, which no log line can: the time before the first stamped line."""
        first = load_begin = load_end = pool_end = capture_begin = capture_end = fired = None
        load_elapsed: float | None = None
        captured: list[float] = []
        reached = None
        for m in _STAMP.finditer(log):
            at, msg = _at(m["at"]), m["msg"].rstrip()
            if at is None:
                continue
            first = first or at
            if _LOAD_BEGIN.match(msg):
                load_begin, reached = at, "loading weights"
            elif mm := _LOAD_END.match(msg):
                load_end, reached = at, "weights loaded"
                load_elapsed = float(mm["s"]) if mm["s"] else None
            elif _POOL_END.match(msg):
                pool_end, reached = at, "KV pool allocated"
            elif _CAPTURE_BEGIN.match(msg):
                capture_begin, reached = capture_begin or at, "capturing CUDA graphs"
            elif mm := _CAPTURE_END.match(msg):
                capture_end, reached = at, "CUDA graphs captured"
                if mm["s"]:
                    captured.append(float(mm["s"]))
            elif msg == _FIRED_UP:
                fired, reached = at, "fired up"
                break
        if first is None:
            return cls(imports_s=round(startup_s, 2) if startup_s is not None and startup_s > 0 else None)

        def span(a: datetime | None, b: datetime | None) -> float | None:
            return round(max(0.0, (b - a).total_seconds()), 2) if a is not None and b is not None else None

        spawn: float | None
        weights = load_elapsed if load_elapsed is not None else span(load_begin, load_end)
        if load_begin is None and load_end is not None and load_elapsed is not None:
            spawn = round(max(0.0, (load_end - first).total_seconds() - load_elapsed), 2)
        else:
            spawn = span(first, load_begin)
        graphs = round(sum(captured), 2) if captured else span(capture_begin, capture_end)
        last_before_warmup = capture_end or pool_end
        logged = span(first, fired)
        imports = None
        if startup_s is not None and logged is not None:
            imports = round(max(0.0, startup_s - logged), 2)
        return cls(
            imports_s=imports,
            spawn_s=spawn,
            weights_s=weights,
            kv_pool_s=span(load_end, pool_end),
            cuda_graph_s=graphs,
            warmup_s=span(last_before_warmup, fired),
            reached=reached,
        )

    def record(self) -> dict[str, float | str]:
        """The phases that were logged: ``{"imports_s": 18.0, ..., "reached": "fired up"}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def read(cls, stored: dict | None) -> StartupPhases:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (stored or {}).items() if k in names})

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name, _, _ in PHASES)

    def summary(self) -> str:
        """Compact, for status: ``imports 18 / spawn 31 / weights 0.1 / KV pool 4 / graphs 10 / warm-up 1``."""
        parts = [
            f"{short} {_secs(getattr(self, name))}" for name, short, _ in PHASES if getattr(self, name) is not None
        ]
        if self.reached and self.reached != "fired up":
            parts.append(f"(last: {self.reached})")
        return " / ".join(parts)


def _secs(s: float) -> str:
    return f"{s:.1f}" if s < 10 else f"{s:.0f}"
