"""SGLang's spawned processes (its scheduler, its detokenizer) run on stand-bys that imported ahead (prestart_boot.py).

The stand-in serves HTTP from one process, so each test writes a server module in front of it that starts like
SGLang does: `python -m spawn_server` imports `slow_child` (as SGLang's engine imports its scheduler module), then,
as __main__, changes the environment and its open-files limit (as SGLang's _set_envs_and_config does), starts
`slow_child.run` with multiprocessing's spawn and a pipe, waits for the child's word on that pipe, writes it down and
runs the stand-in. `slow_child` sleeps while it is imported, like the scheduler's ~25 s of imports.
"""

from __future__ import annotations

import json
import os
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
from tuner.serve.launcher import Launcher, LaunchSpec
from tuner.serve.prestart import Spawned
from tuner.serve.process import ProcessLauncher, ProcessServer
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import TrialRecord

COMMAND = [sys.executable, "-m", "spawn_server"]
# The unit tests' study mark: this test process's own, so that another test run on the machine is not counted.
UNIT = f"spawn-unit-{os.getpid()}"


def spawning_server(folder: Path, child_import_s: float) -> dict[str, str]:
    """Writes the two modules; returns the environment that finds them."""
    (folder / "slow_child.py").write_text(
        "import ctypes, json, os, resource, signal, sys, time\n"
        "def _value(name):\n"
        "    return os.environ.get(name)\n"
        "def _names(prefix):\n"
        "    return [k for k in os.environ if k.startswith(prefix)]\n"
        f"time.sleep({child_import_s})\n"
        "IMPORTED_AT = time.time()\n"
        "IMPORTED_BY = os.getpid()\n"
        "# Read at import, as sklearn reads KMP_*: a variable the launching module's imports set (spawn_server.py).\n"
        "SET_AT_IMPORT = os.environ.get('STANDIN_SET_AT_IMPORT')\n"
        "# Like SGLang's environ.py, which goes through every variable at import to rename SGL_* ones.\n"
        "RENAMED = {k.replace('SGL_', 'SGLANG_', 1): v for k, v in os.environ.items() if k.startswith('SGL_')}\n"
        "# Other scans, which look up each variable they are handed: none is a read of STANDIN_RUN_ID.\n"
        "COPIED = dict(os.environ)\n"
        "PREFIXED = [os.environ[k] for k in os.environ if k.startswith('STANDIN_')]\n"
        "for k in os.environ:\n"
        "    if k.startswith('STANDIN_') and k in os.environ:\n"
        "        os.environ.get(k)\n"
        "# And scans that take the names first, then look each up: here, in a helper, in another function.\n"
        "for k in sorted(os.environ):\n"
        "    os.environ[k]\n"
        "NAMES = list(os.environ)\n"
        "VALUES = {k: os.environ.get(k) for k in NAMES}\n"
        "HELPED = {k: _value(k) for k in os.environ if k.startswith('STANDIN_')}\n"
        "LATER = [os.getenv(k) for k in _names('STANDIN_')]\n"
        "ITEMS = [os.environ[k] for k, _ in os.environ.items() if k.startswith('STANDIN_')]\n"
        "COPIES = [os.environ.get(k) for k in os.environ.copy() if k.startswith('STANDIN_')]\n"
        "# Like a module that reads SGLANG_RUN_ID when it is imported; only where the test asks it to.\n"
        "# By a name spelled on another line than its lookup, in this frame that scanned: a read.\n"
        "RUN_ID_NAMES = ('STANDIN_RUN_ID',)\n"
        "RUN_ID_AT_IMPORT = None\n"
        "for name in RUN_ID_NAMES if os.environ.get('STANDIN_READ_RUN_ID') else ():\n"
        "    RUN_ID_AT_IMPORT = os.environ.get(name)\n"
        "print('slow_child: imported', file=sys.stderr, flush=True)\n"
        "def second(writer):  # like SGLang's detokenizer, spawned after the scheduler\n"
        "    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL)\n"
        "    writer.send(json.dumps({'pid': os.getpid(), 'imported_by': IMPORTED_BY, 'imported_at': IMPORTED_AT}))\n"
        "    writer.close()\n"
        "    while True:\n"
        "        time.sleep(3600)\n"
        "def run(writer):\n"
        "    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL)  # as SGLang's scheduler: die with the parent\n"
        "    print('slow_child: running', flush=True)\n"
        "    writer.send(json.dumps({'pid': os.getpid(), 'imported_by': IMPORTED_BY, 'imported_at': IMPORTED_AT,\n"
        "        'running_at': time.time(), 'run_id': os.environ.get('STANDIN_RUN_ID'),\n"
        "        'run_id_at_import': RUN_ID_AT_IMPORT, 'trial': os.environ.get('SGLANG_TUNER_TRIAL'),\n"
        "        'set_by_launcher': os.environ.get('STANDIN_SET_BY_LAUNCHER'),\n"
        "        'nofile': list(resource.getrlimit(resource.RLIMIT_NOFILE)), 'argv': sys.argv}))\n"
        "    writer.close()\n"
        "    while True:\n"
        "        time.sleep(3600)\n"
    )
    (folder / "spawn_server.py").write_text(
        "import json, multiprocessing as mp, os, resource, runpy, time\n"
        "# Like sklearn's KMP_* and SGLang's TLLM_LOG_LEVEL: set by the launching process's imports, read by the\n"
        "# spawned process's.\n"
        "os.environ.setdefault('STANDIN_SET_AT_IMPORT', 'yes')\n"
        "import slow_child\n"
        "import sys\n"
        "if __name__ == '__main__' and '--help' in sys.argv:  # SGLang's argparse exits before it spawns\n"
        f"    runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
        "elif __name__ == '__main__':\n"
        "    os.environ['STANDIN_SET_BY_LAUNCHER'] = '8'\n"
        "    os.environ['STANDIN_RUN_ID'] = repr(time.time())\n"
        "    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "    # SGLang raises it (to the same value each run): either way a change. Where asked, a new one each run.\n"
        f"    words = {str(folder / 'spawned.jsonl')!r}\n"
        "    runs = len(open(words).readlines()) if os.path.exists(words) else 0\n"
        "    lower = 1 + runs if os.environ.get('STANDIN_NOFILE_VARIES') else 7\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - lower, hard))\n"
        "    mp.set_start_method('spawn', force=True)\n"
        "    reader, writer = mp.Pipe(duplex=False)\n"
        "    child = mp.Process(target=slow_child.run, args=(writer,))\n"
        "    child.start()\n"
        "    word = json.loads(reader.recv())\n"
        "    time.sleep(float(os.environ.get('STANDIN_SECOND_AFTER_S', '0')))  # SGLang's scheduler getting ready\n"
        "    reader, writer = mp.Pipe(duplex=False)\n"
        "    other = mp.Process(target=slow_child.second, args=(writer,))\n"
        "    second_spawned_at = time.time()\n"
        "    other.start()\n"
        "    word.update(second=json.loads(reader.recv()), second_spawned_at=second_spawned_at)\n"
        "    word.update(parent=os.getpid(), parent_run_id=os.environ['STANDIN_RUN_ID'], parent_argv=sys.argv,\n"
        "        parent_nofile=list(resource.getrlimit(resource.RLIMIT_NOFILE)))\n"
        f"    with open({str(folder / 'spawned.jsonl')!r}, 'a') as f:\n"
        "        f.write(json.dumps(word) + '\\n')\n"
        f"    runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
    )
    return {"PYTHONPATH": str(folder), "SGLANG_STANDIN_FAULTS": ""}


