"""Several workers, one study on a real PostgreSQL server: an exact budget, unique numbers, and a worker
killed with SIGKILL whose trial is failed by heartbeat and re-run by another worker; workers that create a study's
tables on an empty database at once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from optuna.trial import TrialState

from conftest import ROOT, free_port, servers_of, tune, write_run
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study

PG = os.environ.get("SGLANG_TUNER_TEST_PG", "postgresql://tuner:tuner@127.0.0.1:5432/tuner")


@pytest.fixture(scope="module")
def pg_url():
    import psycopg

    try:
        psycopg.connect(PG.replace("postgresql+psycopg", "postgresql"), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable in CI ({exc}); tests/services.sh should start it")
        pytest.skip(f"PostgreSQL not reachable: run bash tests/services.sh ({exc})")
    return PG


def worker(run, port):
    return subprocess.Popen(
        [sys.executable, "-c", "from tuner.cli import app; app()", "start", "-c", str(run), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held_by(trial, worker) -> bool:
    """Whether ``worker`` (a `tune start` process) runs ``trial``, launched."""
    return trial.user_attrs.get("worker", "").endswith(f":{worker.pid}") and bool(trial.user_attrs.get("argv"))


def test_three_workers_share_one_budget_and_a_killed_worker_is_retried(tmp_path, pg_url):
    study_name = f"multi-{uuid.uuid4().hex[:8]}"

    def run_file(folder, **env):
        folder.mkdir(exist_ok=True)
        return write_run(
            folder,
            study=study_name,
            trials=7,
            storage=pg_url,
            heartbeat_s=1,
            artifacts=str(tmp_path / "shared-artifacts"),
            env={"SGLANG_STANDIN_SPEED": "1.0", "SGLANG_STANDIN_FAULTS": "", **env},
            workload={"concurrency": [4], "num_prompts": 8, "output_len": 64},
        )

    run = run_file(tmp_path)
    config = load_config(run)
    # The victim's servers take a minute to start: it holds a launched trial while the others, however late they
    # start on a loaded machine, get theirs (else they could take the whole budget before one of them began).
    victim = worker(run_file(tmp_path / "victim", SGLANG_STANDIN_STARTUP_S="60"), free_port())
    workers = [victim, worker(run, free_port()), worker(run, free_port())]
    try:
        # Kill the first worker while it holds a RUNNING trial.
        deadline = time.monotonic() + 180
        killed_trial = None
        while time.monotonic() < deadline and killed_trial is None:
            try:
                study = load_existing_study(config)
            except SystemExit:
                time.sleep(0.2)
                continue
            except Exception:
                time.sleep(0.2)
                continue
            # Every worker past its start-up checks (a worker still starting would recover the dead one's trial
            # itself, as "interrupted", which is the other test's path): then the heartbeat path is the one seen.
            started = {t.user_attrs.get("worker", "").rpartition(":")[2] for t in study.get_trials()}
            if not {str(w.pid) for w in workers} <= started:
                time.sleep(0.1)
                continue
            if any(_held_by(t, victim) for t in study.get_trials(states=(TrialState.RUNNING,))):
                # Stopped, it cannot finish that trial while we look again: the one it holds now is the one it dies in.
                victim.send_signal(signal.SIGSTOP)
                held = [
                    t
                    for t in load_existing_study(config).get_trials(states=(TrialState.RUNNING,))
                    if _held_by(t, victim)
                ]
                if held:
                    killed_trial = held[0].number
                    break
                victim.send_signal(signal.SIGCONT)
            time.sleep(0.1)
        assert killed_trial is not None, "the victim never ran a trial"
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        for w in workers[1:]:
            _, err = w.communicate(timeout=150)
            assert w.returncode == 0, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()

    study = load_existing_study(config)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 7
    assert len({t.number for t in trials}) == len(trials)
    stale = trials[killed_trial]
    assert stale.state == TrialState.FAIL
    retried = [t for t in complete if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retried) == 1 and retried[0].params == stale.params
    assert "stopped heartbeating" in retried[0].user_attrs["retry_reason"]
    assert {t.user_attrs["host"] for t in complete} == {socket.gethostname()}
    assert all(t.user_attrs["gpus"] == [0] for t in complete)
    assert sum(bool(t.user_attrs.get("baseline")) for t in complete) == 1
    assert servers_of(study_name) == []
    # Every worker put its trials' files in the one shared artifacts folder, where any host can open them.
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    shared = FileSystemArtifactStore(tmp_path / "shared-artifacts")
    for t in complete:
        meta = {m.filename: m for m in get_all_artifact_meta(t, storage=study._storage)}
        assert {"server.log", "benchmark.csv", "trial.json"} <= set(meta), t.number
        download_artifact(
            artifact_store=shared,
            file_path=str(tmp_path / f"{t.number}.json"),
            artifact_id=meta["trial.json"].artifact_id,
        )
        assert json.loads((tmp_path / f"{t.number}.json").read_text())["trial"] == t.number
    assert not (tmp_path / "trials" / study_name / "artifacts").exists()

    # A fourth process sees every trial.
    status = tune("status", "--study", study_name, "--storage", pg_url)
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert sorted(int(r[0]) for r in rows) == [t.number for t in trials]
    assert status.stdout.count("COMPLETE") == 7
    report = tune("report", "--study", study_name, "--storage", pg_url, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert study_name in html and "baseline" in html


def test_bad_storage_urls_get_one_line(tmp_path):
    run = write_run(tmp_path, storage="postgresql://tuner:wrong@127.0.0.1:1/nowhere")
    done = tune("start", "-c", str(run))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --storage postgresql://***@127.0.0.1:1/nowhere: cannot open it")
    run = write_run(tmp_path, storage="studies/x.db")
    done = tune("start", "-c", str(run))
    assert done.returncode == 2 and "is not a database URL" in done.stderr


def test_workers_that_open_a_new_database_at_once_all_start(tmp_path, pg_url):
    """Hosts started together on an empty database each create Optuna's tables: PostgreSQL refuses all but one
    creator of a table (a unique violation in its catalogue), which is no reason for the others not to start."""
    import threading

    import psycopg

    from tuner.search.storage import open_storage

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = pg_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    try:
        config = load_config(write_run(tmp_path, storage=admin.rsplit("/", 1)[0] + f"/{name}"))
        barrier, errors = threading.Barrier(8), []

        def open_one() -> None:
            barrier.wait()
            try:
                open_storage(config).engine.dispose()
            except Exception as exc:  # what the test reports: whatever a worker would have failed with
                errors.append(str(exc))

        workers = [threading.Thread(target=open_one) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert errors == []
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE {name} WITH (FORCE)")
