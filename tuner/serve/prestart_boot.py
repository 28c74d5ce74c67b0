"""What a prestarted interpreter runs (``python -c``, this file's text): the standard library only, whatever venv
SGLang runs from. The tuner never imports it; tuner/serve/prestart.py starts it.

Two roles, the first argument:

``launcher``: the server's own interpreter. It imports the command's module and what that module imports once it
runs, says it is ready, and waits for its trial's command line; then it runs the module as ``__main__`` through
runpy, as ``python -m`` does. It also starts a *stand-by* (below) for each process SGLang will start with
multiprocessing's spawn (its scheduler per GPU, its detokenizer), once it knows what those need: the *record* the
launch before wrote as it spawned them (per process, in order: the environment SGLang had changed by then, its
resource limits, the module of the process's target). Every launch writes one, a fresh one too.

``standby``: a child of the launcher that imports what a spawned process imports before it runs (the launching
module and its target's module), reports what it did while importing (environment variables read, the file
descriptors it holds), and waits. When SGLang spawns, the launcher hands it what spawn
would have given a fresh interpreter (descriptors at their numbers, stdio, the environment as SGLang left it) and
it runs spawn's own bootstrap: from there it is the process spawn would have started, its imports done.

The launcher hands over only when nothing the stand-by did could differ from a fresh spawn: it reported before the
spawn (its imports are never hidden in a measured startup), none of the environment variables that differ was read
while it imported (nor any read by C libraries at load: CUDA_*, TORCH_*, ...), resource limits, working folder and
CPU affinity are the same. Otherwise, or if the hand-over fails, SGLang spawns as it always does. Either way the
server's log says which, and why.
"""

import ctypes
import fcntl
import importlib
import json
import os
import re
import resource
import runpy
import select
import signal
import socket
import sys
import time
from collections.abc import ItemsView, Iterator, ValuesView
from types import FrameType

_PR_SET_PDEATHSIG = 1
_MOST_STANDBYS = 8  # SGLang spawns a scheduler per GPU of the server, a detokenizer, and more with options
_FORK_FLAG = "--multiprocessing-fork"
# Read by C code (the CUDA driver, torch's and glibc's start-up) rather than through os.environ: a change to one of
# these after the stand-by loaded them cannot be seen, so it is never handed over.
_READ_AT_LOAD = ("CUDA_", "TORCH_", "PYTORCH_", "NCCL_", "LD_", "OMP_", "MKL_", "PYTHON", "MALLOC_", "GLIBC_")
_READS: dict[str, str] = {}  # what a stand-by's imports looked up in os.environ, and where first (file:line)
_HANDED: dict[str, str] = {}  # the names a scan of the environment handed out, one object each (_Recording: why)
_ENVIRON_CODE = re.compile(r"(^<frozen |/)(os|_collections_abc)(\.py|>)$")  # os.environ's methods, os.getenv
# Each limit once, by its first name (RLIMIT_OFILE is RLIMIT_NOFILE under another name).
_LIMITS = sorted({getattr(resource, n): n for n in sorted(dir(resource), reverse=True) if n[:7] == "RLIMIT_"}.values())


