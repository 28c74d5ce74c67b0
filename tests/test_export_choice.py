"""Issue 25, piece 2: after confirmation, export deploys the confirmed config overriding the fewest of SGLang's
defaults among those whose mean lies within the winner's 95% interval, and says so; without confirmation, or
with nothing simpler inside the interval, it deploys the winner."""

from __future__ import annotations

import json

import optuna
import pytest

from tuner.search.confirm import Confirmation
from tuner.serve.process import ProcessLauncher
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import NO_FAILURE, StudyRecord, TrialRecord, Verdict, export_choice, overridden
from tuner.views.export import export_best
from tuner.views.report import build_report

BASE = {"model-path": "m", "host": "127.0.0.1", "port": 30000, "tp-size": 1}
METRIC = "output_throughput"


def _study(simpler_runs: tuple[float, ...] | None, *, confirmed: bool = True) -> optuna.Study:
    """Trial 0: the baseline; trial 1: three flags overridden, the best; trial 2: one flag overridden."""
    study = optuna.create_study(direction="maximize", study_name="s")
    configs = [
        ({}, 100.0, True),
        ({"mem-fraction-static": 0.9, "schedule-policy": "lof", "chunked-prefill-size": 8192}, 120.0, False),
        ({"schedule-policy": "lof", "enable-mixed-chunk": False}, 118.0, False),
    ]
    for extra, value, baseline in configs:
        record = TrialRecord(
            baseline=baseline, flags=ServerFlags.of({**BASE, **extra}), failure=Verdict(NO_FAILURE), feasible=True
        )
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=record.attrs()))
    if confirmed:
        runs = {0: (100.0, 101.0, 99.0), 1: (120.0, 118.0, 122.0), 2: simpler_runs or (90.0, 91.0, 89.0)}
        roles = {0: "baseline", 1: "top", 2: "top"}
        done = [Confirmation(n, METRIC, r, None, roles[n]) for n, r in runs.items()]
        done.sort(key=lambda c: -c.bound)
        StudyRecord(metrics=(METRIC,), confirmations={c.trial: c.record() for c in done}).write(study)
    else:
        StudyRecord(metrics=(METRIC,)).write(study)
    return study


def test_overridden_counts_flags_set_otherwise_than_the_defaults() -> None:
    r = TrialRecord(flags=ServerFlags.of({**BASE, "port": 31000, "tp-size": 2, "enable-x": False, "lof": True}))
    assert overridden(r, BASE) == ["tp-size", "lof"]  # the port is the tuner's; a switch left off is no override


def test_a_simpler_config_within_the_winners_interval_is_exported(tmp_path) -> None:
    # The winner (trial 1): mean 120 ± 4.97, bound 116.6; trial 2 (bound 110.3) has its mean 117 inside, with one
    # flag overridden, not three.
    study = _study((117.0, 113.0, 121.0))
    choice = export_choice(study)
    assert (choice.winner.number, choice.chosen.number) == (1, 2)
    done = export_best(study, ProcessLauncher(), tmp_path)
    script = (tmp_path / "deploy-best.sh").read_text()
    header = "\n".join(line for line in script.splitlines() if line.startswith("#"))
    assert "the simplest confirmed config of study 's' (trial 2)" in header
    assert "SIMPLEST WITHIN THE WINNER'S INTERVAL: trial 2, not the confirmed winner (trial 1)" in header
    assert "overrides 1 flag(s) (schedule-policy) where the winner overrides 3" in " ".join(
        line.lstrip("# ") for line in header.splitlines()
    )
    assert "--schedule-policy lof" in script and "--mem-fraction-static" not in script
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["trial"] == 2 and best["simplest"]["winner"] == 1 and "95% interval" in best["simplest"]["why"]
    assert done.trial.number == 2
    report = build_report(study, tmp_path / "report").markdown.read_text()
    assert "tune export deploys trial 2: trial 2 (top) stands in for the winner, trial 1" in report


@pytest.mark.parametrize("confirmed", [True, False])
def test_the_winner_is_exported_when_nothing_simpler_is_within_its_interval(tmp_path, confirmed: bool) -> None:
    # Trial 2's mean 90 lies below the winner's interval (or nothing was confirmed): the winner stays.
    study = _study(None, confirmed=confirmed)
    choice = export_choice(study)
    assert choice.chosen.number == choice.winner.number == 1 and choice.why is None
    export_best(study, ProcessLauncher(), tmp_path)
    script = (tmp_path / "deploy-best.sh").read_text()
    assert "SIMPLEST" not in script and "the best feasible config of study 's' (trial 1)" in script
    assert "--mem-fraction-static 0.9" in script
    assert json.loads((tmp_path / "best.json").read_text())["simplest"] is None
    assert "tune export deploys" not in build_report(study, tmp_path / "report").markdown.read_text()
