"""The views of a study in a real (headless) browser: `tune dashboard` and `tune report`.

One short study against the stand-in server (two objectives, five trials, one a segfault) serves both.
"""

from __future__ import annotations

import csv as pycsv
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import optuna
import pytest
from PIL import Image

from conftest import ROOT, free_port, tune, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# In CI (tests/services.sh installs it) a missing browser is a failure, never a quiet skip.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (apt-get install -y chromium)",
)
FAILING = {"schedule-policy": "lof", "mem-fraction-static": 0.93}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> Path:
    """A finished study: the baseline, one enqueued segfault (mem-fraction-static 0.93), three sampled trials."""
    from tuner.config.run import load_config
    from tuner.search.study import Tuner

    tmp = tmp_path_factory.mktemp("views")
    run = write_run(
        tmp,
        study="views",
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": "segfault:mem-fraction-static>=0.9"},
        objective={"metrics": ["output_throughput", "p99_ttft_ms"]},
    )
    Tuner(load_config(run)).run()  # trial 0: the baseline
    tuner = Tuner(load_config(run, {"trials": 5}))
    study = tuner.prepare()
    study.enqueue_trial(FAILING)
    tuner.run()
    classes = [t.user_attrs.get("failure_class") for t in study.trials]
    assert classes.count("segfault") >= 1 and classes[0] == "none", classes
    return run


