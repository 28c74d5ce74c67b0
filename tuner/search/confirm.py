"""Confirm the winners: re-run the top trials, the baseline and the references, and rank by a confidence bound.

One lucky benchmark run can put a config on top. Each confirmed trial's server is launched again, its workload
measured ``repeats`` times (the search's own run is left out: it was selected for being high), and the
objective's one-sided 95% bound (lower for a metric to maximise, upper for one to minimise) decides. The winner is
then compared with SGLang's defaults and each reference by Welch's t interval on the difference of means
(scipy.stats.ttest_ind, unequal variances); a gain whose 95% interval includes 0 is said to be inside the noise.
Results live in the study's ``confirmations`` (per trial) and ``confirmation`` (comparisons) attributes; export
prefers the confirmed winner.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import optuna
from optuna.trial import TrialState

from tuner.bench.workload import Workload
from tuner.config.run import RunConfig, direction
from tuner.search.objective import Objective
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import Compared, ConfirmationRound, ConfirmedTrial, StudyRecord, TrialRecord, records
from tuner.trial.runner import TrialPlan, TrialRunner


class Rerunner(Protocol):
    """What confirmation needs of the study's tuner (``tuner.search.study.Tuner`` is one): its study, objective,
    workload and run config, a plan and a runner for each re-run, and the event that cancels them."""

    study: optuna.Study | None
    objective: Objective
    workload: Workload
    config: RunConfig
    cancel: threading.Event

    def prepare(self) -> optuna.Study: ...

    def plan(self, number: int, tuned: ServerFlags, gpus: tuple[int, ...], port: int) -> TrialPlan: ...

    def runner(
        self, study: optuna.Study, trial: optuna.Trial | None, workload: Workload | None = None
    ) -> TrialRunner: ...


@dataclass(frozen=True)
class Confirmation:
    trial: int
    metric: str
    runs: tuple[float, ...]
    failure: str | None
    role: str = "top"  # top | baseline | reference <name>

    @property
    def mean(self) -> float:
        return float(np.mean(self.runs)) if self.runs else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.runs, ddof=1)) if len(self.runs) > 1 else float("nan")

    @property
    def half_width(self) -> float:
        """Half the two-sided 95% interval of the mean: the ``±`` of ``mean ± CI``."""
        if len(self.runs) < 2:
            return float("nan")
        return _t(0.975, len(self.runs) - 1) * self.std / math.sqrt(len(self.runs))

    @property
    def bound(self) -> float:
        """The pessimistic end of the one-sided 95% interval: what this config can be relied on to deliver."""
        if self.failure or not self.runs:
            return -math.inf if direction(self.metric) == "maximize" else math.inf
        if len(self.runs) < 2:
            return self.mean
        half = _t(0.95, len(self.runs) - 1) * self.std / math.sqrt(len(self.runs))
        return self.mean - half if direction(self.metric) == "maximize" else self.mean + half

    def record(self) -> ConfirmedTrial:
        def finite(x: float) -> float | None:
            return None if math.isnan(x) else x

        return ConfirmedTrial(
            metric=self.metric,
            runs=self.runs,
            bound=self.bound,
            role=self.role,
            mean=finite(self.mean),
            std=finite(self.std),
            ci95=finite(self.half_width),
            failure=self.failure,
        )


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric: the difference of means and its Welch 95% interval."""

    a: str
    b: str
    metric: str
    diff: float
    low: float
    high: float
    b_mean: float

    @property
    def within_noise(self) -> bool:
        return self.low <= 0 <= self.high

    def pct(self, x: float) -> float:
        return 100 * x / self.b_mean if self.b_mean else float("nan")

    def statement(self) -> str:
        better = (self.diff > 0) == (direction(self.metric) == "maximize")
        head = (
            f"{self.a} vs {self.b}: {self.pct(self.diff):+.1f}% {self.metric} "
            f"(95% CI {self.pct(self.low):+.1f}% to {self.pct(self.high):+.1f}%)"
        )
        if self.within_noise:
            return f"{head}: the difference is inside the noise (the interval includes 0)"
        return f"{head}: {'better' if better else 'worse'}, outside the noise"

    def record(self) -> Compared:
        return Compared(**dataclasses.asdict(self), within_noise=self.within_noise, statement=self.statement())


def _t(q: float, df: int) -> float:
    """Student's t quantile."""
    # scipy.stats takes ~1.2 s to import: imported by the confirmation that uses it, not by every `tune start`.
    from scipy import stats

    return float(stats.t.ppf(q, df))


