"""Shared fixtures: run files that point the tuner at the stand-in server, and process bookkeeping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin" / "sglang_standin.py"
# The stand-in's times are scaled down so a trial takes a second or two.
FAST_ENV = {
    "SGLANG_STANDIN_SPEED": "0.02",
    "SGLANG_STANDIN_STARTUP_S": "0.3",
    "SGLANG_STANDIN_COMPILE_S": "0.6",
}


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory) -> Iterator[None]:
    """What the tuner keeps in the user's cache folder (SGLang's help per build) goes to one of the run's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_space(path: Path, fixed: dict | None = None, params: dict | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "fixed": fixed or {},
                "params": params
                or {
                    "schedule-policy": {"choices": ["fcfs", "lof"]},
                    "mem-fraction-static": {"low": 0.7, "high": 0.93, "step": 0.01},
                },
            },
            sort_keys=False,
        )
    )
    return path


def write_run(
    tmp_path: Path, *, study: str = "t", space: Path | None = None, env: dict | None = None, trials: int = 3, **extra
) -> Path:
    """A run file in tmp_path whose storage, trials and studies all live in tmp_path."""
    space = space or write_space(tmp_path / "space.yaml")
    run = {
        "study": study,
        "storage": f"sqlite:///{tmp_path}/studies/{study}.db",
        "trials_dir": str(tmp_path / "trials"),
        "space": str(space),
        "trials": trials,
        "model": {"path": "standin/qwen3-8b"},
        "launcher": {
            "command": [sys.executable, str(STANDIN)],
            "env": {**FAST_ENV, **(env or {})},
            "port": free_port(),
            # A deadline for /health, not a measurement: a loaded machine (a container start, more so) can take
            # more than 20 s to bring up even the stand-in. Tests of the timeout set their own.
            "startup_timeout_s": 120,
            "startup_timeout_extra_s": {"enable-torch-compile": 10},
            "stop_grace_s": 5,
            "compile_cache_dir": str(tmp_path / "compile-cache"),  # never the user's own
        },
        "workload": {
            "input_len": 64,
            "output_len": 16,
            "concurrency": [1, 8],
            "num_prompts": 16,
            "warmup_requests": 1,
            "request_timeout_s": 20,
            # Off in the stand-in's studies: its latencies never need kernels built; the tests of it turn it on.
            "warmup_until_stable": False,
        },
        "sampler": {"seed": 0, "n_startup_trials": 4},
        "confirm": None,  # re-runs at the end cost seconds per test; tests of confirmation turn it on
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict):
            run[key].update(value)
        else:
            run[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run, sort_keys=False))
    return path


def tune(*args: str, cwd: Path | None = None, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from tuner.cli import app; app()", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@contextmanager
def tune_start_in_background(run: Path) -> Iterator[subprocess.Popen]:
    """`tune start -c run` in a session of its own; its group is killed on the way out if it still runs."""
    tuner = subprocess.Popen(
        [sys.executable, "-c", "from tuner.cli import app; app()", "start", "-c", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield tuner
    finally:
        if tuner.poll() is None:
            os.killpg(tuner.pid, signal.SIGKILL)


def left_after_kill_9(tuner: subprocess.Popen, study: str, within_s: float) -> list[int]:
    """Kills the tuner with SIGKILL; the study's processes still alive ``within_s`` later."""
    os.kill(tuner.pid, signal.SIGKILL)
    tuner.wait(30)
    deadline = time.monotonic() + within_s
    while servers_of(study) and time.monotonic() < deadline:
        time.sleep(0.05)
    return servers_of(study)


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url}/health never answered 200")


def servers_of(study: str, trial: int | str | None = None) -> list[int]:
    """PIDs of live processes that carry this study's mark (and this trial's): a server or one of its children."""
    needles = {f"SGLANG_TUNER_STUDY={study}".encode()} | (
        {f"SGLANG_TUNER_TRIAL={trial}".encode()} if trial is not None else set()
    )
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needles <= set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.fixture
def unique_study(request) -> str:
    return f"{request.node.name[:40]}-{os.getpid()}".replace("[", "-").replace("]", "").replace("/", "-")
