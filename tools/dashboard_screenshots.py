r"""Screenshots of the dashboard at 1000 px: a study page and a trial's page, as the README links them.

By default, the demo's: replays the README's demo (runs/demo.yaml) in a temporary folder, serves it with
`tune dashboard` and loads each page in headless Chromium, 1000 px wide (docs/img/demo-dashboard-study-1000px.png,
docs/img/demo-dashboard-trial-1000px.png). With --db, a recorded study's SQLite file instead, copied to the
temporary folder first (serving it writes the trials' missing notes; the given file is never written):

    python tools/dashboard_screenshots.py [--out docs/img]
    python tools/dashboard_screenshots.py --db docs/h200-chat/h200-qwen3-8b-chat.db --trial 7 \
        --names h200-dashboard.png h200-dashboard-trial.png
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
import optuna

ROOT = Path(__file__).resolve().parent.parent
DEMO_TRIAL = 4  # modelled from three recorded trials


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
    parser.add_argument("--db", type=Path, help="a study's SQLite file (its only study) instead of the demo's replay")
    parser.add_argument("--trial", type=int, default=DEMO_TRIAL, help="the trial whose page is shot")
    parser.add_argument(
        "--names",
        nargs=2,
        metavar=("STUDY_PNG", "TRIAL_PNG"),
        default=["demo-dashboard-study-1000px.png", "demo-dashboard-trial-1000px.png"],
    )
    args = parser.parse_args()
    out = args.out.resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("headless Chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        if args.db is None:
            for name in ("runs", "search_spaces", "surfaces"):
                shutil.copytree(ROOT / name, where / name)
            if _tune("start", "-c", "runs/demo.yaml", cwd=where, stdout=subprocess.DEVNULL).wait() != 0:
                sys.exit("the demo did not run")
            serving = ["-c", "runs/demo.yaml"]
            storage = f"sqlite:///{where}/studies/demo-h200-replay.db"
        else:
            shutil.copy(args.db, where / "study.db")
            storage = f"sqlite:///{where}/study.db"
            serving = ["--storage", storage]
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            sys.exit(f"{storage} holds {len(names)} studies; one was expected")
        study_id = optuna.storages.get_storage(storage).get_study_id_from_name(names[0])
        port = _free_port()
        server = _tune("dashboard", *serving, "--port", str(port), cwd=where, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_up(base, server)
            for shot, path in zip(args.names, ("", f"/trials?numbers={args.trial}"), strict=True):
                subprocess.run(
                    [
                        chromium,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        f"--user-data-dir={where / f'profile-{shot}'}",
                        "--window-size=1000,1400",
                        "--virtual-time-budget=10000",
                        f"--screenshot={out / shot}",
                        f"{base}/dashboard/studies/{study_id}{path}",
                    ],
                    check=True,
                    capture_output=True,
                )
                print(f"wrote {out / shot}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
