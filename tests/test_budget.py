"""A predicted failure costs no launch: the budget (``trials``, the user's GPU time) counts launched trials, never
those refused before launch, on one worker and several, on resume, in a replay; the sampler still learns from
them, a sampler that proposes nothing else is stopped, and every view says how many there were apart from the
launches. (Several hosts on PostgreSQL: tests/test_postgres.py.)

The studies replay a few recorded stand-in trials on one GPU (two for the several-worker one), over a space whose
tp-size above what --gpus gives is predicted ``too_many_gpus``: real SQLite studies, no server."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests import test_postgres, test_study
from tests.conftest import ROOT, tune, write_space
from tests.test_study import replay_config
from tuner.config.run import RunConfig
from tuner.errors import SetupError
from tuner.search import study as study_module
from tuner.search.storage import HOST
from tuner.search.study import Tuner
from tuner.serve import gpu
from tuner.trial.record import Budget
from tuner.views.progress import LineProgress

SPACE = {
    "schedule-policy": {"choices": ["lpm", "fcfs"]},
    "mem-fraction-static": {"low": 0.72, "high": 0.94, "step": 0.01},
    "tp-size": {"choices": [1, 2, 4, 8]},
}
# Their fixtures: the recorded stand-in rows, the study files on /dev/shm, a PostgreSQL server.
surface, _drop_shm_dbs, pg_url = test_study.surface, test_study._drop_shm_dbs, test_postgres.pg_url
FITS = {"schedule-policy": "lpm", "mem-fraction-static": 0.8, "tp-size": 1}
TOO_BIG = {"schedule-policy": "lpm", "mem-fraction-static": 0.8, "tp-size": 8}


def config_for(tmp_path: Path, surface: Path, params: dict | None = None, **extra) -> RunConfig:
    config = replay_config(tmp_path, surface, **{"baseline": False, **extra})
    write_space(Path(config.space), params=params or SPACE)
    return config


def launched_and_predicted(study: optuna.Study) -> tuple[int, int]:
    """Counted here from what each trial stored, not by the code under test."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    predicted = [t for t in complete if t.user_attrs.get("launched") is False]
    assert all(t.user_attrs["failure_class"] == "too_many_gpus" for t in predicted)
    return len(complete) - len(predicted), len(predicted)


class Stop:
    """A progress that stops the study (as Ctrl-C does) once it sees a trial predicted to fail, or after ``fuse``
    trials (a study that would otherwise never end)."""

    def __init__(self, on_prediction: bool = True, fuse: int | None = None):
        self.tuner: Tuner | None = None
        self.on_prediction, self.fuse, self.seen = on_prediction, fuse, 0

    def phase(self, trial: int, name: str, detail: str = "") -> None:
        pass

    def trial_done(self, study: optuna.Study, result) -> None:
        assert self.tuner is not None
        self.seen += 1
        if (self.on_prediction and not result.launched) or (self.fuse and self.seen >= self.fuse):
            self.tuner.cancel.set()


def test_a_predicted_trial_takes_no_trial_of_the_budget_and_the_progress_says_so(tmp_path, surface):
    config = config_for(tmp_path, surface, trials=4)
    out = io.StringIO()
    progress = LineProgress(4, force=True, stream=out, live=False)
    tuner = Tuner(config, progress=progress)
    study = tuner.prepare()
    for params in (TOO_BIG, FITS, TOO_BIG):
        study.enqueue_trial(params)
    tuner.run()
    launched, predicted = launched_and_predicted(study)
    assert launched == 4 and predicted >= 2  # the two queued, and whatever the sampler drew
    assert Budget.of(study) == Budget(4, predicted, 4)
    assert Budget.of(study).text() == f"4 launched (budget 4) + {predicted} predicted to fail, not launched"
    assert Tuner.trials_done(study) == 4
    # Told to the sampler like any infeasible trial: the worst value and every constraint violated.
    first = study.trials[0]
    assert first.values == [0.0] and all(c > 0 for c in first.system_attrs["constraints"])
    said = out.getvalue()
    assert (
        "trial 0 not launched, predicted to fail (too_many_gpus: needs 8 GPUs (tp x dp) but --gpus 0 gives 1); "
        "it takes no trial of the budget"
    ) in said
    head = progress._render().renderables[0].plain  # type: ignore[attr-defined]
    assert f"4/4 done + {predicted} predicted to fail, not launched" in head


