"""Startup phases read from SGLang's log (tuner/sglang/startup_log.py), carried to the record, status and report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import tune, write_run
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study
from tuner.sglang.startup_log import StartupPhases
from tuner.trial.record import TrialRecord

HEALTHY = Path(__file__).parent / "data" / "sglang-0.5.17-h200-healthy.log"


def test_phases_of_the_real_h200_log():
    # 13:55:43 first line; 13:56:14 Load weight begin/end (elapsed=0.11); 13:56:18 Memory pool end;
    # prefill graphs 7.11 s + decode 3.09 s, last end 13:56:28; 13:56:29 fired up: 46 s logged of 60 measured.
    p = StartupPhases.of(HEALTHY.read_text(), startup_s=60.0)
    assert p == StartupPhases(
        imports_s=14.0, spawn_s=31.0, weights_s=0.11, kv_pool_s=4.0, cuda_graph_s=10.2, warmup_s=1.0, reached="fired up"
    )
    assert p.summary() == "imports 14 / spawn 31 / weights 0.1 / KV pool 4.0 / graphs 10 / warm-up 1.0"
    assert StartupPhases.read(p.record()) == p


def test_a_startup_that_died_in_capture_says_how_far_it_got():
    text = HEALTHY.read_text()
    cut = text[: text.index("Capture target prefill CUDA graph end")]
    p = StartupPhases.of(cut, startup_s=40.0)
    assert p.reached == "capturing CUDA graphs" and p.warmup_s is None and p.imports_s is None
    assert p.weights_s == 0.11 and p.kv_pool_s == 4.0
    assert p.summary().endswith("(last: capturing CUDA graphs)")


def test_sglang_055_wording_and_rank_tags():
    log = "\n".join(
        [
            "[2026-01-01 10:00:00 TP0] Init torch distributed begin.",
            "[2026-01-01 10:00:05 TP0] Load weight end. elapsed=3.50 s, type=Qwen3ForCausalLM, avail mem=1 GB",
            "[2026-01-01 10:00:07 TP0] Memory pool end. avail mem=1.00 GB",
            "[2026-01-01 10:00:07 TP0] Capture cuda graph begin. This can take up to several minutes.",
            "[2026-01-01 10:00:19 TP0] Capture cuda graph end. Time elapsed: 12.25 s. mem usage=0.1 GB.",
            "[2026-01-01 10:00:21] The server is fired up and ready to roll!",
        ]
    )
    p = StartupPhases.of(log, startup_s=30.0)
    assert (p.imports_s, p.spawn_s, p.weights_s, p.kv_pool_s, p.cuda_graph_s, p.warmup_s) == (
        9.0,
        1.5,
        3.5,
        2.0,
        12.25,
        2.0,
    )
    assert not StartupPhases.of("no stamped lines here") and StartupPhases.of("", 5.0).imports_s == 5.0


@pytest.mark.timeout(200)
def test_tune_start_records_the_stand_ins_startup_phases(tmp_path, unique_study):
    # The trial's log already holds another launch's lines (a study made anew over an old trials/ folder, as a
    # GPU machine kept it): the phases are this launch's.
    old = tmp_path / "trials" / unique_study / "0" / "server.log"
    old.parent.mkdir(parents=True)
    old.write_text(HEALTHY.read_text())
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=1,
        env={"SGLANG_STANDIN_STARTUP_S": "2.5", "SGLANG_STANDIN_FAULTS": ""},
        workload={"concurrency": [1], "num_prompts": 4},
    )
    done = tune("start", "-c", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    (trial,) = load_existing_study(load_config(run)).trials
    rec = TrialRecord.of(trial)
    assert rec.startup.reached == "fired up"
    # The stand-in sleeps 0.35 x 2.5 s loading weights (its elapsed= counts from its first line) and 0.3 x 2.5 s
    # capturing graphs (elapsed= exact).
    assert 0.8 <= (rec.startup.weights_s or 0) < 3 and 0.7 <= (rec.startup.cuda_graph_s or 0) < 3
    assert rec.startup.imports_s is not None and rec.startup.kv_pool_s is not None
    status = tune("status", "-c", str(run))
    assert status.returncode == 0 and re.search(r"weights \d\.\d / KV pool \d", status.stdout), status.stdout
    assert tune("report", "-c", str(run), "--out", str(tmp_path / "rep")).returncode == 0
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert "## Startup phases (s)" in md and "graphs: CUDA-graph capture" in md and "| KV pool |" in md