def welch(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its two-sided 95% Welch interval (unequal variances, Welch-Satterthwaite df)."""
    diff = float(np.mean(a) - np.mean(b))
    if np.var(a) == 0 and np.var(b) == 0:  # no spread at all: the interval is the point (scipy gives NaN)
        return diff, diff, diff
    from scipy import stats  # see _t

    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return diff, float(ci.low), float(ci.high)


def top_trials(study: optuna.Study, k: int) -> list[TrialRecord]:
    """The k best feasible trials by the first objective, one per distinct flag set."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    done = [r for r in records(study, (TrialState.COMPLETE,)) if r.is_feasible and r.values]
    seen, out = set(), []
    for t in sorted(done, key=lambda t: -sign * (t.values or (0.0,))[0]):
        key = _key(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


def _key(t: TrialRecord) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in t.flag_values.items() if k != "port"))


def _label(c: Confirmation) -> str:
    what = {"top": "best", "baseline": "SGLang defaults"}.get(c.role, c.role)
    return f"{what} (trial {c.trial})"


def confirm_top(tuner: Rerunner, k: int = 3, repeats: int = 3) -> list[Confirmation]:
    """Re-run the top k, the baseline and the references; store and return them best bound first."""
    study = tuner.study or tuner.prepare()
    metric = tuner.objective.metrics[0]
    workload = dataclasses.replace(tuner.workload, repeats=repeats)
    chosen = top_trials(study, k)
    # A baseline no recorded trial ran is re-answered by the same model: nothing to compare the winner with.
    others = [
        t
        for t in records(study, (TrialState.COMPLETE,))
        if t.role != "top" and t.launched is not False and t.flag_values and not t.unrecorded_baseline
    ]
    for t in others:  # the latest run of each baseline/reference, unless it is among the top already
        if _key(t) not in {_key(c) for c in chosen}:
            chosen = [c for c in chosen if c.role != t.role] + [t]
    results = []
    for trial in chosen:
        assert trial.flags is not None and trial.number is not None
        flags = trial.flags
        gpus = tuple(trial.gpus or tuner.config.gpus[:1])
        plan = tuner.plan(trial.number, flags, gpus, int(flags.as_dict().get("port", tuner.config.launcher.port)))
        plan = dataclasses.replace(plan, trial_dir=plan.trial_dir.with_name(f"{trial.number}-confirm"))
        result = tuner.runner(study, None, workload).run(plan)
        if tuner.cancel.is_set():
            raise KeyboardInterrupt
        if tuner.objective.load_search is not None:  # one whole search per repeat, 0 where nothing passed
            runs = (
                tuple(
                    tuner.objective.value(tuner.objective.level(result, rep), metric) or 0.0 for rep in range(repeats)
                )
                if result.ok
                else ()
            )
        else:
            runs = tuple(
                getattr(lv, metric) for lv in result.levels if lv.concurrency == tuner.objective.at_concurrency
            )
        role = "top" if trial.unrecorded_baseline else trial.role  # among the best, never compared with as one
        results.append(Confirmation(trial.number, metric, runs, result.failure.name if result.failure else None, role))
    sign = 1 if direction(metric) == "maximize" else -1
    results.sort(key=lambda c: -sign * c.bound)
    comparisons = compare(results)
    StudyRecord(
        confirmations={c.trial: c.record() for c in results},
        confirmation=ConfirmationRound(
            repeats=repeats,
            metric=metric,
            after_trials=len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
            comparisons=tuple(c.record() for c in comparisons),
        ),
    ).write(study)
    return results


def compare(results: list[Confirmation]) -> list[Comparison]:
    """The winner (best bound) against the baseline and each reference, where both have two runs or more."""
    ok = [c for c in results if not c.failure and len(c.runs) >= 2]
    if not ok:
        return []
    winner, out = ok[0], []
    for other in ok[1:]:
        if other.role != "top":
            diff, low, high = welch(winner.runs, other.runs)
            out.append(Comparison(_label(winner), _label(other), winner.metric, diff, low, high, other.mean))
    return out


def confirm_study(tuner: Rerunner) -> list[Confirmation] | None:
    """At the end of a study (``confirm:`` in the run file): confirm once per set of completed trials."""
    c = tuner.config.confirm
    if c is None or tuner.study is None or not confirmation_due(tuner.config, tuner.study):
        return None
    return confirm_top(tuner, c.top, c.repeats)


def confirmation_due(config: RunConfig, study: optuna.Study) -> bool:
    """Whether the run file asks for a confirmation this study's completed trials have not had yet (none ran,
    or one was interrupted: it records nothing until it ends)."""
    c = config.confirm
    if c is None or c.top < 1:
        return False
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    last = StudyRecord.of(study).confirmation
    return not (last is not None and last.after_trials == done) and bool(top_trials(study, 1))
