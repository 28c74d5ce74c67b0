"""Progress of a running study: trial n of N, its phase, time spent and left, best so far and its gain.

On a terminal: a rich live display (redrawn every second, so a 10-minute torch compile visibly ticks) above
which one permanent line per finished trial is printed. Elsewhere (a log file, CI) it is silent unless forced;
forced, it writes plain lines: one per phase change and a heartbeat every ``HEARTBEAT_S`` while a phase lasts.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from tuner.trial.numbers import number
from tuner.trial.record import Budget, StudyRecord, baseline_record, best_or_none, no_baseline
from tuner.trial.runner import TrialResult

HEARTBEAT_S = 10.0
REDRAW_S = 1.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_tail_line(path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of a log (what a starting server is doing: loading weights, capturing graphs)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    line = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])  # SGLang's "[2025-01-01 12:00:00 TP0] " prefix
    return line if len(line) <= 90 else line[:89] + "…"


@dataclass
class _Active:
    number: int
    phase: str = "waiting"
    detail: str = ""
    started: float = field(default_factory=time.monotonic)
    phase_since: float = field(default_factory=time.monotonic)
    last_said: float = field(default_factory=time.monotonic)
    log_line: str = ""
    log_read: float = 0.0

    def text(self, now: float) -> str:
        out = f"trial {self.number} {self.phase} {now - self.phase_since:.0f} s"
        if self.detail:
            out += f" ({self.detail})"
        if self.log_line and self.phase == "starting":
            out += f": {self.log_line}"
        return out


class LineProgress:
    """Implements tuner.trial.Progress (``phase``, ``tick``, ``trial_done``); call ``close`` at the end."""

    def __init__(self, total: int, *, force: bool = False, stream=None, slots: int = 1, live: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = force or tty
        self.live = tty if live is None else live  # a live display; else plain lines and heartbeats
        # Plain output must stay plain (logs, tests): no colour, no wrapping at an imagined 80 columns.
        self.console = Console(
            file=self.stream, force_terminal=self.live, no_color=not self.live, highlight=False, soft_wrap=not self.live
        )
        self.slots = max(1, slots)
        self.t0 = time.monotonic()
        self._active: dict[int, _Active] = {}
        self._durations: list[float] = []
        self._finished = 0  # launched trials in the study (what the budget counts), as of the last trial_done
        self._predicted = 0  # and those predicted to fail, never launched
        self._last_done = self.t0
        self._best = ""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    # -- the Progress protocol
    def phase(self, trial: int, name: str, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            a = self._active.setdefault(trial, _Active(trial))
            changed = a.phase != name
            a.phase, a.detail, a.last_said = name, detail, now
            if changed:
                a.phase_since = now
                a.log_line = ""
            if self.live:
                self._start_live()
            else:
                self._line(
                    f"trial {trial} [{self._finished}/{self.total} done] {name}{': ' + detail if detail else ''} "
                    f"({max(0.0, now - a.started):.0f} s in)"
                )
                self._ensure_thread()

    def tick(self, trial: int, elapsed: float, log_path: Path | None = None) -> None:
        """Called while a server starts (about every 100 ms): remembers the log's last line for the display."""
        if not self.enabled:
            return
        with self._lock:
            a = self._active.get(trial)
            if a is None:
                return
            now = time.monotonic()
            # Reading the log tail is cheap, but not ten times a second.
            if log_path is not None and now - a.log_read >= 2.0:
                a.log_read = now
                a.log_line = log_tail_line(log_path)

    def trial_done(self, study: optuna.Study, result: TrialResult) -> None:
        n = result.plan.number
        now = time.monotonic()
        with self._lock:
            a = self._active.pop(n, None)
            # The estimate is of this machine's wall clock: a replayed trial's recorded 160 s took 0.2 s here.
            # A prediction takes no trial of the budget, and its milliseconds say nothing of a launch's time.
            if result.launched:
                self._durations.append(now - (a.started if a is not None else self._last_done))
            self._last_done = now
            self._count(study)
            self._best = best_line(study)
            if self.enabled:
                self._line(done_line(study, result, self.total) + f"; {self._best}")
                if self._live is not None:  # n/N now, not at the next redraw: a replay finishes many a second
                    self._live.refresh()

    def resume_from(self, study: optuna.Study) -> None:
        """A resumed study: count the trials it already completed, so n/N and the estimate are right."""
        self._count(study)
        self._best = best_line(study)

    def _count(self, study: optuna.Study) -> None:
        spent = Budget.of(study, self.total)
        self._finished, self._predicted = spent.launched, spent.predicted

    def _done_text(self) -> str:
        """``3/20 done``, and the trials predicted to fail, apart: they are not among the 20."""
        text = f"{self._finished}/{self.total} done"
        return text + (f" + {self._predicted} predicted to fail, not launched" if self._predicted else "")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    # -- the estimate
    def eta_s(self) -> float | None:
        if not self._durations:
            return None
        left = max(0, self.total - self._finished - len(self._active))
        mean = sum(self._durations) / len(self._durations)
        running_left = sum(max(0.0, mean - (time.monotonic() - a.started)) for a in self._active.values())
        return (mean * left + running_left) / self.slots

    def _head(self, now: float) -> str:
        eta = self.eta_s()
        return f"[{_clock(now - self.t0)} elapsed, " + (f"~{_clock(eta)} left]" if eta is not None else "? left]")

    def status_text(self) -> str:
        now = time.monotonic()
        with self._lock:
            active = sorted(self._active.values(), key=lambda a: a.number)
            return " | ".join([self._head(now), *(a.text(now) for a in active), self._best or self._done_text()])

    # -- output
    def _render(self) -> Group:
        """The live display, redrawn by rich every second: the study's line, then one line per running trial."""
        now = time.monotonic()
        with self._lock:
            active = sorted(self._active.values(), key=lambda a: a.number)
            head = Text.assemble(
                (self._head(now), "bold"),
                f" {self._done_text()}",
                (f" | {self._best}" if self._best else "", "green"),
            )
            lines = [head, *(Text(f"  {a.text(now)}", style="cyan") for a in active)]
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        return Group(*lines)

    def _start_live(self) -> None:
        if self._live is None and not self._stop.is_set():
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=1 / REDRAW_S,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(REDRAW_S):
            with self._lock:
                now = time.monotonic()
                for a in self._active.values():
                    if now - a.last_said >= HEARTBEAT_S:
                        a.last_said = now
                        extra = f": {a.log_line}" if a.log_line and a.phase == "starting" else ""
                        self._line(
                            f"trial {a.number} [{self._finished}/{self.total} done] still {a.phase} "
                            f"({now - a.phase_since:.0f} s in this phase{extra})"
                        )

    def _line(self, text: str) -> None:
        """A permanent line (above the live display on a terminal)."""
        try:
            self.console.print(f"[{_clock(time.monotonic() - self.t0):>7}] {text}", markup=False)
        except (OSError, ValueError):  # a closed pipe must not end the study
            pass


