"""Fault injection with real processes: each failure class produced for real, classified within seconds,
and no server left behind; the tuner's own death by SIGINT, SIGTERM, SIGHUP (its terminal closed) and SIGKILL,
and a disk that fills under its files or its study, lose no trial."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from optuna.trial import TrialState

from conftest import ROOT, STANDIN, servers_of, tune, tune_start_in_background, write_run, write_space
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study


def run_one(tmp_path, study, fixed=None, faults="", **extra):
    space = write_space(tmp_path / "space.yaml", fixed=fixed)
    # The stand-in's real pace: its OOM and segfault under load need 9 requests at once, and 48 requests of 0.3 s
    # at c=16 keep that many in flight for a second, however late a loaded machine lets the client send them.
    run = write_run(
        tmp_path,
        study=study,
        space=space,
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": faults, "SGLANG_STANDIN_SPEED": "1.0"},
        **extra,
    )
    t0 = time.monotonic()
    done = tune("start", "-c", str(run))
    return run, done, time.monotonic() - t0


@pytest.mark.parametrize(
    "fixed, faults, expected, exit_code",
    [
        ({}, "", "invalid_flag", 2),  # a wrapper adds a value argparse refuses (the space's own are checked before)
        ({}, "segfault:", "segfault", 139),
        ({}, "oom_kv_startup:", "oom_kv", 137),
        ({}, "oom_kv_startup_v055:", "oom_kv", 1),
        ({}, "cuda_graph_oom:", "oom_cuda_graph", 1),
        ({}, "gpu_busy:", "gpu_busy", 1),
        ({}, "scheduler_crash:", "scheduler_crash", 137),
        ({}, "oom_under_load:", "oom_runtime", 137),
        ({}, "segfault_under_load:", "segfault", 139),
        ({}, "die_under_load:", "died_during_benchmark", 1),
        ({}, "unhealthy:", "unhealthy", None),
    ],
)
def test_failure_is_classified_quickly_and_cleaned_up(tmp_path, unique_study, fixed, faults, expected, exit_code):
    extra = {}
    if expected == "invalid_flag":
        wrapper = tmp_path / "serve.sh"
        wrapper.write_text(
            f'#!/bin/sh\ncase " $* " in *" --help "*) exec {sys.executable} {STANDIN} "$@";; esac\n'
            f'exec {sys.executable} {STANDIN} "$@" --torch-compile-max-bs big\n'
        )
        wrapper.chmod(0o755)
        extra["launcher"] = {"command": [str(wrapper)]}
    run, done, _elapsed = run_one(
        tmp_path,
        unique_study,
        fixed,
        faults,
        workload={"concurrency": [16], "num_prompts": 48, "output_len": 64},
        **extra,
    )
    # A baseline SGLang refuses stops the study: every later trial has the same fixed flags.
    assert done.returncode == (2 if expected == "invalid_flag" else 0), done.stderr
    trial = load_existing_study(load_config(run)).trials[0]
    assert trial.state == TrialState.COMPLETE  # a failed launch is data for the sampler, not a FAIL
    assert trial.user_attrs["failure_class"] == expected, trial.user_attrs.get("failure_detail")
    assert trial.user_attrs["failure_hint"]
    assert trial.user_attrs["feasible"] is False
    if exit_code is not None:
        assert trial.user_attrs["exit_code"] == exit_code
    limit = 12 if expected == "unhealthy" else 6  # unhealthy needs three missed health checks
    assert trial.user_attrs["total_s"] < limit, trial.user_attrs
    assert servers_of(unique_study) == []
    status = tune("status", "-c", str(run))
    assert expected in status.stdout


def test_hanging_server_ends_at_its_startup_timeout(tmp_path, unique_study):
    run, done, _elapsed = run_one(tmp_path, unique_study, faults="hang:", launcher={"startup_timeout_s": 2})
    assert done.returncode == 0, done.stderr
    trial = load_existing_study(load_config(run)).trials[0]
    assert trial.user_attrs["failure_class"] == "startup_timeout"
    assert 2 <= trial.user_attrs["total_s"] < 5
    assert servers_of(unique_study) == []


def test_startup_timeout_follows_the_flags(tmp_path):
    from tuner.search.study import startup_timeout
    from tuner.sglang.flags import ServerFlags

    config = load_config(
        write_run(
            tmp_path, launcher={"startup_timeout_s": 100, "startup_timeout_extra_s": {"enable-torch-compile": 400}}
        )
    )
    assert startup_timeout(config, ServerFlags.of({"enable-torch-compile": True})) == 500
    assert startup_timeout(config, ServerFlags.of({"enable-torch-compile": False})) == 100


# A tuner started from a terminal: SIGINT and SIGHUP at their defaults. A suite run in the background (or under
# nohup) hands its children SIGINT (or SIGHUP) ignored, and Python keeps an ignored signal ignored; the tuner then
# rightly runs on, as under nohup, and a test of what a signal does would test nothing.
FROM_A_TERMINAL = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
)


def start_tuner(run):
    return subprocess.Popen(
        [sys.executable, "-c", FROM_A_TERMINAL + "from tuner.cli import app; app()", "start", "-c", str(run)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_server(study, trial=None, tuner=None, timeout=120):
    """Until a server of ``study`` (of that trial) runs: the event, whatever a loaded machine makes it cost."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if servers_of(study, trial):
            return
        if tuner is not None and tuner.poll() is not None:
            pytest.fail(
                f"the tuner exited {tuner.returncode} before a server of trial {trial} ran: {tuner.communicate()}"
            )
        time.sleep(0.05)
    if tuner is not None:
        tuner.kill()
    pytest.fail(f"no server of trial {trial} came up in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_the_server_records_the_trial_and_resume_reruns_it(tmp_path, unique_study, sig):
    # The first server hangs in startup, so the signal lands mid-trial; no startup timeout ends that trial first,
    # however late a loaded machine lets this test see the server, and stopping must not wait for one.
    space = write_space(tmp_path / "space.yaml")
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=2,
        env={"SGLANG_STANDIN_FAULTS": "hang:"},
        launcher={"startup_timeout_s": 600},
    )
    tuner = start_tuner(run)
    wait_for_server(unique_study, tuner=tuner)
    t0 = time.monotonic()
    tuner.send_signal(sig)
    _, err = tuner.communicate(timeout=60)
    assert tuner.returncode == 130, err
    assert time.monotonic() - t0 < 30  # stopped, not waited out (600 s)
    assert "interrupted" in err and "Traceback" not in err
    assert servers_of(unique_study) == []
    study = load_existing_study(load_config(run))
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["failure_class"] == "interrupted"

    # Resume without the fault: the interrupted baseline is re-run, then the budget is completed.
    (tmp_path / "run.yaml").write_text((tmp_path / "run.yaml").read_text().replace("hang:", ""))
    assert tune("start", "-c", str(run)).returncode == 0
    study = load_existing_study(load_config(run))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert complete[0].user_attrs.get("baseline") and complete[0].user_attrs.get("retry_of") == 0
    assert len({t.number for t in study.trials}) == len(study.trials)


