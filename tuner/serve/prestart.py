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
its remaining imports are never hidden from the trial's measured startup. SGLang's scheduler process still imports
anew (it is started with multiprocessing's spawn). A prestarted interpreter lives in its own process group, dies
with the tuner (PR_SET_PDEATHSIG) and carries the study's mark like any server.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Runs in the prestarted interpreter (python -c): only the standard library, whatever venv SGLang runs from. The
# command's module is imported for its imports, then dropped from sys.modules so that runpy runs it as __main__ as
# `python -m` would (runpy warns about a module that is already imported).
_BOOT = """\
import importlib, json, os, runpy, sys
ready, module, *more = sys.argv[1:]
for name in (module, *more):
    importlib.import_module(name)
del sys.modules[module]
os.write(int(ready), b"ready")
os.close(int(ready))
line = sys.stdin.readline()
if not line:
    sys.exit(0)
go = json.loads(line)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
log = os.open(go["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.dup2(log, 1)
os.dup2(log, 2)
os.close(null)
os.close(log)
os.environ.update(go["env"])
sys.argv = [module, *go["argv"]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def python_module(command: list[str]) -> tuple[str, str] | None:
    """``(python, module)`` for a command ``PYTHON -m MODULE`` (what can be prestarted), else None."""
    if len(command) == 3 and command[1] == "-m" and Path(command[0]).name.startswith("python"):
        return command[0], command[2]
    return None


@dataclass
class Prestarted:
    """One interpreter waiting for its trial; ``early_log`` holds what it printed while importing."""

    proc: subprocess.Popen
    env: dict[str, str]
    early_log: Path
    started: float = field(default_factory=time.monotonic)
    _ready_fd: int = -1
    _ready: bool = False

    @classmethod
    def start(
        cls, python: str, module: str, imports: tuple[str, ...], env: dict[str, str], preexec: Callable[[], None]
    ) -> Prestarted:
        read_fd, write_fd = os.pipe()
        fd, name = tempfile.mkstemp(prefix="sglang-tuner-prestart-", suffix=".log")
        try:
            proc = subprocess.Popen(
                [python, "-c", _BOOT, str(write_fd), module, *imports],
                stdin=subprocess.PIPE,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
                preexec_fn=preexec,
            )
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
            self._ready = os.read(self._ready_fd, 16) == b"ready"  # b"": it died importing
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
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"argv": argv, "log": str(log_path), "env": env}) + "\n").encode())
        self.proc.stdin.close()
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
