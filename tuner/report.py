"""Reports over a study: the trial table (tune status) and the comparison with the baseline."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from tuner.flags import format_value


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, failure class, objective values, key numbers and the tuned flags."""
    metrics = study.user_attrs.get("metrics", ["value"])
    fixed = _fixed_flags(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {
            "trial": t.number,
            "state": t.state.name,
            "class": a.get("failure_class", "-" if t.state == TrialState.RUNNING else "none"),
            "feasible": a.get("feasible", False),
        }
        for i, m in enumerate(metrics):
            row[m] = round(t.values[i], 2) if t.values else None
        row["startup_s"] = a.get("startup_s")
        row["gpu_peak_mib"] = a.get("gpu_peak_used_mib")
        flags = a.get("flags", {})
        row["flags"] = "baseline (SGLang defaults)" if a.get("baseline") else " ".join(
            f"--{k}" + ("" if v is True else f" {format_value(v)}") for k, v in flags.items()
            if k not in fixed and k not in ("model-path", "host", "port", "served-model-name") and v is not False
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _fixed_flags(study: optuna.Study) -> set[str]:
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("baseline"):
            return {k for k in t.user_attrs.get("flags", {})}
    return set()