def test_several_workers_share_the_budget_of_launches(tmp_path, surface):
    """Two GPUs, two workers: tp 4 and 8 are predicted; the trial numbers past the budget are given back, and a
    number handed out behind predicted trials is not."""
    config = config_for(tmp_path, surface, trials=6, gpus=[0, 1], sampler={"name": "random", "seed": 0})
    tuner = Tuner(config)
    study = tuner.prepare()
    study.enqueue_trial(TOO_BIG)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(tuner.run)
        try:
            run.result(timeout=120)  # a second, unloaded
        except TimeoutError:
            tuner.cancel.set()
            pytest.fail("the workers never stopped: each trial number was given back, and another asked")
        finally:
            gpu.reset()
    launched, predicted = launched_and_predicted(study)
    assert launched == 6 and predicted >= 1
    assert len({t.number for t in study.trials}) == len(study.trials)
    others = {t.state for t in study.trials} - {TrialState.COMPLETE}
    assert others <= {TrialState.FAIL}
    assert all(t.user_attrs["failure_class"] == "over_budget" for t in study.trials if t.state == TrialState.FAIL)
    # One more trial in the budget: the number asked now has predicted trials ahead of it, and is run, not given back.
    tuner.config.trials = 7
    study.enqueue_trial(FITS)
    tuner._run_asked(study, study.ask(), gpu.GpuPool([0, 1]), tuner._artifact_store())
    assert launched_and_predicted(study) == (7, predicted)


def test_a_resumed_study_counts_only_its_launches(tmp_path, surface):
    config = config_for(tmp_path, surface, trials=3)
    stop = Stop()
    tuner = Tuner(config, progress=stop)
    stop.tuner = tuner
    study = tuner.prepare()
    for params in (FITS, TOO_BIG, FITS):
        study.enqueue_trial(params)
    with pytest.raises(KeyboardInterrupt):  # stopped as by Ctrl-C, right after the prediction
        tuner.run()
    assert launched_and_predicted(study) == (1, 1)
    study = Tuner(config_for(tmp_path, surface, trials=3)).run()
    launched, predicted = launched_and_predicted(study)
    assert launched == 3 and predicted >= 1
    again = Tuner(config_for(tmp_path, surface, trials=3)).run()
    assert len(again.trials) == len(study.trials)  # the budget was reached: nothing run


def test_the_sampler_learns_from_predicted_trials(tmp_path, surface):
    """TPE is told each predicted trial (its worst value): to spend the same 16 launches it proposes tp-size 2-8,
    which one GPU cannot start, far less often than random search, which learns nothing."""
    predicted = {}
    for name in ("random", "tpe"):
        folder = tmp_path / name
        folder.mkdir()
        config = config_for(folder, surface, trials=16, sampler={"name": name, "seed": 0, "n_startup_trials": 4})
        launched, predicted[name] = launched_and_predicted(Tuner(config).run())
        assert launched == 16
    # Seed 0 (2 CPUs shared with other jobs, 2026-12-05): random 66 predicted, TPE 14.
    assert predicted["tpe"] * 2 < predicted["random"], predicted


