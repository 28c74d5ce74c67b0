"""Confirmation arithmetic against hand-computed cases, and a study that runs its references and confirms itself."""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.conftest import servers_of, tune, write_run, write_space
from tuner.config.run import load_config
from tuner.search.confirm import Comparison, Confirmation, welch
from tuner.search.storage import load_existing_study


def test_welch_interval_equal_sizes_by_hand():
    # means 11 and 9, variances 1 and 1, n 3 and 3: se = sqrt(1/3 + 1/3) = 0.81650, Welch df = 4 exactly,
    # t(0.975, 4) = 2.7764 (t table): 2 ± 2.2670.
    diff, low, high = welch((10, 11, 12), (8, 9, 10))
    assert diff == 2 and low == pytest.approx(-0.2670, abs=1e-4) and high == pytest.approx(4.2670, abs=1e-4)


def test_welch_interval_unequal_variances_by_hand():
    # means 23 and 11; variances 20/3 and 1; n 4 and 3: se^2 = 5/3 + 1/3 = 2, df = 2^2 / ((5/3)^2/3 + (1/3)^2/2)
    # = 4.0755; t(0.975, 4.0755) = 2.7575 (between the table's 2.7764 at df 4 and 2.5706 at df 5): 12 ± 3.8997.
    diff, low, high = welch((20, 22, 24, 26), (10, 11, 12))
    assert diff == 12 and (high - low) / 2 == pytest.approx(3.8997, abs=2e-3)
    assert welch((5.0, 5.0), (4.0, 4.0)) == (1.0, 1.0, 1.0)  # no spread: the point itself


def test_confirmation_interval_and_bound_by_hand():
    c = Confirmation(3, "output_throughput", (10.0, 11.0, 12.0), None)
    # sd 1, n 3: two-sided t(0.975, 2) = 4.3027 -> ± 2.4841; one-sided t(0.95, 2) = 2.9200 -> 11 - 1.6859.
    assert c.half_width == pytest.approx(2.4841, abs=1e-4) and c.bound == pytest.approx(9.3141, abs=1e-4)
    assert Confirmation(3, "median_ttft_ms", (10.0, 11.0, 12.0), None).bound == pytest.approx(12.6859, abs=1e-4)
    assert Confirmation(3, "output_throughput", (), "oom_runtime").bound == -math.inf


def test_statement_says_when_a_gain_is_inside_the_noise():
    noisy = Comparison(
        "best (trial 4)", "SGLang defaults (trial 0)", "output_throughput", *welch((10, 11, 12), (8, 9, 10)), 9.0
    )
    assert noisy.within_noise and "+22.2%" in noisy.statement() and "inside the noise" in noisy.statement()
    clear = Comparison(
        "best (trial 4)", "SGLang defaults (trial 0)", "output_throughput", *welch((20, 22, 24, 26), (10, 11, 12)), 11.0
    )
    assert not clear.within_noise and "+109.1%" in clear.statement() and "better, outside" in clear.statement()
    slower = Comparison("a", "b", "median_ttft_ms", *welch((20, 22, 24, 26), (10, 11, 12)), 11.0)
    assert "worse" in slower.statement()  # a higher TTFT is worse


