"""Confirm the winners: re-run the top trials several times and rank them by a confidence bound, not one run.

One lucky benchmark run can put a config on top. Each confirmed trial's server is launched again, its workload
measured ``repeats`` times, and the objective's one-sided 95% bound (lower for a metric to maximise, upper for
one to minimise) decides. The results live in the study's ``confirmations`` attribute; export prefers them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import direction
from tuner.flags import ServerFlags
from tuner.metrics import t95
from tuner.study import Tuner


@dataclass(frozen=True)
class Confirmation:
    trial: int
    metric: str
    runs: tuple[float, ...]
    failure: str | None

    @property
    def mean(self) -> float:
        return float(np.mean(self.runs)) if self.runs else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.runs, ddof=1)) if len(self.runs) > 1 else float("nan")

    @property
    def bound(self) -> float:
        """The pessimistic end of the 95% interval: what this config can be relied on to deliver."""
        if self.failure or not self.runs:
            return -math.inf if direction(self.metric) == "maximize" else math.inf
        if len(self.runs) < 2:
            return self.mean
        half = t95(len(self.runs) - 1) * self.std / math.sqrt(len(self.runs))
        return self.mean - half if direction(self.metric) == "maximize" else self.mean + half

    def record(self) -> dict:
        return {"metric": self.metric, "runs": list(self.runs), "mean": self.mean,
                "std": None if math.isnan(self.std) else self.std, "bound": self.bound, "failure": self.failure}


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best feasible trials by the first objective, one per distinct flag set."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible") and t.values]
    seen, out = set(), []
    for t in sorted(done, key=lambda t: -sign * t.values[0]):
        key = tuple(sorted(t.user_attrs.get("flags", {}).items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


def confirm_top(tuner: Tuner, k: int = 3, repeats: int = 3) -> list[Confirmation]:
    study = tuner.study or tuner.prepare()
    metric = tuner.objective.metrics[0]
    workload = dataclasses.replace(tuner.workload, repeats=repeats)
    results = []
    for trial in top_trials(study, k):
        flags = ServerFlags(tuple(trial.user_attrs["flags"].items()))
        gpus = tuple(trial.user_attrs.get("gpus") or tuner.config.gpus[:1])
        plan = tuner.plan(trial.number, flags, gpus, int(flags.as_dict().get("port", tuner.config.launcher.port)))
        plan = dataclasses.replace(plan, trial_dir=plan.trial_dir.with_name(f"{trial.number}-confirm"))
        result = tuner.runner(study, None, workload).run(plan)
        if tuner.objective.load_search is not None:  # one whole search per repeat, 0 where nothing passed
            runs = tuple(tuner.objective.value(tuner.objective.level(result, rep), metric) or 0.0
                         for rep in range(repeats)) if result.ok else ()
        else:
            runs = tuple(getattr(lv, metric) for lv in result.levels
                         if lv.concurrency == tuner.objective.at_concurrency)
        results.append(Confirmation(trial.number, metric, runs, result.failure.name if result.failure else None))
    sign = 1 if direction(metric) == "maximize" else -1
    results.sort(key=lambda c: -sign * c.bound)
    study.set_user_attr("confirmations", {str(c.trial): c.record() for c in results})
    return results