def test_a_sampler_proposing_only_predicted_failures_is_stopped(tmp_path, surface):
    config = config_for(tmp_path, surface, params={**SPACE, "tp-size": {"choices": [2, 4]}}, trials=2)
    stop = Stop(on_prediction=False, fuse=study_module.PREDICTED_IN_A_ROW + 50)
    tuner = Tuner(config, progress=stop)
    stop.tuner = tuner
    try:
        with pytest.raises(SetupError) as err:
            tuner.run()
    except KeyboardInterrupt:
        pytest.fail(f"still running after {stop.seen} predicted failures in a row")
    assert str(err.value).startswith(
        "the sampler proposed 100 configs in a row that are predicted to fail (too_many_gpus 100; the last: needs "
    )
    assert str(err.value).endswith(
        "gives 1), none launched: most of the space cannot start here. Give more --gpus, or narrow tp-size/dp-size in "
        "the search space to what this machine has. Then run the same command to resume"
    )
    assert launched_and_predicted(tuner.study) == (0, 100)


def test_a_launch_ends_a_run_of_predicted_failures(tmp_path, surface, monkeypatch):
    monkeypatch.setattr(study_module, "PREDICTED_IN_A_ROW", 3)
    config = config_for(tmp_path, surface, trials=2)
    tuner = Tuner(config)
    study = tuner.prepare()
    for params in (TOO_BIG, TOO_BIG, FITS, TOO_BIG, TOO_BIG, FITS):
        study.enqueue_trial(params)
    tuner.run()
    assert launched_and_predicted(study) == (2, 4)


def test_the_commands_say_launched_and_predicted_apart(tmp_path, surface):
    """tune start, status and report on a replayed study whose random draws start with tp 4 and 8."""
    config = config_for(tmp_path, surface, trials=3, sampler={"name": "random", "seed": 0})
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(config.to_dict()))
    started = tune("start", "-c", str(run), "--progress")
    assert started.returncode == 0, started.stderr
    study = optuna.load_study(study_name=config.study, storage=config.storage_url)
    launched, predicted = launched_and_predicted(study)
    assert launched == 3 and predicted >= 1
    counts = f"3 launched (budget 3) + {predicted} predicted to fail, not launched"
    assert f"study 'r' in {config.storage_url}: {counts}; best: trial " in started.stdout
    assert "not launched, predicted to fail (too_many_gpus: needs" in started.stderr
    status = tune("status", "-c", str(run))
    assert f"trials: {counts}" in status.stdout.splitlines()
    again = tune("start", "-c", str(run))
    assert (
        f"study 'r' already has 3 launched trials (and {predicted} predicted to fail, not launched); budget 3 "
        f"reached: pass --trials N > 3 to run more"
    ) in again.stdout
    report = tune("report", "-c", str(run), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert f"Trials: {counts}." in (tmp_path / "report" / "comparison.md").read_text()
    assert f"): {counts}. Generated" in (tmp_path / "report" / "report.html").read_text()


def test_workers_on_several_hosts_share_the_budget_of_launches(tmp_path, surface, pg_url):
    """Two `tune start` processes on one PostgreSQL study, as two hosts run it: 20 launches in all, however many
    predictions each drew."""
    name = f"budget-{uuid.uuid4().hex[:8]}"
    config = config_for(tmp_path, surface, trials=20, study=name, storage=pg_url, sampler={"name": "random", "seed": 0})
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(config.to_dict()))
    start = [sys.executable, "-c", "from tuner.cli import app; app()", "start", "-c", str(run), "--quiet"]
    workers = [subprocess.Popen(start, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    workers.append(subprocess.Popen(start, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for w in workers:
            _, err = w.communicate(timeout=240)
            assert w.returncode == 0, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    study = optuna.load_study(study_name=name, storage=pg_url)
    launched, predicted = launched_and_predicted(study)
    assert launched == 20 and predicted >= 1
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all(t.user_attrs["failure_class"] == "over_budget" for t in study.trials if t.state != TrialState.COMPLETE)
    assert {t.user_attrs["worker"] for t in study.trials} == {f"{HOST}:{w.pid}" for w in workers}