def _stand_bys(study: str) -> list[int]:
    """The study's processes started as stand-bys (prestart_boot.py's role), serving or waiting."""
    found = []
    for pid in servers_of(study):
        try:
            if b"\0standby\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def spawned(folder: Path) -> list[dict]:
    path = folder / "spawned.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _log(folder: Path, study: str, trial: int) -> str:
    return (folder / "trials" / study / str(trial) / "server.log").read_text()


def test_the_scheduler_like_child_runs_on_a_stand_by_that_imported_ahead(tmp_path, unique_study):
    # The child imports for 1.5 s; each server starts for 2 s more (SGLang's CUDA graphs), so a stand-by started
    # while the trial before runs is ready when its trial spawns.
    # The second process is spawned 2 s after the first has spoken: its stand-by, started when the trial before
    # spawned its own second process, has imported by then even on CI's two busy cores (where, spawned at once, it
    # once was still importing and the process was rightly spawned fresh).
    env = {**spawning_server(tmp_path, 1.5), "SGLANG_STANDIN_STARTUP_S": "2", "STANDIN_SECOND_AFTER_S": "2"}
    launcher = {"command": COMMAND, "prestart_spawned": True}
    run = write_run(tmp_path, study=unique_study, trials=4, env=env, launcher=launcher)
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    assert servers_of(unique_study) == []  # stand-bys and prestarted interpreters went with the study

    trials = sorted(load_existing_study(load_config(run)).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    words = {int(w["trial"]): w for w in spawned(tmp_path)}
    assert sorted(words) == [0, 1, 2, 3]
    fresh, last = words[0], words[3]
    # A fresh spawn imports once it is started; the last trial's child had imported before its trial began, in the
    # same process, and its trial's log says so.
    assert fresh["running_at"] - fresh["imported_at"] < 1.0
    assert last["imported_by"] == last["pid"]
    began = trials[3].datetime_start
    assert began is not None and last["imported_at"] < began.timestamp(), (last, began)
    # The first trial, launched fresh, recorded what its spawn needed: the second trial's stand-by started from it.
    assert "is a stand-by started" in _log(tmp_path, unique_study, 1)
    log = _log(tmp_path, unique_study, 3)
    assert f"SGLang's spawned process 1 (pid {last['pid']}, slow_child) is a stand-by" in log, log
    # So is the second process it spawns (SGLang's detokenizer), its imports done before that spawn (its stand-by
    # starts once the trial before has spawned its own second process, so it may finish after this trial began).
    second = last["second"]
    assert second["imported_by"] == second["pid"] and second["imported_at"] < last["second_spawned_at"], last
    assert f"SGLang's spawned process 2 (pid {second['pid']}, slow_child) is a stand-by" in log, log
    # It runs as a spawned child would: the environment the launcher left (its trial's mark, what the launcher
    # set, this run's id), its open-files limit, spawn's argv, its output in its trial's log.
    for word in words.values():
        assert word["set_by_launcher"] == "8"
        assert word["run_id"] == word["parent_run_id"]
        assert word["nofile"] == word["parent_nofile"]
        assert word["argv"] == word["parent_argv"]
    assert log.index("slow_child: imported") < log.index("slow_child: running") < log.index("fired up")
    # Its startup lost the child's imports against the first trial's, whose child was spawned fresh.
    records = {t.number: TrialRecord.of(t) for t in trials}
    startup = {n: r.times.startup_s or 0 for n, r in records.items()}
    assert startup[3] < startup[0] - 1.0, startup
    # The record says so: both of its spawned processes ran on stand-bys that had imported (1.5 s, the child's
    # sleep) ahead; the first trial had none to run on. Status shows it.
    assert records[0].spawned is None
    assert [(s.process, s.target, s.on_standby) for s in records[3].spawned or ()] == [
        (1, "slow_child", True),
        (2, "slow_child", True),
    ]
    assert all((s.imports_s or 0) >= 1.5 and (s.ahead_s or 0) >= (s.imports_s or 0) for s in records[3].spawned or ())
    status = tune("status", "-c", str(run))
    assert "stand-bys ran 2 of 2 spawned processes" in status.stdout, status.stdout


def _spec(tmp_path: Path, trial: int, port: int) -> LaunchSpec:
    flags = ServerFlags.of({"model-path": "standin/qwen3-8b", "host": "127.0.0.1", "port": port})
    return LaunchSpec(flags, {}, tmp_path / str(trial) / "server.log", "127.0.0.1", port, (), UNIT, trial)


def _described(pids: list[int]) -> list[str]:
    """What each process is, for an assertion's message: pid, state, ppid, pgid, its command line's tail."""
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:4]
            tail = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-5:]
        except OSError:
            continue
        out.append(f"{pid} {' '.join(stat)} {[t.decode()[:60] for t in tail]}")
    return out


