"""A server's interpreter started before its trial: its imports run while the GPU still serves the trial before.

About 45 of a warm SGLang launch's ~75 s are Python imports (benchmarks/GPU_SECONDS.md), 20-24 s of them in the
launching process, before anything touches the GPU. A prestarted interpreter imports the command's module and what
that module imports only once it runs (tuner.sglang.entrypoint), says it is ready, and waits. The next launch
hands it the trial's command line and log; it then runs the module as ``__main__`` through runpy, as ``python -m``
does, so SGLang runs exactly as it would have, its imports already in ``sys.modules``.

Only a command of the form ``PYTHON -m MODULE`` is prestarted (what is imported must be known), and a prestarted
interpreter serves only a trial whose environment is the one it started with (the trial's number aside): whatever
SGLang reads from the environment at import time is then what a fresh launch would have read. One that is not
ready when its trial launches (the trial before ended within seconds) is discarded and the trial starts fresh, so
its remaining imports are never hidden from the trial's measured startup. With ``launcher.prestart_spawned``, the
processes SGLang starts with multiprocessing's spawn (scheduler, detokenizer), which import as much again, get the
same treatment: a stand-by interpreter each imports beside the prestarted one and becomes that process where
nothing could differ from a fresh spawn (prestart_boot.py says when). A prestarted interpreter lives in its own
process group with its stand-bys, dies with the tuner (PR_SET_PDEATHSIG) and carries the study's mark like any
server.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# What the prestarted interpreter runs: its own file, standard library only (it runs in SGLang's venv).
_BOOT = Path(__file__).with_name("prestart_boot.py")


def python_module(command: list[str]) -> tuple[str, str] | None:
    """``(python, module)`` for a command ``PYTHON -m MODULE`` (what can be prestarted), else None."""
    if len(command) == 3 and command[1] == "-m" and Path(command[0]).name.startswith("python"):
        return command[0], command[2]
    return None


# The boot's lines on each process SGLang spawned (prestart_boot.py's spawnv_passfds writes them).
_ON_STANDBY = re.compile(
    r"^# prestarted: SGLang's spawned process (?P<n>\d+) \(pid \d+, (?P<target>[\w.]*)\) is a stand-by started "
    r"(?P<ahead>[\d.]+) s before, its imports \((?P<imports>[\d.]+) s\) done$",
    re.M,
)
_FRESH = re.compile(
    r"^# prestarted: SGLang's spawned process (?P<n>\d+) \((?P<target>[\w.]*)\) started fresh"
    r"(?:, its stand-by's imports \((?P<imports>[\d.]+) s\) unused)?: (?P<why>.*)$",
    re.M,
)


@dataclass(frozen=True)
class Spawned:
    """One process SGLang spawned in a launch that had stand-bys (launcher.prestart_spawned): whether it ran on its
    stand-by, the stand-by's import seconds and lead, or why it was started fresh."""

    process: int  # 1: SGLang's first spawn (the scheduler), 2: its second (the detokenizer)
    target: str  # the module of the function it runs
    on_standby: bool
    imports_s: float | None = None  # the stand-by's imports (None: it had not finished them)
    ahead_s: float | None = None  # started this long before its spawn (on a stand-by only)
    why: str | None = None  # why it started fresh

    @classmethod
    def of_log(cls, text: str) -> tuple[Spawned, ...]:
        """Those a launch's server log tells of, in spawn order; () for a launch without stand-bys."""
        found = [
            (m.start(), cls(int(m["n"]), m["target"], True, float(m["imports"]), float(m["ahead"])))
            for m in _ON_STANDBY.finditer(text)
        ]
        found += [
            (m.start(), cls(int(m["n"]), m["target"], False, _seconds(m["imports"]), why=m["why"]))
            for m in _FRESH.finditer(text)
        ]
        return tuple(s for _, s in sorted(found, key=lambda f: f[0]))


def _seconds(text: str | None) -> float | None:
    return None if text is None else float(text)


