"""Which flags move the objective: each tuned flag's share of the objective's variance across the study's trials
(one-way ANOVA, epsilon-squared: corrected for the share any k groups explain by chance), with a bootstrap interval.

Optuna's default (PED-ANOVA at its 10% quantile) answers another question: what sets the very top trials apart from
the rest. On the demo study it put --mem-fraction-static first (0.98) because the top two trials share 0.7, and
--cuda-graph-max-bs-decode below 0.01 though it halves throughput at 64 streams. fANOVA needs scikit-learn, which the
tuner does not install.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

METHOD = (
    "share of the objective's variance explained by each flag alone (one-way ANOVA, epsilon-squared; "
    "a numeric flag with more than 6 values in 4 bins), 90% bootstrap interval over the trials"
)
BOOTSTRAP = 300


@dataclass(frozen=True)
class Importance:
    flag: str
    share: float  # 0..1
    low: float
    high: float


def _groups(values: list) -> np.ndarray:
    """Each trial's group for one flag: its value, or its quartile when a number takes more than 6 values."""
    distinct = sorted({repr(v) for v in values})
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(distinct) > 6:
        x = np.asarray(values, dtype=float)
        edges = np.unique(np.quantile(x, [0.25, 0.5, 0.75]))
        return np.searchsorted(edges, x, side="right")
    index = {d: i for i, d in enumerate(distinct)}
    return np.asarray([index[repr(v)] for v in values])


def _epsilon_squared(y: np.ndarray, g: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    groups = np.unique(g)
    k, n = len(groups), len(y)
    between = float(sum((g == i).sum() * (y[g == i].mean() - y.mean()) ** 2 for i in groups))
    within = total - between
    if n <= k or k < 2:
        return 0.0
    return max(0.0, (between - (k - 1) * within / (n - k)) / total)


def trials_for(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials with tuned flags (not the baseline, which has none), infeasible ones included at the value
    the search saw: a flag that breaks the server moves the objective as much as one that slows it."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params and t.values]


def importances(study: optuna.Study, objective: int = 0, seed: int = 0) -> list[Importance]:
    """Flags by their share of one objective's variance (the first: the report's), largest first; [] with fewer
    than 3 trials."""
    trials = trials_for(study)
    if len(trials) < 3:
        return []
    y = np.asarray([t.values[objective] for t in trials], dtype=float)
    flags = sorted({p for t in trials for p in t.params})
    groups = {f: _groups([t.params.get(f) for t in trials]) for f in flags}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(BOOTSTRAP)]
    out = []
    for f, g in groups.items():
        boot = [_epsilon_squared(y[i], g[i]) for i in draws]
        low, high = np.quantile(boot, [0.05, 0.95])
        out.append(Importance(f, _epsilon_squared(y, g), float(low), float(high)))
    return sorted(out, key=lambda i: -i.share)


def figure(study: optuna.Study, metric: str):
    """A horizontal bar per flag with its interval; None with too few trials."""
    import plotly.graph_objects as go

    found = importances(study)
    if not found:
        return None
    found = found[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[i.share for i in found],
            y=[i.flag for i in found],
            orientation="h",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [i.high - i.share for i in found],
                "arrayminus": [max(0.0, i.share - i.low) for i in found],
            },
            text=[f"{i.share:.2f} ({i.low:.2f}-{i.high:.2f})" for i in found],
            textposition="outside",
            cliponaxis=False,
        )
    )
    fig.update_layout(
        xaxis_title=f"share of {metric}'s variance ({len(trials_for(study))} trials)",
        xaxis_range=[0, 1.15],
        margin={"l": 220},
    )
    return fig