def _group_size(pgid: int) -> int:
    """Live processes of a process group."""
    size = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        size += int(fields[2]) == pgid and fields[0] != "Z"
    return size


def _launch_three(
    tmp_path: Path, env: dict[str, str], launcher: Launcher | None = None
) -> tuple[Launcher, list[dict], list[int]]:
    """Three launches in a row, each stopped once its child has spoken: the third is the one with a stand-by.
    ``launcher``: by default one with stand-bys on. Returns the launcher, the children's words and each server's
    process group size before it stopped."""
    launcher = launcher or ProcessLauncher(COMMAND, {**FAST_ENV, **env}, prestart_spawned=True)
    sizes = []
    for trial in range(3):
        server = launcher.launch(_spec(tmp_path, trial, free_port()))
        deadline = time.monotonic() + 30
        while len(spawned(tmp_path)) <= trial and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)  # the next trial's stand-by finishes importing meanwhile
        assert isinstance(server, ProcessServer)
        sizes.append(_group_size(server.proc.pid))
        server.stop(1)
    return launcher, spawned(tmp_path), sizes


@pytest.mark.parametrize(
    ("cause", "why"),
    [
        # The child module reads STANDIN_RUN_ID when imported, and the server sets a new one each run.
        ("STANDIN_READ_RUN_ID", "SGLang changed STANDIN_RUN_ID (at {}), which the stand-by read while importing"),
        # The server sets a new open-files limit each run.
        ("STANDIN_NOFILE_VARIES", "resource limits differ (RLIMIT_NOFILE)"),
    ],
)
def test_a_stand_by_that_could_differ_from_a_fresh_spawn_is_not_used(tmp_path, cause, why):
    launcher, words, sizes = _launch_three(tmp_path, {**spawning_server(tmp_path, 0.3), cause: "1"})
    try:
        assert len(words) == 3
        for word in words:  # each child is what a fresh spawn gives
            assert word["run_id_at_import"] == (word["parent_run_id"] if cause == "STANDIN_READ_RUN_ID" else None)
            assert word["nofile"] == word["parent_nofile"], word
        log = (tmp_path / "2" / "server.log").read_text()
        lines = (tmp_path / "slow_child.py").read_text().splitlines()
        at = 1 + next(i for i, x in enumerate(lines) if "RUN_ID_AT_IMPORT = os.environ.get(name)" in x)
        where = f"{tmp_path / 'slow_child.py'}:{at}"
        # The trial's record reads why from the log, with what the unused stand-by had imported.
        first = Spawned.of_log(log)[0]
        assert (first.process, first.on_standby, first.why) == (1, False, why.format(where)), log
        assert first.imports_s is not None and first.imports_s >= 0.3, log
        # The refused stand-by is gone: the trial ran the processes a fresh launch runs (server, child, spawn's
        # resource tracker).
        assert sizes[2] == sizes[0], sizes
    finally:
        launcher.close()
    assert servers_of(UNIT) == [], _described(servers_of(UNIT))


