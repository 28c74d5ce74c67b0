"""SGLang's flag catalog, read from ``launch_server --help``: which flags exist, their types and choices, so that a
space or reference naming a flag SGLang would refuse is caught before any launch."""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tuner.errors import TunerError
from tuner.sglang.flag_types import FLAG_TYPES
from tuner.sglang.flags import FlagValue, format_value


@dataclass(frozen=True)
class FlagInfo:
    name: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    deprecated: bool = False
    value_type: str | None = None  # "int", "human_int" or "float" where known; None: text (or not known)


def parses_as(value_type: str, text: str) -> bool:
    """Whether the flag's argparse ``type=`` accepts ``text``: int(), float(), or SGLang's human_readable_int
    (whole numbers, or 1k, 2.5M, 4Gi)."""
    if value_type == "human_int" and re.fullmatch(r"\d+(\.\d+)?[kMGT]|\d+[KMGT]i", text.strip()):
        return True
    try:
        (float if value_type == "float" else int)(text)
        return True
    except ValueError:
        return False


@dataclass
class FlagCatalog:
    """The flags one SGLang build accepts, read from its ``--help``.

    ``--help`` shows names, choices and whether a flag takes a value, but not the value's type (its metavar,
    MEM_FRACTION_STATIC, says nothing): types come from SGLang 0.5.17's server_args.py (tuner/sglang/flag_types.py).
    """

    flags: dict[str, FlagInfo] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_help(cls, text: str, source: str = "") -> FlagCatalog:
        catalog = cls(source=source)
        # argparse prints each option at two spaces of indent: "  --name METAVAR, --alias METAVAR  help".
        blocks = re.split(r"\n(?=  -)", text)
        for block in blocks:
            head = block.strip().split("\n", 1)[0]
            names = re.findall(r"(?:^|,\s)--([a-z0-9][a-z0-9-]*)(\s+(\{[^}]*\}|[A-Z_][A-Z0-9_]*)(?=,|\s|$))?", head)
            if not names:
                continue
            deprecated = "deprecated" in block.lower()
            # Python 3.13 prints the metavar once for all aliases ("--tp-size, --tensor-parallel-size TP_SIZE").
            takes_value = any(rest.strip() for _, rest, _ in names)
            metavar = next((m for _, _, m in names if m), "")
            choices = tuple(c.strip() for c in metavar[1:-1].split(",")) if metavar.startswith("{") else ()
            for name, _, _ in names:
                value_type = FLAG_TYPES.get(name) if takes_value and not choices else None
                catalog.flags[name] = FlagInfo(name, takes_value, choices, deprecated, value_type)
        return catalog

    def check(self, name: str, value: FlagValue) -> str | None:
        """Why this flag and value would be refused by SGLang, or None if it would be accepted."""
        info = self.flags.get(name)
        if info is None:
            near = [n for n in self.flags if n.startswith(name)]
            if near:
                return f"--{name} is not a full flag name (it could match {', '.join('--' + n for n in near[:4])})"
            return f"--{name} is not a flag of this SGLang ({self.source})"
        if isinstance(value, bool):
            if info.takes_value:
                return f"--{name} takes a value, not true/false"
            return None
        if not info.takes_value:
            return f"--{name} is a switch: use true or false, not {value!r}"
        if info.choices and format_value(value) not in info.choices:
            return f"--{name} {value} is not one of {', '.join(info.choices)}"
        if info.value_type and not parses_as(info.value_type, format_value(value)):
            kind = "a number" if info.value_type == "float" else "a whole number"
            return f"--{name} takes {kind}, not {value!r}"
        return None

    def value_type(self, name: str) -> str | None:
        info = self.flags.get(name)
        return info.value_type if info else None


def read_catalog(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    quiet_s: float = 30,
    timeout: float = 180,
    keep: Path | None = None,
) -> FlagCatalog:
    """Run ``<command> --help`` once: SGLang's flags drift between releases, so ask the build that will run.

    SGLang prints its help after a few seconds of imports; a command that prints nothing for ``quiet_s`` is not
    answering ``--help`` (a wrapper that ignores its arguments) and is stopped rather than waited on for minutes.
    ``keep``: as ``kept_or_read``.
    """
    source = shlex.join(command)
    return kept_or_read(keep, source, lambda: _read_help(command, env, quiet_s, timeout, source))


def kept_or_read(keep: Path | None, source: str, read: Callable[[], str]) -> FlagCatalog:
    """The catalog of the help kept in ``keep`` (tuner/serve/help_cache.py), else of ``read()``'s, which is then
    kept there. A kept file that is no launch_server's help (emptied, edited) or cannot be read is read again."""
    if keep is not None:
        try:
            kept = keep.read_text()
        except (OSError, UnicodeDecodeError):
            kept = ""
        if "--port" in kept:
            return FlagCatalog.from_help(kept, source)
    text = read()
    if keep is not None:
        _keep(keep, text)
    return FlagCatalog.from_help(text, source)


def _read_help(
    command: Sequence[str], env: Mapping[str, str] | None, quiet_s: float, timeout: float, source: str
) -> str:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [*command, "--help"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env) if env else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise FlagCatalogError(f"cannot run the server command {source!r}: {_why_not_runnable(exc)}") from None
        started = time.monotonic()
        try:
            while proc.poll() is None:
                waited = time.monotonic() - started
                silent = os.fstat(out.fileno()).st_size == 0 and os.fstat(err.fileno()).st_size == 0
                if silent and waited > quiet_s:
                    raise FlagCatalogError(
                        f"{source} --help printed nothing in {quiet_s:.0f} s, so it was stopped: "
                        f"is this SGLang's launch_server? (--server-command or launcher.command, "
                        f"e.g. python -m sglang.launch_server)"
                    )
                if waited > timeout:
                    raise FlagCatalogError(f"{source} --help did not finish in {timeout:.0f} s, so it was stopped")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode == 0 and "--port" not in stdout:
        raise FlagCatalogError(
            f"{source} --help lists no --port: is this SGLang's launch_server? "
            f"(--server-command or launcher.command, e.g. python -m sglang.launch_server)"
        )
    if proc.returncode != 0 or "--port" not in stdout:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        raise FlagCatalogError(f"{source} --help failed (exit {proc.returncode}): {tail[0]}")
    return stdout


def _keep(path: Path, text: str) -> None:
    """Whole or not at all (another study may read it at once); a folder that cannot be written only costs the
    next study another read."""
    part = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".part") as f:
            part = Path(f.name)
            f.write(text)
        os.replace(part, path)
    except OSError:
        if part is not None:
            part.unlink(missing_ok=True)


def _why_not_runnable(exc: OSError) -> str:
    path = exc.filename or ""
    if os.path.isdir(path):
        return f"{path} is a directory"
    if exc.errno == errno.EACCES:
        return f"{path} is not executable (chmod +x it, or run it through its interpreter, e.g. python {path})"
    return exc.strerror or str(exc)


class FlagCatalogError(TunerError):
    pass
