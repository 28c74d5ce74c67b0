"""tuner/serve/help_cache.py through the process launcher: SGLang's --help read once per build, and again when the
build changes. Real interpreters, a real package on PYTHONPATH, files in a real cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tuner.serve.process import ProcessLauncher
from tuner.sglang.catalog import FlagCatalogError

COMMAND = [sys.executable, "-m", "fakesgl.launch_server"]


def build(tmp_path: Path, flags: list[str], exit_code: int = 0) -> dict[str, str]:
    """A package whose launch_server prints a help listing ``flags`` and counts each time it runs; returns the
    environment that finds it."""
    pkg = tmp_path / "site" / "fakesgl"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    listed = "".join(f"  --{f}  A switch.\\n" for f in flags)
    (pkg / "launch_server.py").write_text(
        "import os, sys\n"
        "open(os.environ['FAKESGL_READS'], 'a').write('read\\n')\n"
        f"print('usage: fakesgl\\n\\noptions:\\n  --port PORT  The port.\\n{listed}')\n"
        f"sys.exit({exit_code})\n"
    )
    return {"PYTHONPATH": str(tmp_path / "site"), "FAKESGL_READS": str(tmp_path / "reads")}


def reads(tmp_path: Path) -> int:
    path = tmp_path / "reads"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sglang-tuner" / "help"


def test_a_builds_help_is_read_once_and_again_when_the_build_changes(tmp_path, cache):
    env = build(tmp_path, ["enable-a"])
    first = ProcessLauncher(COMMAND, env=env).flag_catalog()
    again = ProcessLauncher(COMMAND, env=env).flag_catalog()  # the next run of a study
    assert reads(tmp_path) == 1 and "enable-a" in again.flags and again.flags == first.flags
    assert again.source == first.source == " ".join(COMMAND)
    (kept,) = cache.glob("*.txt")
    kept.write_text("edited by hand\n")  # a kept file that is no launch_server's help: read again, kept again
    assert "enable-a" in ProcessLauncher(COMMAND, env=env).flag_catalog().flags and reads(tmp_path) == 2
    assert "--enable-a" in kept.read_text() and list(cache.iterdir()) == [kept]

    build(tmp_path, ["enable-a", "enable-b"])  # an upgrade: the module that prints the help changed
    assert "enable-b" in ProcessLauncher(COMMAND, env=env).flag_catalog().flags and reads(tmp_path) == 3
    # Another file of the package, the same size, written again later: another build.
    init = tmp_path / "site" / "fakesgl" / "__init__.py"
    stat = init.stat()
    os.utime(init, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    ProcessLauncher(COMMAND, env=env).flag_catalog()
    assert reads(tmp_path) == 4
    # The same files found elsewhere (another PYTHONPATH, another install): another build.
    other = tmp_path / "other"
    elsewhere = build(other, ["enable-a", "enable-b"])  # the same files, byte for byte
    for name in ("__init__.py", "launch_server.py"):  # the same sizes and times: only where they are differs
        stat = (tmp_path / "site" / "fakesgl" / name).stat()
        os.utime(other / "site" / "fakesgl" / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ProcessLauncher(COMMAND, env=elsewhere).flag_catalog()
    assert reads(other) == 1
    ProcessLauncher(COMMAND, env=env).flag_catalog()
    assert reads(tmp_path) == 4


def test_a_help_that_failed_is_read_again_and_a_wrapper_every_time(tmp_path, cache):
    env = build(tmp_path, ["enable-a"], exit_code=1)
    for n in (1, 2):
        with pytest.raises(FlagCatalogError, match=r"--help failed \(exit 1\)"):
            ProcessLauncher(COMMAND, env=env).flag_catalog()
        assert reads(tmp_path) == n
    assert not cache.exists() or not list(cache.iterdir())
    # A command that is not PYTHON -m MODULE runs what it alone knows: its help is read at every run.
    env = build(tmp_path, ["enable-a"])
    wrapper = [sys.executable, str(tmp_path / "site" / "fakesgl" / "launch_server.py")]
    for n in (3, 4):
        assert "enable-a" in ProcessLauncher(wrapper, env=env).flag_catalog().flags and reads(tmp_path) == n