def test_close_stops_a_waiting_stand_by(tmp_path):
    launcher, _, _ = _launch_three(tmp_path, spawning_server(tmp_path, 0.3))
    try:
        assert "is a stand-by started" in (tmp_path / "2" / "server.log").read_text()  # the third ran on one
        # The interpreter prestarted at the third launch waits with its two stand-bys beside it.
        deadline = time.monotonic() + 10
        while len(servers_of(UNIT)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(servers_of(UNIT)) == 3, _described(servers_of(UNIT))
    finally:
        launcher.close()
    assert servers_of(UNIT) == [], _described(servers_of(UNIT))


@pytest.mark.timeout(150)
def test_kill_9_of_the_tuner_takes_the_waiting_stand_by_with_it(tmp_path, unique_study):
    env = {**spawning_server(tmp_path, 3.0), "SGLANG_STANDIN_FAULTS": "hang:mem-fraction-static<=0.8"}
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  mem-fraction-static: {low: 0.7, high: 0.8, step: 0.01}\n")
    run = write_run(
        tmp_path, study=unique_study, space=space, trials=3, env=env,
        launcher={"command": COMMAND, "startup_timeout_s": 600, "prestart_spawned": True},
    )  # fmt: skip
    with tune_start_in_background(run) as tuner:
        # Trial 1 hangs in its startup, its two children running on stand-bys; the interpreter prestarted for
        # trial 2 starts two stand-bys of its own beside it, which import for 3 s.
        deadline = time.monotonic() + 90
        while len(_stand_bys(unique_study)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_stand_bys(unique_study)) == 4
        # Gone with it, the importing stand-bys too (not once their imports end and they find their launcher gone).
        assert left_after_kill_9(tuner, unique_study, 2.0) == []


def test_on_by_default_and_prestart_false_turns_both_off(tmp_path):
    # The launcher a run file that does not name launcher.prestart_spawned makes: the third launch's spawned
    # process runs on a stand-by.
    env = {**FAST_ENV, **spawning_server(tmp_path, 0.3)}
    launcher = make_launcher(load_config(write_run(tmp_path, env=env, launcher={"command": COMMAND})))
    launcher, words, _ = _launch_three(tmp_path, env, launcher)
    try:
        assert len(words) == 3
        log = (tmp_path / "2" / "server.log").read_text()
        assert f"SGLang's spawned process 1 (pid {words[2]['pid']}, slow_child) is a stand-by" in log, log
    finally:
        launcher.close()
    assert servers_of(UNIT) == []
    # `prestart: false` alone is no error (the stand-bys follow it) and no launch has either.
    folder = tmp_path / "off"
    folder.mkdir()
    env = {**FAST_ENV, **spawning_server(folder, 0.3)}
    off = make_launcher(load_config(write_run(folder, env=env, launcher={"command": COMMAND, "prestart": False})))
    off, words, sizes = _launch_three(folder, env, off)
    try:
        assert len(words) == 3
        assert "# prestarted" not in (folder / "2" / "server.log").read_text()
        assert _stand_bys(UNIT) == []
        assert sizes[2] == sizes[0]
    finally:
        off.close()
    assert servers_of(UNIT) == []
