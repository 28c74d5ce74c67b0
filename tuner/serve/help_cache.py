"""SGLang's ``--help`` kept per build: a study started again on an unchanged install reads its flags from the help
text read before, instead of paying SGLang's imports again to print it (~20 s on the GPU machine, its GPU idle:
benchmarks/GPU_SECONDS.md).

A build is what ``PYTHON -m MODULE`` runs, identified without importing it: the interpreter (its real path,
version and prefix), where the module's top-level package is found with the command's environment (PYTHONPATH
included), and every Python file of that package (its path, size and modification time). Any change there, an
upgrade or an edit, is another build, whose help is read afresh. A command of another form (a wrapper script)
runs what it alone knows, so its help is read every time. In Docker, the build is the image as pinned by its
content (repo digest or ID) with the command and environment the container gets, unless a folder of the host is
mounted in it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tuner.serve.prestart import python_module

# Run by the command's own interpreter: find_spec of a top-level name locates its package without running it.
_IDENTIFY = r"""
import hashlib, importlib.util, os, sys
spec = importlib.util.find_spec(sys.argv[1].partition(".")[0])
if spec is None:
    sys.exit(1)
h = hashlib.sha256(repr((os.path.realpath(sys.executable), sys.version, sys.prefix)).encode())
roots = list(spec.submodule_search_locations or ()) or [spec.origin]
for root in roots:
    h.update(repr(root).encode())
    walked = os.walk(root) if os.path.isdir(root) else [(os.path.dirname(root), [], [os.path.basename(root)])]
    for folder, subfolders, files in walked:
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                h.update(repr((os.path.relpath(os.path.join(folder, name), root), st.st_size, st.st_mtime_ns)).encode())
print(h.hexdigest())
"""


def folder() -> Path:
    """Where help texts are kept: the user's cache folder (XDG_CACHE_HOME, else ~/.cache), as pip's and
    triton's are."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "sglang-tuner" / "help"


def kept_help(command: Sequence[str], env: Mapping[str, str]) -> Path | None:
    """The file that holds (or will hold) ``command``'s help for the build it runs now; None when the build cannot
    be identified (not ``PYTHON -m MODULE``, or its interpreter cannot say): then its help is read every time."""
    pm = python_module(list(command))
    if pm is None:
        return None
    python, module = pm
    try:
        done = subprocess.run(
            [python, "-c", _IDENTIFY, module],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # reading the help says what is wrong with the command
    build = done.stdout.strip()
    if done.returncode != 0 or not build:
        return None
    key = hashlib.sha256(f"{shlex.join(command)}\0{build}".encode()).hexdigest()[:32]
    return folder() / f"{key}.txt"


def kept_image_help(image_ref: str, command: Sequence[str], env: Mapping[str, str]) -> Path:
    """The file that holds (or will hold) the help of ``command`` run in the image ``image_ref`` pins by its
    content (a repo digest or an image ID)."""
    key = hashlib.sha256(repr((image_ref, list(command), sorted(env.items()))).encode()).hexdigest()[:32]
    return folder() / f"{key}.txt"
