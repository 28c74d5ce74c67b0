"""Local process launcher: SGLang in its own process group, output to the trial's server.log."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuner.serve.compile_cache import CompileCache
from tuner.serve.help_cache import kept_help
from tuner.serve.launcher import STUDY_MARK, TRIAL_MARK, Launcher, LaunchError, LaunchSpec, Server
from tuner.serve.prestart import Boot, Prestarted, python_module, start_now
from tuner.sglang.catalog import FlagCatalog, read_catalog
from tuner.sglang.entrypoint import RUN_TIME_IMPORTS
from tuner.sglang.flags import deploy_defaults, one_per_line, shell_args

DEFAULT_COMMAND = ("python", "-m", "sglang.launch_server")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: if the tuner is killed (even with -9), the kernel kills the server too.
    # SGLang's own children already die with it, so the whole tree goes.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def exit_status(returncode: int | None) -> int | None:
    """Popen's -N for a signal becomes the shell's 128+N, which is what Docker and users report."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class ProcessServer(Server):
    proc: subprocess.Popen = field(kw_only=True, repr=False)  # required: kw_only, after the base's defaulted ident

    def exit_code(self) -> int | None:
        return exit_status(self.proc.poll())

    def stop(self, grace_s: float = 10.0) -> int | None:
        pgid = self.proc.pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # The leader may be gone while its children (scheduler, detokenizer) still hold the GPU: kill the group.
        _signal_group(pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        _wait_group_gone(pgid, 5.0)
        return self.exit_code()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _live_members(pgid):
        time.sleep(0.02)


def _live_members(pgid: int) -> bool:
    """Whether a process of the group is still running; zombies waiting for init to reap them hold nothing."""
    for pid in _pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class ProcessLauncher(Launcher):
    kind = "process"

    def __init__(
        self,
        command: list[str] | tuple[str, ...] = DEFAULT_COMMAND,
        env: dict[str, str] | None = None,
        compile_cache: CompileCache | None = None,
        prestart: bool = True,
        prestart_spawned: bool = True,
    ):
        self.command = list(command)
        self.env = dict(env or {})
        self.compile_cache = compile_cache  # one folder of compiled kernels for every trial (None: off)
        # The next trial's interpreter, importing while this one runs (serve/prestart.py); one per environment,
        # that is per GPU slot. None: the command cannot be prestarted or prestart is off.
        self._prestart = python_module(self.command) if prestart else None
        self._waiting: dict[tuple[tuple[str, str], ...], Prestarted] = {}
        # Stand-bys for SGLang's spawned processes (launcher.prestart_spawned), from records of what its spawns
        # needed, one file per environment in a folder made at the first launch.
        self._standbys = prestart_spawned and self._prestart is not None
        self._records: Path | None = None
        self._lock = threading.Lock()

    def _cache_env(self, spec: LaunchSpec) -> dict[str, str]:
        return self.compile_cache.env({**self.env, **spec.env}) if self.compile_cache else {}

    def compile_cache_folders(self, spec: LaunchSpec) -> list[Path] | None:
        if not (self.compile_cache and self._cache_env(spec)):
            return None
        # Those the user's environment names count too: the H200 kit's env.sh sets three of the four.
        return self.compile_cache.folders({**self.env, **spec.env})

    def flag_catalog(self) -> FlagCatalog:
        env = {**os.environ, **self.env}
        return read_catalog(self.command, env, keep=kept_help(self.command, env))

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        env = {**os.environ, **self._cache_env(spec), **self.env, **spec.env, **spec.marks()}
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def launch(self, spec: LaunchSpec) -> ProcessServer:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [*self.command, *spec.flags.argv()]
        if self.compile_cache:
            self.compile_cache.prepare(self._cache_env(spec))
        env = self.environment(spec)
        key = _prestart_key(env)
        with self._lock:
            waiting = self._waiting.pop(key, None)
        with open(spec.log_path, "ab") as log:
            log.write(f"# {shlex.join(argv)}\n".encode())
        server = None
        if waiting is not None and waiting.ready():
            try:
                ahead = waiting.run(spec.flags.argv(), spec.log_path, {TRIAL_MARK: env[TRIAL_MARK]})
                server = ProcessServer(
                    spec=spec,
                    ident=str(waiting.proc.pid),
                    proc=waiting.proc,
                    prestarted_s=ahead,
                    prestart_imports_s=waiting.imports_s,
                )
            except OSError:  # it died since it said ready (its pipe is gone): start fresh, as if it had not been
                pass
        if server is None:
            if waiting is not None:
                waiting.discard()
            server = self._start(argv, spec, env)
        self._prestart_next(key, env)
        return server

    def _start(self, argv: list[str], spec: LaunchSpec, env: dict[str, str]) -> ProcessServer:
        try:
            if self._standbys:  # through the boot, which records its spawns for the next trial's stand-bys
                boot = self._boot(_prestart_key(env))
                proc = start_now(boot, env, _die_with_parent, spec.flags.argv(), spec.log_path)
            else:
                with open(spec.log_path, "ab") as log:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
        except OSError as exc:
            raise LaunchError(f"cannot start {shlex.join(self.command)}: {exc.strerror or exc}") from None
        return ProcessServer(spec=spec, ident=str(proc.pid), proc=proc)

    def _boot(self, key: tuple[tuple[str, str], ...]) -> Boot:
        """How this environment's servers start through prestart_boot.py, their spawn record per environment."""
        assert self._prestart is not None
        python, module = self._prestart
        record = None
        if self._standbys:
            if self._records is None:
                self._records = Path(tempfile.mkdtemp(prefix="sglang-tuner-spawn-"))
            record = self._records / (hashlib.sha256(repr(key).encode()).hexdigest()[:16] + ".json")
        return Boot(python, module, RUN_TIME_IMPORTS.get(module, ()), record)

    def _prestart_next(self, key: tuple[tuple[str, str], ...], env: dict[str, str]) -> None:
        if self._prestart is None:
            return
        try:
            # Its trial's number is not known yet: the mark says what it is until then.
            started = Prestarted.start(self._boot(key), {**env, TRIAL_MARK: "prestarted"}, _die_with_parent)
        except OSError:
            return  # the next launch starts fresh and reports why it cannot
        with self._lock:
            old = self._waiting.pop(key, None)
            self._waiting[key] = started
        if old is not None:
            old.discard()

    def close(self) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for w in waiting:
            w.discard()
        if self._records is not None:
            shutil.rmtree(self._records, ignore_errors=True)
            self._records = None

    def cleanup_orphans(self, study: str) -> list[str]:
        """Kill process groups whose environment marks them as servers of ``study``."""
        stopped = []
        needle = f"{STUDY_MARK}={study}".encode()
        for pid in _pids():
            if pid == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                pgid = os.getpgid(pid)
            except (OSError, ProcessLookupError):
                continue
            if needle in environ and pgid != os.getpgid(0):
                _signal_group(pgid, signal.SIGKILL)
                _wait_group_gone(pgid, 5.0)
                stopped.append(f"process group {pgid}")
        return sorted(set(stopped))

    def describe(self) -> dict[str, str]:
        return {"launcher": "process", "command": shlex.join(self.command)}

    def deploy_script(self, spec: LaunchSpec) -> str:
        lines = []
        env = {**self.env, **spec.env}
        for key, value in env.items():
            if key != "CUDA_VISIBLE_DEVICES":
                lines.append(f"export {key}={shlex.quote(value)}")
        defaults = {"HOST": spec.host, "PORT": str(spec.port)}
        gpus = ",".join(map(str, spec.gpus)) or env.get("CUDA_VISIBLE_DEVICES", "")  # as environment() does
        if gpus:
            defaults["CUDA_VISIBLE_DEVICES"] = gpus
        lines += deploy_defaults(defaults, export=("CUDA_VISIBLE_DEVICES",))
        head = " ".join(shlex.quote(a) for a in self.command)
        args = shell_args(spec.flags.argv(), {"--host": '"$HOST"', "--port": '"$PORT"'})
        lines.append("exec " + " \\\n  ".join([head, *one_per_line(args)]))
        return "\n".join(lines) + "\n"


def _prestart_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k != TRIAL_MARK))


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
