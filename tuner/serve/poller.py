"""A background thread that does one thing every ``interval_s`` while a trial runs: sample the GPUs, beat the
trial's heartbeat, poll a server's /health.

Its thread is a daemon, so a tick stuck in a system call never keeps the tuner from exiting; ``stop()`` waits for
it at most ``join_s``, which callers set above the longest a tick may take (a /health request's timeout, say).
"""

from __future__ import annotations

import threading
from typing import Self


class Poller:
    """Calls ``tick()`` every ``interval_s`` from ``start()`` until ``stop()``, the first call one interval after
    start (callers that need one at once make it themselves, in their own thread); a context manager."""

    def __init__(self, name: str, interval_s: float, *, join_s: float):
        self.interval_s = interval_s
        self._join_s = join_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._join_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
