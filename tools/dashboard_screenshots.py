"""Screenshots of the demo's dashboard at 1000 px: its study page and a replayed trial's page, as the README links
them (docs/img/demo-dashboard-study-1000px.png, docs/img/demo-dashboard-trial-1000px.png).

Replays the README's demo (runs/demo.yaml) in a temporary folder, serves it with `tune dashboard` and loads each
page in headless Chromium, 1000 px wide:

    python tools/dashboard_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"study": "", "trial": "/trials?numbers=4"}  # trial 4: modelled from three recorded trials


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tune(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, **popen)


def _wait_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/api/studies", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("tune dashboard did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    out = parser.parse_args().out.resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("headless Chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        for name in ("runs", "search_spaces", "surfaces"):
            shutil.copytree(ROOT / name, where / name)
        if _tune("start", "-c", "runs/demo.yaml", cwd=where, stdout=subprocess.DEVNULL).wait() != 0:
            sys.exit("the demo did not run")
        port = _free_port()
        server = _tune("dashboard", "-c", "runs/demo.yaml", "--port", str(port), cwd=where, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_up(base, server)
            for name, path in PAGES.items():
                shot = out / f"demo-dashboard-{name}-1000px.png"
                subprocess.run(
                    [
                        chromium,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        f"--user-data-dir={where / f'profile-{name}'}",
                        "--window-size=1000,1400",
                        "--virtual-time-budget=10000",
                        f"--screenshot={shot}",
                        f"{base}/dashboard/studies/1{path}",
                    ],
                    check=True,
                    capture_output=True,
                )
                print(f"wrote {shot}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
