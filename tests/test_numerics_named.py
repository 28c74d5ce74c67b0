"""Issue 25, piece 3: an exported config that sets a flag changing the model's numerics says so, naming the flags,
in deploy-best.sh's header and in the report; one that sets none says nothing of it."""

from __future__ import annotations

import html

import optuna
import pytest

from tuner.serve.process import ProcessLauncher
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import NO_FAILURE, StudyRecord, TrialRecord, Verdict
from tuner.views.export import export_best
from tuner.views.report import build_report

BASE = {"model-path": "m", "host": "127.0.0.1", "port": 30000}


def _study(best: dict) -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="n")
    for extra, value, baseline in (({}, 100.0, True), (best, 120.0, False)):
        record = TrialRecord(
            baseline=baseline, flags=ServerFlags.of({**BASE, **extra}), failure=Verdict(NO_FAILURE), feasible=True
        )
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=record.attrs()))
    StudyRecord(metrics=("output_throughput",)).write(study)
    return study


def test_the_flags_are_named_by_value() -> None:
    flags = ServerFlags.of({**BASE, "kv-cache-dtype": "fp8_e5m2", "enable-fp32-lm-head": True, "dtype": None})
    assert flags.numerics() == ["--kv-cache-dtype fp8_e5m2", "--enable-fp32-lm-head"]
    assert ServerFlags.of({**BASE, "enable-fp32-lm-head": False}).numerics_warning() is None


@pytest.mark.parametrize(
    ("best", "named"),
    [
        ({"kv-cache-dtype": "fp8_e5m2", "quantization": "fp8", "schedule-policy": "lof"}, True),
        ({"schedule-policy": "lof"}, False),
    ],
)
def test_deploy_best_and_the_report_say_the_answers_change(tmp_path, best: dict, named: bool) -> None:
    study = _study(best)
    export_best(study, ProcessLauncher(), tmp_path)
    header = " ".join(
        line.lstrip("# ") for line in (tmp_path / "deploy-best.sh").read_text().splitlines() if line.startswith("#")
    )
    page = html.unescape(build_report(study, tmp_path / "report").html.read_text())
    said = "CHANGES THE MODEL'S ANSWERS, not only its speed: --kv-cache-dtype fp8_e5m2, --quantization fp8 change"
    assert (said in header) is named
    assert (said in page) is named and ("CHANGES THE MODEL" in page) is named
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert (said in markdown) is named
    assert "schedule-policy" not in said
