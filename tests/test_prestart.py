"""The next trial's interpreter does its imports while the trial before runs (tuner/serve/prestart.py).

The stand-in is one file with nothing slow to import, so each test writes a module in front of it that imports like
SGLang does: `python -m standin_server` first imports `slow_imports` (which sleeps and says, in a file, which process
imported it and when), then runs the stand-in as __main__.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import (
    FAST_ENV,
    STANDIN,
    free_port,
    left_after_kill_9,
    servers_of,
    tune,
    tune_start_in_background,
    write_run,
)
from tuner.config.run import load_config
from tuner.search.launchers import make_launcher
from tuner.search.storage import load_existing_study
from tuner.serve.launcher import LaunchSpec
from tuner.serve.process import ProcessLauncher
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import TrialRecord


def slow_server(folder: Path, delay_s: float) -> dict[str, str]:
    """Writes the two modules; returns the environment that finds them."""
    (folder / "slow_imports.py").write_text(
        "import os, sys, time\n"
        f"time.sleep({delay_s})\n"
        f"with open({str(folder / 'imports.jsonl')!r}, 'a') as f:\n"
        '    f.write(\'{"pid": %d, "at": %f}\\n\' % (os.getpid(), time.time()))\n'
        "print('slow_imports: imported', file=sys.stderr)\n"
    )
    (folder / "standin_server.py").write_text(
        "import runpy\n"
        "import slow_imports  # noqa: F401\n"
        "if __name__ == '__main__':\n"
        f"    runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
    )
    return {"PYTHONPATH": str(folder), "SGLANG_STANDIN_FAULTS": ""}


def imports(folder: Path) -> list[dict]:
    path = folder / "imports.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


COMMAND = [sys.executable, "-m", "standin_server"]
# The unit tests' study mark: this test process's own, so that another test run on the machine is not counted.
UNIT = f"prestart-unit-{os.getpid()}"


def test_the_next_trials_server_is_the_interpreter_that_imported_before_its_launch(tmp_path, unique_study):
    # Its startup (2 s, like SGLang's CUDA graphs) lasts longer than the imports (1.5 s): the interpreter prestarted
    # at a launch is ready by the next one.
    env = {**slow_server(tmp_path, 1.5), "SGLANG_STANDIN_STARTUP_S": "2"}
    run = write_run(tmp_path, study=unique_study, trials=3, env=env, launcher={"command": COMMAND})
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    assert servers_of(unique_study) == []  # the last trial's prestarted interpreter went with the study

    study = load_existing_study(load_config(run))
    imported_in = {i["pid"] for i in imports(tmp_path)}
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    first = TrialRecord.of(trials[0])
    assert first.prestarted_s is None  # nothing ran before the first trial to prestart it
    for t in trials[1:]:
        r = TrialRecord.of(t)
        pid = int(r.server or 0)
        assert pid in imported_in, (r.server, imported_in)
        # The process that served it had done its imports before its launch: the imports' 1.5 s are gone from its
        # startup (launch to healthy).
        assert r.prestarted_s is not None and r.prestarted_s > 1.5
        # Its interpreter counted its imports (the stand-in's 1.5 s): what a replay of this trial with prestart
        # off puts back on its startup.
        assert r.prestart_imports_s is not None and 1.5 <= r.prestart_imports_s < r.prestarted_s, r
        assert (r.times.startup_s or 0) < (first.times.startup_s or 0) - 1.0, (r.times, first.times)
        assert r.is_feasible
        log = (tmp_path / "trials" / unique_study / str(t.number) / "server.log").read_text()
        assert "# prestarted" in log
        # What it printed while importing is in its trial's log, before what it printed as the server.
        assert log.index("slow_imports: imported") < log.index("The server is fired up")
    status = tune("status", "-c", str(run))
    assert re.search(r"prestarted \d+ s ahead, its imports \d+ s", status.stdout), status.stdout


def _spec(tmp_path: Path, trial: int, port: int, env: dict[str, str] | None = None) -> LaunchSpec:
    flags = ServerFlags.of({"model-path": "standin/qwen3-8b", "host": "127.0.0.1", "port": port})
    return LaunchSpec(flags, env or {}, tmp_path / str(trial) / "server.log", "127.0.0.1", port, (), UNIT, trial)


def _launcher(tmp_path: Path, delay_s: float, prestart: bool = True) -> ProcessLauncher:
    return ProcessLauncher(COMMAND, {**FAST_ENV, **slow_server(tmp_path, delay_s)}, prestart=prestart)


def _wait_for_imports(folder: Path, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(imports(folder)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(imports(folder)) >= n


def test_a_prestarted_interpreter_serves_only_its_environment_and_close_stops_it(tmp_path):
    launcher = _launcher(tmp_path, 0.2)
    a = launcher.launch(_spec(tmp_path, 0, free_port()))
    _wait_for_imports(tmp_path, 2)  # the server's and the one prestarted for the next trial
    a.stop(1)
    other = launcher.launch(_spec(tmp_path, 1, free_port(), env={"SGLANG_STANDIN_SPEED": "0.03"}))
    assert other.prestarted_s is None  # another environment: what SGLang read at import time may differ
    _wait_for_imports(tmp_path, 4)
    other.stop(1)
    same = launcher.launch(_spec(tmp_path, 2, free_port(), env={"SGLANG_STANDIN_SPEED": "0.03"}))
    assert same.prestarted_s is not None
    same.stop(1)
    assert len(servers_of(UNIT)) == 2  # one waits for each environment
    launcher.close()
    assert servers_of(UNIT) == []


def test_one_still_importing_is_discarded_and_the_trial_starts_fresh(tmp_path):
    launcher = _launcher(tmp_path, 3.0)
    try:
        a = launcher.launch(_spec(tmp_path, 0, free_port()))
        b = launcher.launch(_spec(tmp_path, 1, free_port()))  # its prestarted interpreter is ~3 s from ready
        a.stop(1)
        assert b.prestarted_s is None
        assert "# prestarted" not in (tmp_path / "1" / "server.log").read_text()
        b.stop(1)
    finally:
        launcher.close()
    assert servers_of(UNIT) == []


def test_off_in_the_run_file_and_for_commands_that_are_not_python_dash_m(tmp_path):
    env = slow_server(tmp_path, 0.0)
    off = load_config(write_run(tmp_path, env=env, launcher={"command": COMMAND, "prestart": False}))
    on = load_config(write_run(tmp_path, env=env, launcher={"command": COMMAND}))
    script = load_config(write_run(tmp_path, env=env))  # python path/to/standin.py: what it imports is unknown
    for config, prestarted in ((off, False), (on, True), (script, False)):
        launcher = make_launcher(config)
        assert isinstance(launcher, ProcessLauncher)
        server = launcher.launch(_spec(tmp_path, 0, free_port()))
        try:
            server.stop(1)
            assert len(_prestarted(UNIT)) == (1 if prestarted else 0)
        finally:
            launcher.close()


@pytest.mark.timeout(120)
def test_kill_9_of_the_tuner_takes_the_prestarted_interpreter_with_it(tmp_path, unique_study):
    env = {**slow_server(tmp_path, 0.1), "SGLANG_STANDIN_FAULTS": "hang:mem-fraction-static<=0.8"}
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  mem-fraction-static: {low: 0.7, high: 0.8, step: 0.01}\n")
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=3,
        env=env,
        launcher={"command": COMMAND, "startup_timeout_s": 600},
    )
    with tune_start_in_background(run) as tuner:
        # Trial 1 hangs in its startup; the interpreter prestarted for trial 2 waits beside it.
        deadline = time.monotonic() + 90
        while not (servers_of(unique_study, trial=1) and _prestarted(unique_study)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _prestarted(unique_study), "no prestarted interpreter waited beside trial 1"
        assert left_after_kill_9(tuner, unique_study, 30) == []


def _prestarted(study: str) -> list[int]:
    return servers_of(study, trial="prestarted")