def done_line(study: optuna.Study, result: TrialResult, total: int) -> str:
    n = result.plan.number
    t = result.times
    if result.failure and not result.launched:
        return (
            f"trial {n} not launched, predicted to fail ({result.failure.name}: {result.failure_detail}); "
            f"it takes no trial of the budget"
        )
    if result.failure:
        return (
            f"trial {n} {result.failure.name} after {t.total_s:.0f} s "
            f"(startup {t.startup_s:.0f} s): {result.failure.hint}"
        )
    text = f"trial {n} ok in {t.total_s:.0f} s (startup {t.startup_s:.0f} s)"
    if result.replayed is not None:
        text = f"trial {n} replayed: {t.total_s:.0f} s recorded (startup {t.startup_s:.0f} s)"
    if result.benchmark and result.benchmark.slo_pass:  # a load search
        from tuner.bench.load_search import best_level

        best = best_level(result.levels, result.benchmark.slo_pass)
        text += (
            f": goodput {best.request_goodput:.2f} req/s at {best.request_rate:g} req/s, "
            f"{number(best.output_throughput, '.0f', ' tok/s')}, TTFT p99 {number(best.p99_ttft_ms, '.0f', ' ms')}, "
            f"TPOT p99 {number(best.p99_tpot_ms, '.1f', ' ms')}"
            if best
            else ": the SLO broke at the first rate"
        )
        return text + (f" ({result.benchmark.slo_broken})" if result.benchmark.slo_broken else "")
    at = StudyRecord.of(study).at_concurrency
    level = next((lv for lv in result.levels if lv.concurrency == at), result.levels[-1] if result.levels else None)
    if level is not None:
        text += (
            f": c={level.concurrency} {number(level.output_throughput, '.0f', ' tok/s')}, "
            f"TTFT p50 {number(level.median_ttft_ms, '.0f', ' ms')} / p99 {number(level.p99_ttft_ms, '.0f', ' ms')}, "
            f"TPOT p50 {number(level.median_tpot_ms, '.1f', ' ms')}"
        )
    if result.benchmark and result.benchmark.stopped_early:
        text += f" (stopped early: {result.benchmark.stopped_early})"
    return text


def best_line(study: optuna.Study) -> str:
    best = best_or_none(study)
    if best is None or not best.values:
        return "no feasible trial yet"
    metric = (StudyRecord.of(study).metrics or ("value",))[0]
    text = f"best: trial {best.number}, {metric} {best.values[0]:.1f}"
    if best.replay:
        text += " (replayed" + (", modelled)" if best.replay.modelled else ")")
    base = baseline_record(study)
    if base and base.values and base.values[0] and base.is_feasible:
        text += f" ({100 * (best.values[0] / base.values[0] - 1):+.1f}% vs baseline)"
    elif base is None and no_baseline(study):
        text += " (compared with nothing: the surface recorded no trial of SGLang's defaults)"
    return text
