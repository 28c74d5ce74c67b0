"""README claims that no other test checks: the heartbeat after a failed beat, the samplers, `tune bench` on a
running server, request_rate and dataset through a run file."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time

import optuna
import pytest

from conftest import FAST_ENV, STANDIN, free_port, tune, wait_healthy, write_run, write_space
from tuner.bench.workload import SLO
from tuner.config.run import load_config
from tuner.errors import SetupError
from tuner.search.storage import _Heartbeat, make_sampler, open_study
from tuner.search.study import Tuner


def test_heartbeat_goes_on_after_a_failed_beat(tmp_path, monkeypatch):
    """A database hiccup costs one beat, not the trial's liveness: the next beats are recorded."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    real = type(storage).record_heartbeat
    beats: list[str] = []
    recorded = threading.Event()

    def flaky(self, trial_id):
        if len(beats) == 1:  # the first beat of the thread (after the one at start) fails
            beats.append("failed")
            raise optuna.exceptions.StorageInternalError("database is locked")
        real(self, trial_id)
        beats.append("ok")
        if beats.count("ok") >= 3:
            recorded.set()

    monkeypatch.setattr(type(storage), "record_heartbeat", flaky)
    with _Heartbeat(study, trial, 0.05):
        assert recorded.wait(60), beats
    assert beats[:3] == ["ok", "failed", "ok"]
    # A stale-trial check right now finds this trial alive: its last beat is recent.
    assert storage._get_stale_trial_ids(study._study_id) == []


@pytest.mark.parametrize(
    "name, cls",
    [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler)],
)
def test_the_run_files_sampler_is_the_one_used(tmp_path, name, cls):
    if name == "gp":
        pytest.importorskip("torch")
    config = load_config(write_run(tmp_path, sampler={"name": name, "seed": 5, "n_startup_trials": 3}))
    sampler = make_sampler(config, config.sampler.seed)
    assert type(sampler) is cls
    # Seeded: the same seed draws the same first parameters.
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(config, 5))
        draws.append(study.ask().suggest_float("mem-fraction-static", 0.7, 0.95))
    assert draws[0] == draws[1]


def test_gp_without_torch_is_refused_before_any_launch(tmp_path, monkeypatch):
    import importlib.util

    from tuner.search import storage

    real = importlib.util.find_spec
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    config = load_config(write_run(tmp_path, sampler={"name": "gp"}))
    with pytest.raises(SetupError, match="sampler gp needs torch"):
        make_sampler(config, 0)


@pytest.mark.parametrize("baseline, warned", [(True, True), (False, False)])
def test_gp_with_the_baseline_is_warned_it_samples_at_random(tmp_path, monkeypatch, caplog, baseline, warned):
    import importlib.util

    from tuner.search import storage

    real = importlib.util.find_spec  # GPSampler is built without torch; only its fitting needs it
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda n, *a: True if n == "torch" else real(n, *a))
    config = load_config(write_run(tmp_path, sampler={"name": "gp"}, baseline=baseline))
    with caplog.at_level("WARNING", logger="tuner.search.storage"):
        open_study(config)
    assert ("sampler gp with the baseline or references samples at random" in caplog.text) is warned


def test_tune_bench_measures_a_running_server(tmp_path):
    port = free_port()
    env = {**FAST_ENV, "SGLANG_STANDIN_FAULTS": ""}
    server = subprocess.Popen(
        [sys.executable, str(STANDIN), "--model-path", "standin/qwen3-8b", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        run = write_run(tmp_path, workload={"concurrency": [2, 4], "num_prompts": 8, "output_len": 8})
        done = tune("bench", "-c", str(run), "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "b.csv"))
    finally:
        server.terminate()
        server.wait(30)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split()[:4] == ["concurrency", "completed", "failed", "output_throughput"]
    assert [r.split()[:3] for r in rows] == [["2", "8", "0"], ["4", "8", "0"]]
    with open(tmp_path / "b.csv") as f:
        table = list(csv.DictReader(f))
    assert [(int(r["concurrency"]), int(r["completed"])) for r in table] == [(2, 8), (4, 8)]
    assert all(float(r["output_throughput"]) > 0 and int(r["total_output_tokens"]) == 64 for r in table)


def test_request_rate_and_dataset_through_the_run_file(tmp_path):
    data = tmp_path / "sharegpt.json"
    data.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "human", "value": "why is the sky blue"},
                        {"from": "gpt", "value": "because of Rayleigh scattering"},
                    ]
                }
            ]
        )
    )
    config = load_config(write_run(tmp_path, workload={"request_rate": 8, "dataset": str(data), "concurrency": [1, 4]}))
    workload = config.workload.build(SLO())
    assert [lv.request_rate for lv in workload.levels] == [8, 8]
    assert workload.prompt_kind == "dataset" and workload.dataset == str(data)


