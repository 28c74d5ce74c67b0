"""SGLang's decode log lines, read for what they say about CUDA graphs.

SGLang derives its running-request cap and its largest captured decode CUDA graph independently. Once the running
batch outgrows that graph, decode steps run eagerly, without a graph, and can stay slow there (sgl-project/sglang
issue 33483: ITL 3.0 -> 12.6 ms). Its scheduler says so in every decode log line (scheduler_metrics_mixin.py,
0.5.5 to 0.5.17): ``Decode batch, #running-req: 64, #token: 33856, token usage: 0.04, cuda graph: True, gen
throughput (token/s): 2358.64, #queue-req: 0``. A score alone hides such a cliff; these lines show it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# "[2026-11-28 13:56:46] Decode batch, ..." or, with TP/DP ranks, "[2026-11-28 13:56:46 TP0] Decode batch (iter 5), ..."
_LINE = re.compile(
    r"^\[(?P<at>[^\]]*?)(?: [A-Z]+\d+)*\] Decode batch[^,]*, #running-req: (?P<running>\d+),"
    r".*?cuda graph: (?P<graph>True|False)",
    re.M,
)


@dataclass(frozen=True)
class DecodeGraphs:
    """What a server's decode log lines said about CUDA graphs: how many steps were logged, how many of them ran
    without a graph, from when and at which running batch sizes."""

    logged: int = 0
    graphless: int = 0
    first_graphless_at: str | None = None  # the log's own timestamp of the first graphless step
    graphless_min_running: int | None = None
    graphless_max_running: int | None = None
    largest_graphed_running: int | None = None  # the largest running batch that did decode with a graph

    @classmethod
    def of(cls, log: str) -> DecodeGraphs:
        logged = graphless = 0
        first_at: str | None = None
        without: list[int] = []
        with_graph: list[int] = []
        for m in _LINE.finditer(log):
            logged += 1
            running = int(m["running"])
            if m["graph"] == "True":
                with_graph.append(running)
                continue
            graphless += 1
            without.append(running)
            first_at = first_at or m["at"]
        return cls(
            logged=logged,
            graphless=graphless,
            first_graphless_at=first_at,
            graphless_min_running=min(without, default=None),
            graphless_max_running=max(without, default=None),
            largest_graphed_running=max(with_graph, default=None),
        )

    @classmethod
    def of_log(cls, path: Path, marks: list[int]) -> tuple[DecodeGraphs, tuple[DecodeGraphs, ...]]:
        """A trial server's whole log, and one span per level between consecutive byte offsets (``marks``: where
        each level began, then where the last ended), read once. A line being written at a mark belongs to the span
        it began in. No log yet: nothing logged."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(), ()

        def line_start(at: int) -> int:
            if not 0 < at < len(data):
                return at
            end = data.find(b"\n", at - 1)
            return len(data) if end < 0 else end + 1

        starts = [line_start(m) for m in marks]
        spans = tuple(cls.of(data[a:b].decode(errors="replace")) for a, b in itertools.pairwise(starts))
        return cls.of(data.decode(errors="replace")), spans

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> DecodeGraphs:
        return cls(**{f.name: d.get(f.name, getattr(cls(), f.name)) for f in fields(cls)})

    def brief(self) -> str | None:
        """A table cell: the graphless running batch sizes and the share of logged steps, e.g. ``65-80 (12/40)``."""
        return f"{self._batches()} ({self.graphless}/{self.logged})" if self.graphless else None

    def _batches(self) -> str:
        lo, hi = self.graphless_min_running, self.graphless_max_running
        return f"{lo}" if lo == hi else f"{lo}-{hi}"

    def summary(self) -> str | None:
        """One line for status, the report and the trial note; None when every logged decode step had a graph."""
        if not self.graphless:
            return None
        graphed = (
            f"; the largest batch decoded with a graph: {self.largest_graphed_running}"
            if self.largest_graphed_running is not None
            else ""
        )
        return (
            f"decode ran without a CUDA graph in {self.graphless} of {self.logged} logged steps, at {self._batches()} "
            f"running requests, first at {self.first_graphless_at}{graphed}: raise --cuda-graph-max-bs-decode or "
            f"lower --max-running-requests"
        )