def test_kill_9_mid_trial_then_resume_loses_and_duplicates_nothing(tmp_path, unique_study):
    # The baseline (SGLang's default fraction, 0.85) starts; every sampled trial (0.7-0.8) hangs in its startup,
    # for as long as this test takes to see it: no startup timeout ends it first. (A fault's condition is on the
    # resolved value, so a rule like >= 0.7 would hang the baseline too.)
    space = write_space(
        tmp_path / "space.yaml", params={"mem-fraction-static": {"low": 0.7, "high": 0.8, "step": 0.01}}
    )
    hang = "hang:mem-fraction-static<=0.8"
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=3,
        env={"SGLANG_STANDIN_FAULTS": hang},
        launcher={"startup_timeout_s": 600},
    )
    # Trial 0 completes; trial 1's server starts (and hangs); then kill -9.
    tuner = start_tuner(run)
    wait_for_server(unique_study, trial=1, tuner=tuner)
    tuner.kill()
    tuner.wait(30)
    # The kernel takes the server down with the tuner (PR_SET_PDEATHSIG): nothing is left running.
    deadline = time.monotonic() + 30
    while servers_of(unique_study) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers_of(unique_study) == []

    study = load_existing_study(load_config(run))
    stale = study.trials[1]
    assert study.trials[0].state == TrialState.COMPLETE and stale.state == TrialState.RUNNING
    baseline_before = study.trials[0]
    (tmp_path / "run.yaml").write_text((tmp_path / "run.yaml").read_text().replace(hang, "''"))
    again = tune("start", "-c", str(run))
    assert again.returncode == 0, again.stderr
    assert "left RUNNING by a dead tuner" in again.stderr
    study = load_existing_study(load_config(run))
    assert study.trials[1].state == TrialState.FAIL
    assert study.trials[1].user_attrs["failure_class"] == "interrupted"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    rerun = [t for t in complete if t.user_attrs.get("retry_of") == 1]
    assert len(rerun) == 1 and rerun[0].params == stale.params
    # The finished trial before the crash is kept as it was, not re-run or rewritten by the recovery.
    assert study.trials[0].values == baseline_before.values
    assert study.trials[0].user_attrs == baseline_before.user_attrs


