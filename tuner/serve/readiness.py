"""Server readiness: poll /health quickly, and notice at once when the process behind it is gone."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from tuner.errors import TunerError
from tuner.serve.launcher import Server
from tuner.sglang import endpoints

POLL_S = 0.1


class NotReady(TunerError):
    """The server never answered /health with 200; ``exit_code`` is None when it is still running (timeout)."""

    def __init__(self, message: str, exit_code: int | None):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Ready:
    startup_s: float
    server_info: dict


def wait_ready(server: Server, timeout_s: float, on_tick=None) -> Ready:
    """Block until /health says 200 (SGLang answers 503 until its warm-up request has passed)."""
    start = time.monotonic()
    url = server.spec.base_url
    with httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5)) as client:
        while True:
            code = server.exit_code()
            if code is not None:
                raise NotReady(f"server exited with status {code} during startup", code)
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                raise NotReady(f"server not healthy after {timeout_s:.0f} s", None)
            try:
                if client.get(url + endpoints.HEALTH).status_code == 200:
                    return Ready(time.monotonic() - start, server_info(client, url))
            except httpx.HTTPError:
                pass
            if on_tick:
                on_tick(elapsed)
            time.sleep(POLL_S)


def server_info(client: httpx.Client, url: str) -> dict:
    """The resolved arguments (mem_fraction_static, chunked_prefill_size ... as SGLang settled them)."""
    for path in (endpoints.SERVER_INFO, endpoints.SERVER_INFO_OLD):
        try:
            response = client.get(url + path)
            if response.status_code == 200:
                return response.json()
        except (httpx.HTTPError, ValueError):
            continue
    return {}


def healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url + endpoints.HEALTH).status_code == 200
    except httpx.HTTPError:
        return False
