"""Progress of a running study: trial n of N, its phase, time spent, best so far and its gain over the baseline."""

from __future__ import annotations

import sys
import threading
import time

import optuna

from tuner.trial import TrialResult


class LineProgress:
    """One line per phase change on stderr; silent when stderr is not a terminal unless ``force``."""

    def __init__(self, total: int, *, force: bool = False, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.t0 = time.monotonic()
        self._trial_t0: dict[int, float] = {}
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        if self.enabled:
            with self._lock:
                print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def phase(self, trial: int, name: str, detail: str = "") -> None:
        start = self._trial_t0.setdefault(trial, time.monotonic())
        self._say(f"trial {trial + 1}/{self.total} {name}{': ' + detail if detail else ''} "
                  f"({time.monotonic() - start:.0f} s in)")

    def trial_done(self, study: optuna.Study, result: TrialResult) -> None:
        n = result.plan.number
        outcome = result.failure.name if result.failure else "ok"
        self._say(f"trial {n + 1}/{self.total} done: {outcome} in {result.times.total_s:.0f} s; {best_line(study)}")


def best_line(study: optuna.Study) -> str:
    from tuner.export import NothingToExport, baseline_trial, best_trial

    try:
        best = best_trial(study)
    except NothingToExport:
        return "no feasible trial yet"
    metric = study.user_attrs.get("metrics", ["value"])[0]
    text = f"best: trial {best.number}, {metric} {best.values[0]:.1f}"
    base = baseline_trial(study)
    if base and base.values and base.values[0] and base.user_attrs.get("feasible"):
        text += f" ({100 * (best.values[0] / base.values[0] - 1):+.1f}% vs baseline)"
    return text