def _die_with_parent(sig: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def _limits() -> dict[str, list[int]]:
    return {name: list(resource.getrlimit(getattr(resource, name))) for name in _LIMITS}


def _say(line: str) -> None:
    print(f"# prestarted: {line}", flush=True)


def _hand(name: str) -> str:
    """The one object a scan hands out for ``name``: a decoded string, never an interned constant. CPython shares
    one-character strings, so those are never taken for handed out."""
    return _HANDED.setdefault(name, name) if len(name) > 1 else name


def _caller() -> FrameType:
    """The frame that is looking the environment up: the first outside os.environ's own code and this file's."""
    frame = sys._getframe(1)
    ours = frame.f_code.co_filename
    while frame.f_back and (frame.f_code.co_filename == ours or _ENVIRON_CODE.search(frame.f_code.co_filename)):
        frame = frame.f_back
    return frame


class _Recording(os._Environ[str]):
    """os.environ that remembers which variables were looked up, and where (os.getenv and .get come here too)."""

    # A scan of the whole environment is not a read of each variable: SGLang's environ.py goes through all of them
    # at import to rename SGL_* ones, and dict(os.environ), `for k in sorted(os.environ): os.environ[k]` or a
    # helper handed the names of an earlier scan look up what they were handed; each would count SGLANG_RUN_ID (new
    # each launch) as read. What tells them apart is the name's object: a scan's lookup is by a name the scan
    # handed out (_HANDED), however it travelled (in any frame, helper or later function); a read by name is by
    # another object (a name spelled in code is an interned constant, one built from parts a new string). A name a
    # scan handed out and code made anew (k.upper(), an f-string) counts as read.

    def _look(self, key: str) -> None:
        if key in _READS or _HANDED.get(key) is key:
            return
        frame = _caller()
        path = frame.f_code.co_filename
        _READS[key] = f"{path.rpartition('-packages/')[2] if '-packages/' in path else path}:{frame.f_lineno}"

    def __getitem__(self, key: str) -> str:
        self._look(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._look(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        for key in list(self._data):  # type: ignore[attr-defined]
            yield _hand(self.decodekey(key))

    def _plain(self) -> dict[str, str]:
        # Its names are handed out too: a name taken from .items() or .copy() and looked up is a scan's as well.
        return {_hand(self.decodekey(k)): self.decodevalue(v) for k, v in self._data.items()}  # type: ignore[attr-defined]

    def copy(self) -> dict[str, str]:
        return self._plain()

    def items(self) -> ItemsView[str, str]:
        return self._plain().items()

    def values(self) -> ValuesView[str]:
        return self._plain().values()


def record_reads() -> tuple[os._Environ[str], dict[str, str]]:
    """Makes os.environ a recorder of the variables looked up through it from now on; returns the plain one (to put
    back) and the names looked up so far, each with where it was first looked up. benchmarks/h200/spawn_import_probe.py
    uses it too."""
    plain = os.environ
    data = plain._data  # type: ignore[attr-defined]  # the dict os.environ keeps its (encoded) variables in
    os.environ = _Recording(data, plain.encodekey, plain.decodekey, plain.encodevalue, plain.decodevalue)  # noqa: B003
    return plain, _READS


def standby(launcher_pid: int, sock_fd: int, main_module: str, target_module: str) -> None:
    _die_with_parent(signal.SIGKILL)  # a stand-by never outlives its launcher,
    if os.getppid() != launcher_pid:  # nor one that died before the line above
        sys.exit(0)
    plain, reads = record_reads()
    sys.argv = ["-c", _FORK_FLAG]  # what a spawned interpreter's sys.argv is until spawn prepares it
    started = time.monotonic()
    importlib.import_module(main_module)
    del sys.modules[main_module]  # spawn runs it again, as __mp_main__ (runpy warns about one already imported)
    importlib.import_module(target_module)
    report = {
        "reads": reads,
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "cwd": os.getcwd(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "limits": _limits(),
        "imports_s": round(time.monotonic() - started, 2),
    }
    sock = socket.socket(fileno=sock_fd)
    sock.sendall(json.dumps(report).encode())
    msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1024)
    if not msg:
        sys.exit(0)  # its launcher went, or spawned fresh
    go = json.loads(msg)
    # Received descriptors land on the lowest free numbers, which may be numbers others must take: move them all
    # above every number in play first, then onto their numbers.
    base = max([*go["targets"], *fds]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, base) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, go["targets"], strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ = plain  # noqa: B003 - the recorder goes, the variables stay
    for key, value in go["env"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _die_with_parent(0)  # as spawned: SGLang's scheduler asks for its own parent-death signal
    sock.sendall(b"ok")
    sock.close()
    exec(compile(go["prog"], "<string>", "exec"), {"__name__": "__main__"})


class _Standby:
    """The launcher's side of one stand-by: started from a record's entry, handed its spawn if nothing differs."""

    def __init__(self, pid: int, sock: socket.socket, env: dict[str, str], exe: str, opts: list[str]) -> None:
        self.pid, self.sock, self.env, self.exe, self.opts = pid, sock, env, exe, opts
        self.started = time.monotonic()
        self._report: dict | None = None  # {} once it died

    @classmethod
    def start(cls, source: str, record: dict, main_module: str) -> "_Standby | None":
        """One for the spawn ``record`` describes (an entry of the launch before's record), or None if it cannot
        be like it (another executable or interpreter flags, a hard limit this process cannot match)."""
        from multiprocessing import spawn, util

        exe, opts = os.fsdecode(spawn.get_executable()), util._args_from_interpreter_flags()  # type: ignore[attr-defined]
        if record["executable"] != exe or record["opts"] != opts:
            return None
        env = dict(os.environ)
        for key, value in record["env"].items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        ours = _limits()
        if any(record["limits"][n][1] != ours[n][1] for n in _LIMITS if n in record["limits"]):
            return None  # a hard limit can be lowered only once: not for a stand-by
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(child.fileno(), True)
        argv = [exe, *opts, "-c", source, "standby", str(os.getpid()), str(child.fileno()), main_module]
        argv.append(record["target"])
        try:
            # The limits SGLang set before it spawned are the stand-by's from its start (glibc sizes threads'
            # stacks from RLIMIT_STACK when a program starts), so the launcher takes them for the moment of the spawn.
            for name, (soft, hard) in record["limits"].items():
                if name in ours and soft != ours[name][0]:
                    resource.setrlimit(getattr(resource, name), (soft, hard))
            pid = os.posix_spawn(exe, argv, env)
        except (OSError, ValueError):
            parent.close()
            return None
        finally:
            for name, (soft, hard) in ours.items():
                if resource.getrlimit(getattr(resource, name)) != (soft, hard):
                    resource.setrlimit(getattr(resource, name), (soft, hard))
            child.close()
        return cls(pid, parent, env, exe, opts)

    def report(self) -> dict | None:
        """What it did while importing; None while it still imports (never blocks) or if it died."""
        if self._report is None and select.select([self.sock], [], [], 0)[0]:
            msg = self.sock.recv(1 << 20)
            self._report = json.loads(msg) if msg else {}
        return self._report or None

    def above(self) -> int:
        """The lowest descriptor number above every one it holds: numbers spawn may pass it without a clash."""
        return max(self._report["fds"]) + 1 if self._report else 0

    def refusal(self, path: bytes, args: list[str]) -> str | None:
        """Why it cannot be the process spawn is about to start; None: it can."""
        report = self.report()
        if report is None:
            return "its stand-by was still importing" if self._report is None else "its stand-by died importing"
        if os.fsdecode(path) != self.exe or args[1 : 1 + len(self.opts)] != self.opts or args[-3] != "-c":
            return f"spawn runs {os.fsdecode(path)}, the stand-by {self.exe}"
        reads = report["reads"]
        seen = sorted(k for k in self._changed() if k in reads or k.startswith(_READ_AT_LOAD))
        if seen:
            where = (f"{k} (at {reads[k]})" if k in reads else f"{k} (at load)" for k in seen)
            return f"SGLang changed {', '.join(where)}, which the stand-by read while importing"
        limits = _limits()
        differ = sorted(n for n in limits if report["limits"].get(n) != limits[n])
        if differ:
            return f"resource limits differ ({', '.join(differ)})"
        if report["cwd"] != os.getcwd() or report["affinity"] != sorted(os.sched_getaffinity(0)):
            return "its working folder or CPU affinity differs"
        return None

    def _changed(self) -> set[str]:
        return {k for k in {*os.environ, *self.env} if os.environ.get(k) != self.env.get(k)}

    def hand_over(self, args: list[str], passfds: list[int]) -> bool:
        """Gives it what spawn would give a fresh interpreter. ``passfds`` at or above ``above()`` keep their
        numbers (the process's own, moved there as spawn pickled them); the others (the resource tracker's and the
        pipe's, named on spawn's command line, and the child's end of the sentinel pipe) get new numbers there,
        the command line rewritten to match."""
        prog, base, sent, dups = args[-2], self.above(), [0, 1, 2], []
        try:
            for fd in passfds:
                target = fd
                if fd < base:
                    target = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base)
                    dups.append(target)
                    prog = re.sub(rf"\b(tracker_fd|pipe_handle)={fd}\b", rf"\g<1>={target}", prog)
                sent.append(target)
            go = {"targets": sent, "env": {k: os.environ.get(k) for k in self._changed()}, "prog": prog}
            socket.send_fds(self.sock, [json.dumps(go).encode()], sent)
            return bool(select.select([self.sock], [], [], 10)[0] and self.sock.recv(16) == b"ok")
        except OSError:
            return False
        finally:
            for fd in dups:
                os.close(fd)

    def discard(self) -> None:
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


class _Record:
    """The launch before's record as it grows, read again only once the file has changed."""

    def __init__(self, path: str) -> None:
        self.path, self._seen = path, (0, 0)

    def new_entries(self, known: int) -> list[dict]:
        """Its entries past the first ``known``; none if stand-bys are off (no path) or nothing changed."""
        try:
            st = os.stat(self.path) if self.path else None
        except OSError:
            return []
        if st is None or (st.st_mtime_ns, st.st_size) == self._seen:
            return []
        self._seen = (st.st_mtime_ns, st.st_size)
        try:
            with open(self.path) as f:
                return list(json.load(f))[known:_MOST_STANDBYS]
        except (OSError, ValueError):
            return []


def _install_spawn_hook(standbys: "list[_Standby | None]", record_path: str, base_env: dict[str, str]) -> None:
    """Each process SGLang spawns goes to its stand-by where it can (the scheduler first, then the detokenizer,
    in SGLang's order); what each needed is recorded for the next launch: the environment as it differs from
    ``base_env``, what this trial's interpreter began with."""
    import multiprocessing.popen_spawn_posix as popen_spawn_posix
    from multiprocessing import util

    spawn_fresh = util.spawnv_passfds
    launch = popen_spawn_posix.Popen._launch  # type: ignore[attr-defined]
    record: list[dict] = []
    state = {"target": "", "prepared": False}

    def standby() -> "_Standby | None":  # the stand-by for the spawn under way (the record's next entry)
        return standbys[len(record)] if len(record) < len(standbys) else None

    def _launch(popen: popen_spawn_posix.Popen, process_obj: object) -> None:
        state["target"] = getattr(getattr(process_obj, "_target", None), "__module__", "") or ""
        state["prepared"] = False
        sb = standby()
        if not (sb and sb.report()):
            return launch(popen, process_obj)
        # Descriptors the process's arguments carry are named by number in what spawn pickles for it: each goes
        # above every number the stand-by holds, so that it can take them at the same numbers.
        above, dups = sb.above(), []

        def duplicate_for_child(fd: int) -> int:
            dups.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above))
            popen._fds.append(dups[-1])  # type: ignore[attr-defined]
            return dups[-1]

        popen.duplicate_for_child = duplicate_for_child  # type: ignore[method-assign]
        state["prepared"] = True
        try:
            return launch(popen, process_obj)
        finally:
            for fd in dups:
                os.close(fd)

    def spawnv_passfds(path: bytes, args: list[str], passfds: list[int]) -> int:
        if _FORK_FLAG not in args or len(record) >= _MOST_STANDBYS:  # the resource tracker, or past the most
            return spawn_fresh(path, args, passfds)
        sb, which = standby(), f"SGLang's spawned process {len(record) + 1}"
        changed = {k for k in {*os.environ, *base_env} if os.environ.get(k) != base_env.get(k)}
        record.append(
            {
                "env": {k: os.environ.get(k) for k in sorted(changed)},
                "limits": _limits(),
                "executable": os.fsdecode(path),
                "opts": util._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                "target": state["target"],
            }
        )
        if all(r["target"] for r in record):
            with open(record_path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(record_path + ".tmp", record_path)
        if sb is None:
            return spawn_fresh(path, args, passfds)
        # A report that came after spawn pickled the process's descriptors came too late for their numbers.
        reason = sb.refusal(path, list(args)) if state["prepared"] else "its stand-by was still importing"
        # serve/prestart.py's Spawned reads these lines back for the trial's record: keep the two in step.
        report = sb.report()  # None: still importing, or died (the reason says which)
        if reason is None and report and sb.hand_over(list(args), sorted(map(int, passfds))):
            _say(
                f"{which} (pid {sb.pid}, {state['target']}) is a stand-by started "
                f"{time.monotonic() - sb.started:.1f} s before, its imports ({report['imports_s']} s) done"
            )
            sb.sock.close()
            return sb.pid
        sb.discard()
        unused = f", its stand-by's imports ({report['imports_s']} s) unused" if report and state["prepared"] else ""
        _say(f"{which} ({state['target']}) started fresh{unused}: {reason or 'the hand-over failed'}")
        return spawn_fresh(path, args, passfds)

    popen_spawn_posix.Popen._launch = _launch  # type: ignore[attr-defined]
    util.spawnv_passfds = spawnv_passfds  # type: ignore[assignment]  # typeshed: its own arguments, wider


def launcher(ready_fd: int, boot_path: str, record_path: str, module: str, *imports: str) -> None:
    # The stand-bys import beside this interpreter, one per process the launch before spawned, from its record
    # where there is one (a launch records its spawns as it makes them, seconds after it starts).
    started = time.monotonic()
    # What a spawn needs is recorded against the environment before the imports below: what they set (sklearn's
    # KMP_*, SGLang's TLLM_LOG_LEVEL) is part of it, since the next launch's stand-bys may start before its own
    # imports have set it (they start as soon as the record is there).
    before_imports = dict(os.environ)
    standbys: list[_Standby | None] = []
    record, source = _Record(record_path), ""

    def start_standbys() -> None:
        nonlocal source
        for entry in record.new_entries(len(standbys)):
            if not source:
                with open(boot_path) as f:
                    source = f.read()
            standbys.append(_Standby.start(source, entry, module))

    start_standbys()
    for name in (module, *imports):
        importlib.import_module(name)
    del sys.modules[module]  # runpy runs it as __main__, as `python -m` would (it warns about one already imported)
    if ready_fd >= 0:  # -1: a fresh launch, its line sent at once (prestart.start_now)
        os.write(ready_fd, f"ready {time.monotonic() - started:.2f}".encode())  # and how long its imports took
        os.close(ready_fd)
    while not select.select([sys.stdin], [], [], 0.25)[0]:  # waits for the trial's line
        start_standbys()
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
    if record_path:
        _install_spawn_hook(standbys, record_path, {**before_imports, **go["env"]})
    sys.argv = [module, *go["argv"]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "standby":
        standby(int(rest[0]), int(rest[1]), rest[2], rest[3])
    else:
        launcher(int(rest[0]), *rest[1:])