def chromium(
    tmp: Path, *pages: tuple[str, ...], offline: bool = False, budget_ms: int = 5000, timeout: float = 60
) -> list[str]:
    """Load each page (url, extra args...) in its own headless Chromium, all at once; their stdouts."""
    procs = []
    for i, (url, *args) in enumerate(pages):
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / f'chromium-profile-{i}'}",
            "--window-size=1280,1000",
            f"--virtual-time-budget={budget_ms}",
            *args,
        ]
        if offline:  # no name resolves: anything fetched from the network fails
            cmd.append("--host-resolver-rules=MAP * ~NOTFOUND")
        procs.append(subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        outs.append(out)
    return outs


def visible_text(dom: str) -> str:
    dom = re.sub(r"(?s)<(style|script)\b[^>]*>.*?</\1>", " ", dom)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def read_png(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(png: Path) -> None:
    pixels = read_png(png)
    packed = pixels.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32)
    colours, counts = np.unique(packed, return_counts=True)
    assert len(colours) >= 50, f"{png}: only {len(colours)} colours: a blank or broken page"
    assert counts.max() < 0.97 * len(packed), f"{png}: almost a single colour"


@pytest.fixture(scope="module")
def dashboard(study_run: Path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tuner.cli import app; app()",
            "dashboard",
            "-c",
            str(study_run),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/api/studies", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tune dashboard did not come up: {proc.communicate()[0][-2000:]}")
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@needs_chromium
def test_dashboard_in_a_browser(study_run: Path, dashboard: str, tmp_path: Path) -> None:
    studies = httpx.get(f"{dashboard}/api/studies").json()["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == "views")
    study = optuna.load_study(study_name="views", storage=f"sqlite:///{study_run.parent}/studies/views.db")
    failed = next(t for t in study.trials if t.user_attrs.get("failure_class") == "segfault")
    assert study._storage.get_trial_system_attrs(failed._trial_id)["constraints"][0] > 0

    url = f"{dashboard}/dashboard/studies/{study_id}/trials?numbers={failed.number}"
    shot = tmp_path / "trial.png"
    study_dom, trial_dom, _ = chromium(
        tmp_path,
        (f"{dashboard}/dashboard/studies/{study_id}", "--dump-dom"),
        (url, "--dump-dom"),
        (url, f"--screenshot={shot}"),
    )

    # The study page: its name, the metric names, and infeasible trials marked as such (timeline legend).
    text = visible_text(study_dom)
    assert "views" in text
    assert "output_throughput" in text and "p99_ttft_ms" in text
    assert "Infeasible" in text

    # A trial page: every trial in the list, the note (failure class, hint) and the artifacts by name.
    text = visible_text(trial_dom)
    for t in study.trials:
        assert f"Trial {t.number}" in text
    assert "Outcome: segfault" in text and "Hint:" in text
    assert "server.log" in text and "trial.json" in text
    assert_not_blank(shot)

    # An artifact over HTTP, as the dashboard's download link fetches it.
    from optuna.artifacts import get_all_artifact_meta

    ok = next(t for t in study.trials if t.user_attrs.get("failure_class") == "none" and t.number > 0)
    assert {m.filename for m in get_all_artifact_meta(ok, storage=study._storage)} >= {
        "server.log",
        "benchmark.csv",
        "trial.json",
    }
    meta = next(m for m in get_all_artifact_meta(failed, storage=study._storage) if m.filename == "server.log")
    r = httpx.get(f"{dashboard}/artifacts/{study_id}/{failed._trial_id}/{meta.artifact_id}")
    assert r.status_code == 200
    assert r.text == (Path(failed.user_attrs["trial_dir"]) / "server.log").read_text()
    assert "--mem-fraction-static 0.93" in r.text


@needs_chromium
def test_report_offline(study_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = tune("report", "-c", str(study_run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    figures = int(re.search(r"\((\d+) figures\)", done.stdout).group(1))
    # history, importances, Pareto front (two objectives), parallel coordinates, load vs latency (best and
    # baseline), best vs baseline per level
    assert figures == 6, done.stdout

    page = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=[\"']?(https?:)?//", page), "the report must not load scripts"
    assert f"content='{figures}'" in page

    (dom,) = chromium(tmp_path, ((out / "report.html").as_uri(), "--dump-dom"), offline=True)
    rendered = re.findall(r"class=\"[^\"]*\bjs-plotly-plot\b", dom)  # set by plotly.js once a figure is drawn
    assert len(rendered) == figures, f"{len(rendered)} of {figures} figures rendered"
    text = visible_text(dom)
    assert "segfault" in text and "Failure classes" in text
    assert "output tok/s" in text and "p99 TTFT (ms)" in text

    csv = (out / "comparison.csv").read_text().splitlines()
    assert csv[0] == "metric,baseline,best,change_pct,better"
    assert [line.split(",")[0] for line in csv[1:6]] == [
        "output tok/s",
        "request/s",
        "median TTFT (ms)",
        "p99 TTFT (ms)",
        "median TPOT (ms)",
    ]
    # The numbers are the baseline's (trial 0) and the best trial's, and the change between them.
    from tuner.config.run import load_config
    from tuner.search.storage import load_existing_study
    from tuner.views.export import best_trial

    study = load_existing_study(load_config(study_run))
    base, best = study.trials[0], best_trial(study)
    keys = {
        "output tok/s": "output_throughput",
        "request/s": "request_throughput",
        "median TTFT (ms)": "median_ttft_ms",
        "p99 TTFT (ms)": "p99_ttft_ms",
        "median TPOT (ms)": "median_tpot_ms",
    }
    for row in pycsv.DictReader(io.StringIO("\n".join(csv))):
        b, v = base.user_attrs[keys[row["metric"]]], best.user_attrs[keys[row["metric"]]]
        assert float(row["baseline"]) == pytest.approx(b) and float(row["best"]) == pytest.approx(v), row
        if b == 0:  # a stand-in TPOT can be 0 on a loaded machine (every token in one chunk): no % of nothing
            assert row["change_pct"] == "", row
        else:
            assert float(row["change_pct"]) == pytest.approx(100 * (v / b - 1), abs=0.051), row
    md = (out / "comparison.md").read_text()
    assert "| output tok/s |" in md and "segfault" in md


def test_trial_note_and_progress_line(tmp_path: Path) -> None:
    from tuner.views.dashboard import trial_note
    from tuner.views.progress import LineProgress, log_tail_line

    note = trial_note(
        3,
        {
            "failure_class": "oom_kv_startup",
            "failure_hint": "lower --mem-fraction-static",
            "flags": {"model-path": "m", "port": 1, "mem-fraction-static": 0.5, "enable-x": True},
            "startup_s": 12.5,
            "gpu_peak_used_mib": 40960.0,
            "feasible": False,
        },
    )
    assert "**oom_kv_startup**" in note and "`--mem-fraction-static 0.5` `--enable-x`" in note
    assert "Hint: lower --mem-fraction-static" in note and "40.0 GiB" in note and "12.5 s" in note
    assert "model-path" not in note

    log = tmp_path / "server.log"
    log.write_text("[2025-01-01 12:00:00 TP0] Load weight begin\n[2025-01-01 12:00:09 TP0] Capture cuda graph begin\n")
    assert log_tail_line(log) == "Capture cuda graph begin"
    stream = io.StringIO()
    p = LineProgress(10, force=True, stream=stream, live=False)
    p.phase(0, "starting", "timeout 600 s")
    p.tick(0, 1.0, log)
    assert "trial 0 starting" in p.status_text() and "Capture cuda graph begin" in p.status_text()
    p.close()
    assert "trial 0 [0/10 done] starting: timeout 600 s" in stream.getvalue()
    assert LineProgress(10, stream=io.StringIO()).enabled is False  # quiet when not on a terminal


def test_dashboard_fills_in_notes_a_study_run_without_it_lacks(tmp_path):
    """Studies run where optuna-dashboard was not installed (the H200 image) get their notes at serve time."""
    from optuna_dashboard import get_note

    from tuner.views.dashboard import fill_missing_notes

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    trial = study.ask()
    trial.set_user_attr("failure_class", "oom_kv")
    trial.set_user_attr("flags", {"mem-fraction-static": 0.05})
    study.tell(trial, 0.0)
    assert fill_missing_notes(study) == 1 and fill_missing_notes(study) == 0
    note = get_note(optuna.Trial(study, study.trials[0]._trial_id))
    assert "Trial 0" in note and "oom_kv" in note


def test_dashboard_host_and_moved_artifacts(study_run: Path, tmp_path: Path) -> None:
    """--host 0.0.0.0 listens on every interface; --artifacts serves the trial files from a folder they moved to."""
    from optuna.artifacts import get_all_artifact_meta

    study = optuna.load_study(study_name="views", storage=f"sqlite:///{study_run.parent}/studies/views.db")
    trial = study.trials[0]
    meta = next(m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename == "server.log")
    moved = tmp_path / "moved-artifacts"
    shutil.copytree(study_run.parent / "trials" / "views" / "artifacts", moved)
    (moved / meta.artifact_id).write_text("the moved copy\n")

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tuner.cli import app; app()",
            "dashboard",
            "-c",
            str(study_run),
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--artifacts",
            str(moved),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                studies = httpx.get(f"{base}/api/studies", timeout=1).json()["study_summaries"]
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tune dashboard did not come up: {proc.stdout.read()[-2000:]}")
                time.sleep(0.2)
        # Bound to the wildcard address, not loopback: /proc/net/tcp lists 00000000:<port> in LISTEN (0A).
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        assert any(f[1] == f"00000000:{port:04X}" and f[3] == "0A" for f in listening)
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "views")
        r = httpx.get(f"{base}/artifacts/{study_id}/{trial._trial_id}/{meta.artifact_id}")
        assert r.status_code == 200 and r.text == "the moved copy\n"
    finally:
        proc.terminate()
        proc.wait(10)