def test_next_start_kills_an_orphaned_server(tmp_path, unique_study):
    # An orphan that no parent-death signal reached (e.g. started through a wrapper that daemonised).
    env = {
        **os.environ,
        "SGLANG_TUNER_STUDY": unique_study,
        "SGLANG_STANDIN_FAULTS": "",
        "SGLANG_STANDIN_STARTUP_S": "0.1",
    }
    orphan = subprocess.Popen(
        [sys.executable, str(STANDIN), "--model-path", "x", "--port", "0"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_server(unique_study)
    run = write_run(tmp_path, study=unique_study, trials=1)
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    assert "stopped servers left by an earlier run" in done.stderr
    assert orphan.wait(30) is not None
    assert servers_of(unique_study) == []


def test_two_workers_recovering_one_stale_trial_queue_one_rerun(tmp_path, unique_study):
    """Workers starting together (or one by heartbeat) may find the same dead worker's trial: one re-run."""
    import threading

    from tuner.search.storage import open_study
    from tuner.search.study import HOST, Tuner

    config = load_config(write_run(tmp_path, study=unique_study, trials=2))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = open_study(config)
    trial = study.ask()
    trial.suggest_float("mem-fraction-static", 0.7, 0.9)
    trial.set_user_attr("worker", f"{HOST}:{dead.pid}")
    tuners = [Tuner(config) for _ in range(4)]
    for tuner in tuners:
        tuner.study = open_study(config)
    errors = []

    def recover(tuner):
        try:
            tuner._recover_stale(tuner.study)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=recover, args=(t,)) for t in tuners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    trials = load_existing_study(config).trials
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]


def test_terminal_closed_mid_trial_stops_the_server_and_records_the_trial(tmp_path, unique_study):
    """The terminal (or the ssh session) goes away: the kernel hangs up the tuner's terminal and sends SIGHUP.
    Like Ctrl-C: the server is stopped, the trial recorded interrupted and re-queued, and the exit is non-zero,
    though nothing can be written to the terminal any more."""
    import pty

    # No startup timeout ends the hanging trial first, however late a loaded machine lets this test see it.
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=2,
        env={"SGLANG_STANDIN_FAULTS": "hang:"},
        launcher={"startup_timeout_s": 600},
    )
    pid, master = pty.fork()  # the child leads a new session whose controlling terminal is the pty
    if pid == 0:
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            [sys.executable, "-c", FROM_A_TERMINAL + "from tuner.cli import app; app()", "start", "-c", str(run)],
        )
    shown = []  # what the terminal showed, read as it comes (an unread pty blocks its writer)
    reader = threading.Thread(target=_drain, args=(master, shown), daemon=True)
    reader.start()
    done = (0, 0)
    try:
        wait_for_server(unique_study)
        t0 = time.monotonic()
        os.close(master)  # the terminal closes: SIGHUP to the session, EIO on every later write
        deadline = time.monotonic() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert done[0] == pid, "the tuner outlived its terminal"
    status = done[1]
    assert time.monotonic() - t0 < 30  # stopped, not waited out (600 s)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130, status  # as after Ctrl-C
    deadline = time.monotonic() + 30
    while servers_of(unique_study) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers_of(unique_study) == []
    study = load_existing_study(load_config(run))
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["failure_class"] == "interrupted"
    assert [t.state for t in study.trials[1:]] == [TrialState.WAITING]  # its re-run, queued