@dataclass(frozen=True)
class Boot:
    """How a server's interpreter is started through prestart_boot.py: SGLang's python and module, what the module
    imports once it runs, and where this environment's launches record what SGLang's spawned processes needed
    (the next ones read it to start their stand-bys; None: no stand-bys)."""

    python: str
    module: str
    imports: tuple[str, ...]
    spawn_record: Path | None

    def popen(self, ready_fd: int, stdout: int, env: dict[str, str], preexec: Callable[[], None]) -> subprocess.Popen:
        """The interpreter, its trial's line still to come on stdin; ``ready_fd`` -1: none says when it is ready."""
        record = str(self.spawn_record or "")
        boot = [self.python, "-c", _BOOT.read_text(), "launcher", str(ready_fd), str(_BOOT), record]
        return subprocess.Popen(
            [*boot, self.module, *self.imports],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(ready_fd,) if ready_fd >= 0 else (),
            start_new_session=True,
            preexec_fn=preexec,
        )


def _send(proc: subprocess.Popen, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps({"argv": argv, "log": str(log_path), "env": env}) + "\n").encode())
    proc.stdin.close()


def start_now(
    boot: Boot, env: dict[str, str], preexec: Callable[[], None], argv: list[str], log_path: Path
) -> subprocess.Popen:
    """A fresh launch through the same boot, its trial's line sent at once: it runs as ``python -m`` would, its
    imports in its measured startup, and it too records what SGLang's spawned processes needed, so that the next
    trial's stand-bys can start while this trial runs."""
    with open(log_path, "ab") as log:
        proc = boot.popen(-1, log.fileno(), env, preexec)
    _send(proc, argv, log_path, {})
    return proc


@dataclass
class Prestarted:
    """One interpreter waiting for its trial; ``early_log`` holds what it printed while importing."""

    proc: subprocess.Popen
    env: dict[str, str]
    early_log: Path
    started: float = field(default_factory=time.monotonic)
    imports_s: float | None = None  # how long its imports took, once it is ready
    _ready_fd: int = -1
    _ready: bool = False

    @classmethod
    def start(cls, boot: Boot, env: dict[str, str], preexec: Callable[[], None]) -> Prestarted:
        read_fd, write_fd = os.pipe()
        fd, name = tempfile.mkstemp(prefix="sglang-tuner-prestart-", suffix=".log")
        try:
            proc = boot.popen(write_fd, fd, env, preexec)
        except OSError:
            os.close(read_fd)
            Path(name).unlink(missing_ok=True)
            raise
        finally:
            os.close(write_fd)
            os.close(fd)
        return cls(proc, env, Path(name), _ready_fd=read_fd)

    def ready(self) -> bool:
        """Whether its imports are done and it waits (never blocks: one still importing is not ready)."""
        if not self._ready and self._ready_fd >= 0 and select.select([self._ready_fd], [], [], 0)[0]:
            said = os.read(self._ready_fd, 64).split()  # b"ready SECONDS"; b"": it died importing
            self._ready = said[:1] == [b"ready"]
            self.imports_s = float(said[1]) if self._ready else None
            os.close(self._ready_fd)
            self._ready_fd = -1
        return self._ready and self.proc.poll() is None

    def run(self, argv: list[str], log_path: Path, env: dict[str, str]) -> float:
        """Make it the server: ``argv`` after the module, output appended to ``log_path`` after what it printed
        while importing, ``env`` set on top of its own. Returns how many seconds ahead it was started."""
        with open(log_path, "ab") as log:
            log.write(b"# prestarted: its imports ran before this launch (sglang-tuner launcher.prestart)\n")
            log.write(self.early_log.read_bytes())
        self.early_log.unlink(missing_ok=True)
        _send(self.proc, argv, log_path, env)
        return time.monotonic() - self.started

    def discard(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()
        if self._ready_fd >= 0:
            os.close(self._ready_fd)
            self._ready_fd = -1
        self.early_log.unlink(missing_ok=True)