def test_study_runs_references_after_the_baseline_and_confirms_at_the_end(tmp_path, unique_study):
    space = write_space(tmp_path / "space.yaml", params={"schedule-policy": {"choices": ["fcfs", "lpm"]}})
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=4,
        env={"SGLANG_STANDIN_SPEED": "0.05", "SGLANG_STANDIN_FAULTS": ""},
        references=[
            {"name": "hand", "flags": {"schedule-policy": "lof", "mem-fraction-static": 0.8}},
            {"name": "seed-balanced-v2"},
        ],
        confirm={"top": 1, "repeats": 2},
    )
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    study = load_existing_study(load_config(run))
    first = sorted(study.trials, key=lambda t: t.number)[:3]
    assert first[0].user_attrs["baseline"] and "reference" not in first[0].user_attrs
    assert [t.user_attrs.get("reference") for t in first[1:]] == ["hand", "seed-balanced-v2"]
    assert first[1].user_attrs["flags"]["schedule-policy"] == "lof"
    assert first[2].user_attrs["flags"]["cuda-graph-backend-decode"] == "disabled"
    assert all(t.user_attrs["failure_class"] == "none" for t in first)

    roles = {c["role"] for c in study.user_attrs["confirmations"].values()}
    assert {"baseline", "reference hand", "reference seed-balanced-v2"} <= roles
    assert all(len(c["runs"]) == 2 for c in study.user_attrs["confirmations"].values())
    confirmations = study.user_attrs["confirmations"]
    comparisons = study.user_attrs["confirmation"]["comparisons"]
    winner = next(iter(confirmations))  # best bound first: compared with every baseline/reference but itself
    assert {re.search(r"trial (\d+)", c["b"]).group(1) for c in comparisons} == {
        n for n, c in confirmations.items() if c["role"] != "top" and n != winner
    }
    assert "95% CI over 2 runs" in done.stdout and "95% CI" in comparisons[0]["statement"]

    status = tune("status", "-c", str(run))
    assert "reference hand: --schedule-policy lof --mem-fraction-static 0.8" in status.stdout
    assert "reference seed-balanced-v2" in status.stdout and comparisons[0]["statement"] in status.stdout
    assert tune("export", "-c", str(run), "--out", str(tmp_path / "out")).returncode == 0
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert set(best["references"]) == {"hand", "seed-balanced-v2"} and best["confirmation"]["repeats"] == 2
    assert tune("report", "-c", str(run), "--out", str(tmp_path / "rep")).returncode == 0
    assert "Confirmed by re-runs" in (tmp_path / "rep" / "comparison.md").read_text()
    # Resuming the finished study confirms nothing again.
    again = tune("start", "-c", str(run))
    after = load_existing_study(load_config(run))
    assert again.returncode == 0 and len(after.trials) == len(study.trials)
    assert after.user_attrs["confirmations"] == confirmations
    assert servers_of(unique_study) == []


@pytest.mark.parametrize(
    "references, words",
    [
        ([{"name": "mine"}], "not a built-in reference"),
        ([{"name": "x", "flags": {"bogus-flag": 1}}], "references[0].flags.bogus-flag: --bogus-flag is not a flag"),
    ],
)
def test_bad_reference_is_one_line(tmp_path, references, words):
    run = write_run(tmp_path, references=references)
    done = tune("start", "-c", str(run))
    assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_ctrl_c_during_the_confirmation_resumes_it(tmp_path, unique_study):
    """Ctrl-C while the end-of-study confirmation runs: one line and exit 130, nothing of it recorded; the same
    command then runs the confirmation (the budget is reached, but the confirmation is not done)."""
    import signal
    import subprocess
    import sys
    import time

    space = write_space(tmp_path / "space.yaml", params={"schedule-policy": {"choices": ["fcfs", "lpm"]}})
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=2,
        env={"SGLANG_STANDIN_SPEED": "0.05", "SGLANG_STANDIN_FAULTS": ""},
        confirm={"top": 1, "repeats": 2},
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tuner.cli import app; app()", "start", "-c", str(run), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "trials").glob("*/*-confirm")):  # the first confirmation run has started
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the confirmation never started: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 130 and [line for line in err.splitlines() if not line.startswith("warning: ")] == [
        f"interrupted during the end-of-study confirmation: none of it recorded; run the same command to "
        f"confirm study {unique_study!r}"
    ], err
    study = load_existing_study(load_config(run))
    assert "confirmation" not in study.user_attrs and len(study.trials) == 2

    again = tune("start", "-c", str(run), "--quiet", timeout=240)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert "its end-of-study confirmation has not finished: running it" in again.stdout
    after = load_existing_study(load_config(run))
    assert after.user_attrs["confirmation"]["after_trials"] == 2 and len(after.trials) == 2
    assert all(len(c["runs"]) == 2 for c in after.user_attrs["confirmations"].values())
    assert servers_of(unique_study) == []
