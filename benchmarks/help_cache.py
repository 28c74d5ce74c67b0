"""A study's flag check before its first launch: the server command's ``--help`` read (SGLang's imports), against
the help kept for the same build (tuner/serve/help_cache.py: the build identified, the kept file read).

Each repeat, in a cache folder of its own: the process launcher's flag_catalog() reads ``--help`` and keeps it,
then a second launcher's (the next ``tune start``) reads what was kept; and the build's identification alone. The
three side by side in one run, their seconds per repeat and medians, as Markdown with the machine and date.

    python benchmarks/help_cache.py                                     # the stand-in, run as a module
    python benchmarks/help_cache.py -- python3 -m sglang.launch_server  # on the GPU machine, after .gpu/env.sh
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner.serve.help_cache import kept_help
from tuner.serve.process import ProcessLauncher

STANDIN = [sys.executable, "-m", "tests.standin.sglang_standin"]


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("command", nargs="*", help="the server command (default: the stand-in as a module)")
    args = ap.parse_args()
    command = args.command or STANDIN
    # The stand-in is found from the repository; SGLang from the environment the GPU kit sets.
    env = {"PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"} if not args.command else {}
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"`{' '.join(command)}`, {args.repeats} repeats\n"
    )
    print("| repeat | --help read s | kept help s | build identified s |")
    print("|---:|---:|---:|---:|")
    rows = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache
            read = timed(lambda: ProcessLauncher(command, env=env).flag_catalog())
            kept = timed(lambda: ProcessLauncher(command, env=env).flag_catalog())
            identified = timed(lambda: kept_help(command, {**os.environ, **env}))
        rows.append((read, kept, identified))
        print(f"| {i + 1} | {read:.3f} | {kept:.3f} | {identified:.3f} |")
    read, kept, identified = (statistics.median(c) for c in zip(*rows, strict=True))
    print(f"\nmedians: --help read {read:.3f} s, kept {kept:.3f} s (identification {identified:.3f} s)")


if __name__ == "__main__":
    main()