def _drain(fd: int, into: list) -> None:
    try:
        while chunk := os.read(fd, 4096):
            into.append(chunk)
    except OSError:
        pass


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only): a filesystem that can really fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Take every free byte of ``disk``; returns the filler file (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def fill_mid_trial(run, study, disk):
    """Start the tuner, and fill ``disk`` once the first server is up (the trial is measuring)."""
    tuner = start_tuner(run)
    wait_for_server(study)
    filler = fill(disk)
    _, err = tuner.communicate(timeout=60)
    return tuner.returncode, err, filler


def test_trials_dir_filling_up_mid_study_records_the_trial_and_stops(tmp_path, unique_study, small_disk):
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=2,
        trials_dir=str(small_disk / "trials"),
        env={"SGLANG_STANDIN_SPEED": "0.3", "SGLANG_STANDIN_FAULTS": "", "SGLANG_STANDIN_STARTUP_S": "2"},
    )
    code, err, filler = fill_mid_trial(run, unique_study, small_disk)
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: trial 0: cannot write its files"), err
    assert "No space left on device" in lines[0] and "run the same command to resume" in lines[0]
    assert servers_of(unique_study) == []
    trial = load_existing_study(load_config(run)).trials[0]
    # Measured, so recorded with its numbers; only its files are missing, and the record says so.
    assert trial.state == TrialState.COMPLETE and trial.values, trial.user_attrs
    assert trial.user_attrs.get("output_throughput", 0) > 0, {k: v for k, v in trial.user_attrs.items() if "fail" in k}
    assert "No space left on device" in trial.user_attrs["artifacts_missing"]
    # Nothing half-written: every file there is whole (or absent), no temporary file is left.
    for path in (small_disk / "trials").rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.name == "trial.json":
            json.loads(path.read_text())
    filler.unlink()
    again = tune("start", "-c", str(run))
    assert again.returncode == 0, again.stderr
    assert len(load_existing_study(load_config(run)).get_trials(states=(TrialState.COMPLETE,))) == 2


def test_storage_filling_up_mid_trial_stops_the_server_and_says_so(tmp_path, unique_study, small_disk):
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=2,
        storage=f"sqlite:///{small_disk}/studies/{unique_study}.db",
        env={"SGLANG_STANDIN_SPEED": "0.3", "SGLANG_STANDIN_FAULTS": "", "SGLANG_STANDIN_STARTUP_S": "2"},
    )
    code, err, filler = fill_mid_trial(run, unique_study, small_disk)
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"error: the study's storage sqlite:///{small_disk}"), err
    assert "database or disk is full" in lines[0] and "free space" in lines[0], lines[0]
    assert servers_of(unique_study) == []
    filler.unlink()
    again = tune("start", "-c", str(run))
    assert again.returncode == 0, again.stderr
    study = load_existing_study(load_config(run))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_under_nohup_a_hangup_changes_nothing(tmp_path, unique_study):
    """`nohup tune start ...` ignores SIGHUP on purpose: the study runs on after the terminal closes."""
    run = write_run(tmp_path, study=unique_study, trials=1, env={"SGLANG_STANDIN_SPEED": "0.3"})
    tuner = subprocess.Popen(
        [sys.executable, "-c", "from tuner.cli import app; app()", "start", "-c", str(run)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does
    )
    wait_for_server(unique_study)
    tuner.send_signal(signal.SIGHUP)
    _, err = tuner.communicate(timeout=60)
    assert tuner.returncode == 0, err
    trial = load_existing_study(load_config(run)).trials[0]
    assert trial.state == TrialState.COMPLETE and "failure_class" in trial.user_attrs
    assert trial.user_attrs["failure_class"] == "none"


def test_a_worker_waits_for_another_workers_last_trial_and_reruns_it_when_that_worker_dies(tmp_path, unique_study):
    """Two `tune start` on one host share a study (no heartbeat). The budget is full only with the other's
    running trial: this one must not leave, for if the other dies its trial is run again here, and the study
    still gets its budget."""
    from tuner.search.storage import open_study
    from tuner.search.study import HOST

    run = write_run(tmp_path, study=unique_study, trials=1)
    config = load_config(run)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the other worker, alive
    try:
        study = open_study(config)
        trial = study.ask()
        trial.suggest_float("mem-fraction-static", 0.7, 0.9)
        trial.set_user_attr("worker", f"{HOST}:{other.pid}")
        with tune_start_in_background(run) as this:
            time.sleep(8)  # past its start-up checks, which would recover a dead worker's trial anyway
            assert this.poll() is None, "it left while the other worker's trial ran"
            assert [t.state for t in load_existing_study(config).trials] == [TrialState.RUNNING]
            other.kill()
            other.wait()
            assert this.wait(120) == 0
    finally:
        other.kill()
    trials = load_existing_study(config).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs.get("retry_of") == 0
    assert trials[1].params["mem-fraction-static"] == trials[0].params["mem-fraction-static"]
