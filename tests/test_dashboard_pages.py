"""Issue 23, the dashboard as people see it: the README's demo (replayed H200 trials) served by make_dashboard and
read in headless Chromium at 1000 px: the pages fit the window, the importance box shows the report's importances,
a replayed study's title says so."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import httpx
import optuna
import pytest
from test_views import chromium, needs_chromium

from conftest import ROOT, tune

# A page of the dashboard's own origin that loads another in a 1000 px frame and writes what it measured into
# itself, for --dump-dom: the dashboard's pages allow no script but their own.
PROBE = """<!doctype html><html><body style="margin:0">
<iframe id=page src="{target}" style="width:1000px;height:1000px;border:0"></iframe><pre id=probe>waiting</pre>
<script>
function measure() {{
  const d = document.getElementById("page").contentDocument;
  if (!d || !d.body || !d.body.innerText.includes({marker})) {{ setTimeout(measure, 200); return; }}
  setTimeout(() => {{
    const title = d.querySelector("h6:has(+ #graph-hyperparameter-importances)");
    document.getElementById("probe").textContent = JSON.stringify({{
      scroll_width: d.documentElement.scrollWidth,
      width: d.documentElement.clientWidth,
      importance_title: title ? getComputedStyle(title, "::after").content : null,
      // Boxes of the main column that hide part of their text behind a scroll bar.
      scrolled: [...d.querySelectorAll("main *")]
        .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== "visible")
        .map(e => e.className.toString() + ": " + e.innerText.slice(0, 80)),
      // Boxes of the main column that draw scroll bars whether they need them or not.
      bars: [...d.querySelectorAll("main *")]
        .filter(e => getComputedStyle(e).overflowX === "scroll" || getComputedStyle(e).overflowY === "scroll")
        .map(e => e.innerText.slice(0, 80)),
      // Each flag of a note: how many pieces it is drawn in.
      flags: [...d.querySelectorAll("main p code")].map(c => [c.innerText, c.getClientRects().length]),
      text: d.body.innerText,
    }});
  }}, 1000);
}}
measure();
</script></body></html>"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo study, replayed in a folder of its own, and a measured two-objective study beside it."""
    where = tmp_path_factory.mktemp("demo")
    for name in ("runs", "search_spaces", "surfaces"):
        shutil.copytree(ROOT / name, where / name)
    done = tune("start", "-c", "runs/demo.yaml", cwd=where, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    storage = f"sqlite:///{where}/studies/demo-h200-replay.db"
    measured = optuna.create_study(
        study_name="measured",
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    # A path of no spaces, longer than its table's column is wide.
    measured.set_user_attr("model", "/models/" + "a-folder-with-a-long-name/" * 8 + "config.json")
    # The first objective moves with x alone, the second with y alone.
    measured.optimize(lambda t: (t.suggest_int("x", 0, 3), t.suggest_int("y", 0, 3)), n_trials=12)
    return storage, where


@pytest.fixture(scope="module")
def dashboard(demo):
    """make_dashboard on the demo's storage (as `tune dashboard` serves it), with /probe beside its pages."""
    from tuner.views.dashboard import make_dashboard

    storage, where = demo
    server = make_dashboard(storage, [where / "trials" / "demo-h200-replay" / "artifacts"], "127.0.0.1", 0)
    app = server.get_app()

    def with_probe(environ, start_response):
        if environ["PATH_INFO"] != "/probe":
            return app(environ, start_response)
        query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        page = PROBE.format(target=html.escape(query["target"]), marker=json.dumps(query["marker"]))
        start_response("200 OK", [("Content-Type", "text/html")])
        return [page.encode()]

    server.set_app(with_probe)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def study_id(base: str, name: str) -> int:
    studies = httpx.get(f"{base}/api/studies").json()["study_summaries"]
    return next(s["study_id"] for s in studies if s["study_name"] == name)


def probe(tmp: Path, base: str, *pages: tuple[str, str]) -> list[dict]:
    """Each dashboard page (path, text to wait for) as loaded in a 1000 px frame: what /probe measured."""
    urls = [(f"{base}/probe?" + urlencode({"target": path, "marker": marker}), "--dump-dom") for path, marker in pages]
    found = []
    for dom in chromium(tmp, *urls, budget_ms=20000, timeout=120):
        m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
        assert m and m[1] != "waiting", dom[-2000:]
        found.append(json.loads(html.unescape(m[1])))
    return found


@needs_chromium
def test_the_study_page_and_a_trial_page_fit_1000_px(dashboard, tmp_path):
    """A trial's user attributes (argv, flags, levels: up to 750 characters of JSON) made its page 6000 px wide."""
    sid = study_id(dashboard, "demo-h200-replay")
    studies, study_page, other_study, trial_page = probe(
        tmp_path,
        dashboard,
        ("/dashboard", "demo-h200-replay"),
        (f"/dashboard/studies/{sid}", "Study User Attributes"),
        (f"/dashboard/studies/{study_id(dashboard, 'measured')}", "config.json"),
        (f"/dashboard/studies/{sid}/trials?numbers=4", "Outcome"),
    )
    for page in (studies, study_page, other_study, trial_page):
        assert page["scroll_width"] <= page["width"], page["scroll_width"]
    # A study's attributes (a run file of 1500 characters, a long path) wrap in their table, not scrolled sideways.
    for page in (study_page, other_study):
        assert not [box for box in page["scrolled"] if "MuiTableContainer" in box], page["scrolled"]
    assert "argv" in trial_page["text"] and "REPLAYED, not measured" in trial_page["text"]
    # Nothing on the trial page is behind a scroll bar sideways (its dates and attributes wrap), and every flag of
    # its note is drawn whole: broken at a hyphen, `--mem-` `fraction-static 0.81` reads as two flags.
    assert trial_page["scrolled"] == [], trial_page["scrolled"]
    # optuna-dashboard draws both scroll bars around a note, on every trial page, though it never needs them.
    assert study_page["bars"] == trial_page["bars"] == [], trial_page["bars"]
    assert len(trial_page["flags"]) == 10 and all(pieces == 1 for _, pieces in trial_page["flags"]), trial_page["flags"]


@needs_chromium
def test_the_importance_box_shows_the_reports_importances_and_says_how(demo, dashboard, tmp_path):
    """optuna-dashboard's PED-ANOVA ranked mem-fraction-static first (0.98) on this study and the flag that halves
    its throughput below 0.01; the box shows the report's importances, with their intervals and method."""
    from tuner.views.importance import METHOD, importances

    storage, _ = demo
    study = optuna.load_study(study_name="demo-h200-replay", storage=storage)
    sid = study_id(dashboard, "demo-h200-replay")
    (shown,) = httpx.get(f"{dashboard}/api/studies/{sid}/param_importances").json()["param_importances"]
    expected = importances(study)
    assert [(s["name"], s["importance"]) for s in shown] == [
        (f"{i.flag} ({i.low:.2f}-{i.high:.2f})", i.share) for i in expected
    ]
    assert shown[0]["name"].startswith("cuda-graph-max-bs-decode") and shown[0]["distribution"]
    (page,) = probe(tmp_path, dashboard, (f"/dashboard/studies/{sid}", "cuda-graph-max-bs-decode ("))
    assert METHOD[1:] in page["importance_title"] and "tune report" in page["importance_title"]
    assert "cuda-graph-max-bs-decode (" in page["text"]  # drawn in the box


def test_the_importance_box_of_a_study_of_two_objectives_has_each_ones(dashboard):
    first, second = httpx.get(f"{dashboard}/api/studies/{study_id(dashboard, 'measured')}/param_importances").json()[
        "param_importances"
    ]
    assert first[0]["name"].startswith("x (") and second[0]["name"].startswith("y ("), (first, second)


@needs_chromium
def test_the_study_page_of_a_replayed_study_says_so_in_its_title(dashboard, tmp_path):
    replayed, measured = probe(
        tmp_path,
        dashboard,
        (f"/dashboard/studies/{study_id(dashboard, 'demo-h200-replay')}", "Study User Attributes"),
        (f"/dashboard/studies/{study_id(dashboard, 'measured')}", "Study User Attributes"),
    )
    assert "demo-h200-replay (REPLAY, not measured)" in replayed["text"]
    assert "measured" in measured["text"] and "REPLAY" not in measured["text"]