def test_a_clearly_worse_trial_skips_the_remaining_levels(tmp_path, unique_study):
    """Under half the best output tok/s at a level before the objective's: the rest is not worth measuring."""
    space = write_space(
        tmp_path / "space.yaml",
        params={
            "attention-backend": {"choices": ["fa3", "torch_native"]},
            "disable-cuda-graph": {"choices": [False, True]},
            "mem-fraction-static": {"choices": [0.85, 0.5]},
        },
    )
    # At full stand-in speed (5 ms a decode step) the step time, not Python's overhead, sets the throughput.
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": "", "SGLANG_STANDIN_SPEED": "1.0"},
        workload={"concurrency": [1, 8], "num_prompts": 8, "output_len": 16},
    )
    Tuner(load_config(run)).run()  # trial 0: SGLang's defaults
    tuner = Tuner(load_config(run, {"trials": 3}))
    study = tuner.prepare()
    # The defaults again (a second reference), then about 3.5x slower a step in the stand-in (torch_native
    # attention, no CUDA graph, a small KV pool).
    study.enqueue_trial({"attention-backend": "fa3", "disable-cuda-graph": False, "mem-fraction-static": 0.85})
    study.enqueue_trial({"attention-backend": "torch_native", "disable-cuda-graph": True, "mem-fraction-static": 0.5})
    tuner.run()
    same, slow = study.trials[1].user_attrs, study.trials[2].user_attrs
    assert slow["stopped_early"].startswith("clearly worse than the best at concurrency 1:"), slow["levels"]
    assert [lv["concurrency"] for lv in slow["levels"]] == [1]
    assert "stopped_early" not in same and [lv["concurrency"] for lv in same["levels"]] == [1, 8]


def test_unused_and_deprecated_flags_are_reported(tmp_path):
    space = write_space(
        tmp_path / "space.yaml",
        fixed={"disable-radix-cache": True, "disable-flashinfer": True},
        params={"schedule-policy": {"choices": ["fcfs", "lpm"]}, "num-continuous-decode-steps": {"low": 1, "high": 4}},
    )
    tuner = Tuner(load_config(write_run(tmp_path, space=space)))
    tuner.prepare()
    said = "\n".join(tuner.warnings)
    assert "--schedule-policy lpm/dfs-weight fall back to fcfs when --disable-radix-cache is set" in said
    assert "--num-continuous-decode-steps is parsed but never read" in said
    assert "--disable-flashinfer is deprecated in this SGLang" in said
    assert "--disable-radix-cache is deprecated" not in said


def test_progress_heartbeat_while_a_server_starts(tmp_path, monkeypatch):
    """`--progress` (plain lines): while a phase lasts, a heartbeat line every HEARTBEAT_S with the server log's last
    line, so a long startup (a torch compile) visibly lives."""
    from tuner.views import progress

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.3)
    monkeypatch.setattr(progress, "REDRAW_S", 0.05)
    out = io.StringIO()
    log = tmp_path / "server.log"
    log.write_text("Load weight begin.\nCapture cuda graph begin. This can take up to several minutes.\n")
    p = progress.LineProgress(total=4, force=True, stream=out, live=False)
    p.phase(0, "starting", "timeout 600 s")
    p.tick(0, 0.1, log)

    def lines() -> list[str]:
        return [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]  # without the "[   0:01]" clock

    def beats() -> list[str]:
        return [line for line in lines() if line.startswith("trial 0 [0/4 done] still starting (")]

    deadline = time.monotonic() + 60
    while len(beats()) < 2:  # a heartbeat goes on while the phase lasts, not only once
        assert time.monotonic() < deadline, lines()
        time.sleep(0.05)
    p.close()
    assert lines()[0].startswith("trial 0 [0/4 done] starting: timeout 600 s")
    assert beats()[0].endswith("in this phase: Capture cuda graph begin. This can take up to several minutes.)")
