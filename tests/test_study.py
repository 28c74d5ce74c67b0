"""tuner/search/study.py in-process: the objective's values and constraints, a trial's record, storage and study setup,
the GPU pool, and whole studies replayed from a recorded surface (tuner/trial/replay.py) on real SQLite files.

Each test runs in milliseconds to a second, so mutation testing (benchmarks/MUTATION.md) can afford them per mutant:
mutmut only sees code that runs in the pytest process, so nothing here goes through the CLI's subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from tests.conftest import ROOT, write_space
from tuner.bench.client import BenchmarkResult
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import LoadSearch
from tuner.config.run import RunConfig
from tuner.search.checks import Preflight, baseline_refused, describe_distribution, port_free
from tuner.search.launchers import looks_like_model_path, make_launcher
from tuner.search.objective import Objective, objective_for
from tuner.search.storage import (
    _Heartbeat,
    _missing_driver,
    _redact,
    _RetryStale,
    _with_installed_driver,
    enqueue_retry,
    load_existing_study,
    make_sampler,
    open_storage,
    open_study,
    set_trial_attrs,
)
from tuner.search.study import (
    HOST,
    WORKER,
    SetupError,
    Tuner,
    _alive,
    best_levels,
    startup_timeout,
    trial_attrs,
)
from tuner.serve import gpu
from tuner.serve.docker import DockerLauncher
from tuner.serve.process import ProcessLauncher
from tuner.sglang import failures
from tuner.sglang.flags import ServerFlags
from tuner.sglang.kv import KvCapacity
from tuner.trial.record import TrialRecord
from tuner.trial.replay import ReplayLauncher
from tuner.trial.runner import Cancelled, PhaseTimes, Replayed, TrialPlan, TrialResult
from tuner.views.dashboard import note_for

SURFACE = ROOT / "benchmarks" / "surfaces" / "standin-default.json"
# The stand-in's baseline, three feasible configs, one that runs out of KV memory and one out of memory under load:
# few rows, so the replay's neighbour weights are learned in milliseconds.
ROWS = (0, 1, 2, 4, 8, 22)


# -- hand-made results


def level(concurrency: int = 16, **kw) -> LevelResult:
    values = dict(
        concurrency=concurrency,
        input_len=128,
        output_len=48,
        request_rate=None,
        completed=48,
        failed=0,
        duration_s=2.0,
        total_input_tokens=6144,
        total_output_tokens=2304,
        request_throughput=24.123456,
        input_throughput=3000.0,
        output_throughput=1000.123456,
        total_throughput=4000.123456,
        mean_ttft_ms=50.0,
        median_ttft_ms=40.123456,
        p90_ttft_ms=60.0,
        p95_ttft_ms=70.0,
        p99_ttft_ms=80.123456,
        mean_tpot_ms=9.0,
        median_tpot_ms=8.123456,
        p90_tpot_ms=10.0,
        p95_tpot_ms=11.0,
        p99_tpot_ms=12.123456,
        mean_itl_ms=8.0,
        median_itl_ms=7.123456,
        p90_itl_ms=9.0,
        p95_itl_ms=9.5,
        p99_itl_ms=10.0,
        mean_e2e_latency_ms=500.0,
        median_e2e_latency_ms=490.123456,
        p90_e2e_latency_ms=600.0,
        p95_e2e_latency_ms=650.0,
        p99_e2e_latency_ms=700.0,
        concurrency_achieved=15.0,
        request_goodput=20.123456,
        slo_attainment=0.9,
        short_outputs=0,
    )
    values.update(kw)
    return LevelResult(**values)


def result(
    levels=(),
    failure=None,
    *,
    kv=KvCapacity(),
    gpu_stats=None,
    slo_pass=(),
    stopped_early=None,
    slo_broken=None,
    benchmark=True,
    **kw,
) -> TrialResult:
    plan = TrialPlan(3, ServerFlags.of({"port": 1}), (0,), "127.0.0.1", 1, Path("/nonexistent/3"), 10.0)
    bench = (
        BenchmarkResult(tuple(levels), stopped_early=stopped_early, slo_pass=tuple(slo_pass), slo_broken=slo_broken)
        if benchmark
        else None
    )
    return TrialResult(
        plan,
        failure,
        kw.pop("detail", ""),
        kw.pop("exit_code", None),
        kw.pop("times", PhaseTimes()),
        bench,
        gpu_stats or gpu.GpuStats(),
        kw.pop("server_info", {}),
        kv=kv,
        **kw,
    )


def objective(
    metrics=("output_throughput",), at=16, slo=None, max_frac=None, search=None, kv_needed=0, kv_constraint=True
) -> Objective:
    return Objective(tuple(metrics), at, dict(slo or {}), max_frac, 20_000.0, search, kv_needed, kv_constraint)


SEARCH = LoadSearch(start_rate=4, max_rate=32)


# -- Objective


def test_constraint_names_follow_the_objective():
    assert objective().constraint_names == ["launch_ok", "kv_capacity"]
    assert objective(slo={"p99_ttft_ms": 100, "median_tpot_ms": 9}, max_frac=0.9).constraint_names == [
        "launch_ok",
        "kv_capacity",
        "slo:p99_ttft_ms",
        "slo:median_tpot_ms",
        "gpu_memory_fraction",
    ]
    assert objective(kv_constraint=False).constraint_names == ["launch_ok"]
    assert objective(("output_throughput", "p99_ttft_ms")).directions == ["maximize", "minimize"]


def test_values_read_the_objective_level_and_are_pessimistic_where_nothing_was_measured():
    ok = result([level(4, output_throughput=10.0), level(16, output_throughput=30.0, median_ttft_ms=45.0)])
    o = objective(("output_throughput", "median_ttft_ms"))
    assert o.values(ok) == [30.0, 45.0]
    assert objective(at=4).values(ok) == [10.0]
    # The level is missing, or the trial failed: 0 to maximise, the penalty to minimise.
    assert objective(("output_throughput", "median_ttft_ms"), at=8).values(ok) == [0.0, 20_000.0]
    failed = result([level(16)], failures.OOM_RUNTIME)
    assert o.values(failed) == [0.0, 20_000.0]
    nan = result([level(16, output_throughput=math.nan, median_ttft_ms=math.inf)])
    assert o.values(nan) == [0.0, 20_000.0]
    assert all(type(v) is float for v in o.values(result([level(16, output_throughput=7)])))


def test_goodput_is_read_at_the_searchs_highest_passing_rate():
    levels = [
        level(4, request_rate=4.0, request_goodput=3.5),
        level(8, request_rate=8.0, request_goodput=7.5),
        level(16, request_rate=16.0, request_goodput=9.0),
        level(4, request_rate=4.0, request_goodput=3.9, repeat=1),
    ]
    o = objective(("goodput",), slo={"p99_ttft_ms": 100}, search=SEARCH)
    r = result(levels, slo_pass=(True, True, False, True))
    assert o.level(r) is levels[1] and o.level(r, repeat=1) is levels[3]
    assert o.values(r) == [7.5]
    assert o.level(result(levels, benchmark=False)) is None
    assert o.values(result(levels, slo_pass=(False, False, False, False))) == [0.0]
    assert o.value(None, "goodput") is None and o.value(levels[0], "output_throughput") == 1000.123456


def test_constraints_are_satisfied_by_a_measured_trial_and_violated_by_a_failed_one():
    o = objective(slo={"p99_ttft_ms": 100.0}, max_frac=0.9, kv_needed=1000)
    stats = gpu.GpuStats(peak_used_mib=95.0, total_mib=100.0)
    ok = result([level(4, p99_ttft_ms=90.0), level(16, p99_ttft_ms=math.nan)], kv=KvCapacity(2000, 8), gpu_stats=stats)
    c = o.constraints(ok)
    assert c[:3] == [0.0, 0.0, -10.0] and c[3] == pytest.approx(0.05)
    assert o.constraints(result([level(4, p99_ttft_ms=130.0)], kv=KvCapacity(None, None), gpu_stats=stats))[:3] == [
        0.0,
        0.0,
        30.0,
    ]
    # Nothing measured although the launch worked: the SLO cannot be said to hold.
    assert o.constraints(result([level(4, p99_ttft_ms=math.nan)], gpu_stats=stats))[2] == 100.0
    assert o.constraints(result([])) == [1.0, 0.0, 100.0, -0.9]
    assert o.constraints(result([level(4)], failures.OOM_KV, gpu_stats=stats)) == [1.0, 1.0, 100.0, 1.0]
    assert objective(slo={"p99_ttft_ms": 0.5}).constraints(result([], failures.OOM_KV)) == [1.0, 1.0, 1.0]


def test_a_kv_pool_smaller_than_the_workload_violates_kv_capacity_by_its_shortfall():
    o = objective(kv_needed=1000)
    assert o.constraints(result([level()], kv=KvCapacity(250, 4))) == [0.0, 3.0]
    assert o.constraints(result([level()], kv=KvCapacity(1000, 4))) == [0.0, 0.0]
    assert o.constraints(result([level()], kv=KvCapacity(0, 4))) == [0.0, 0.0]  # no pool number: unchecked
    assert objective(kv_needed=1000, kv_constraint=False).constraints(result([level()], kv=KvCapacity(250, 4))) == [0.0]


def test_search_constraints_hold_at_the_highest_passing_rate_and_measure_a_first_rate_that_broke():
    o = objective(("goodput",), slo={"p99_ttft_ms": 100.0, "p99_tpot_ms": 20.0}, max_frac=0.9, search=SEARCH)
    stats = gpu.GpuStats(peak_used_mib=50.0, total_mib=100.0)
    passed = result(
        [
            level(4, request_rate=4.0, p99_ttft_ms=60.0, p99_tpot_ms=15.0),
            level(8, request_rate=8.0, p99_ttft_ms=150.0, p99_tpot_ms=25.0),
        ],
        slo_pass=(True, False),
        gpu_stats=stats,
    )
    assert o.constraints(passed) == [0.0, 0.0, -40.0, -5.0, pytest.approx(-0.4)]
    # The first rate broke the TTFT limit only: by how much; the TPOT limit held there.
    first_broke = result(
        [level(4, request_rate=4.0, p99_ttft_ms=130.0, p99_tpot_ms=15.0)], slo_pass=(False,), gpu_stats=stats
    )
    assert o.constraints(first_broke) == [0.0, 0.0, 30.0, 0.0, pytest.approx(-0.4)]
    # Broken only by failed requests, or not measured (NaN): every limit violated by 1 (or the limit itself).
    failed_requests = result(
        [level(4, request_rate=4.0, p99_ttft_ms=50.0, p99_tpot_ms=10.0, failed=3)], slo_pass=(False,), gpu_stats=stats
    )
    assert o.constraints(failed_requests)[2:4] == [1.0, 1.0]
    nan = result([level(4, request_rate=4.0, p99_ttft_ms=math.nan, p99_tpot_ms=math.nan)], slo_pass=(False,))
    assert o.constraints(nan)[2:4] == [100.0, 20.0]
    assert o.constraints(result([], failures.OOM_KV)) == [1.0, 1.0, 100.0, 20.0, 1.0]
    barely = result([level(4, request_rate=4.0, p99_ttft_ms=100.5, p99_tpot_ms=15.0)], slo_pass=(False,))
    assert o.constraints(barely)[2:4] == [0.5, 0.0]
    # A server that died after passing rates: failed, whatever it passed.
    died = result([level(4, request_rate=4.0, p99_ttft_ms=60.0, p99_tpot_ms=15.0)], failures.DIED, slo_pass=(True,))
    assert o.constraints(died) == [1.0, 1.0, 100.0, 20.0, 1.0]
    small = objective(("goodput",), slo={"p99_tpot_ms": 0.5}, search=SEARCH)
    assert small.constraints(result([], failures.OOM_KV)) == [1.0, 1.0, 1.0]
    assert small.constraints(result([])) == [1.0, 0.0, 1.0]


def test_a_goodput_search_stopped_against_the_incumbent_is_infeasible_with_what_it_measured():
    """It held 16 req/s and broke at 28, the incumbent's rate: its value is what it measured (goodput at 16),
    its constraints are those of the level that broke, so it is never the best; the sampler sees by how much."""
    o = objective(("goodput",), slo={"p99_ttft_ms": 100.0, "p99_tpot_ms": 20.0}, search=SEARCH)
    levels = [
        level(16, request_rate=16.0, p99_ttft_ms=60.0, p99_tpot_ms=15.0, request_goodput=14.0),
        level(28, request_rate=28.0, p99_ttft_ms=90.0, p99_tpot_ms=26.0, request_goodput=20.0),
    ]
    stopped = result(levels, slo_pass=(True, False), stopped_early="stopped at 28 req/s, ...: cannot beat trial 0")
    stopped = dataclasses.replace(stopped, benchmark=dataclasses.replace(stopped.benchmark, cannot_beat=1))
    assert o.values(stopped) == [14.0]
    assert o.constraints(stopped) == [0.0, 0.0, 0.0, 6.0]
    attrs = trial_attrs(stopped, o)
    assert attrs["goodput"] == 14.0 and attrs["max_rate"] == 16.0 and "cannot beat trial 0" in attrs["stopped_early"]
    # The same levels from a search that was not stopped: feasible at 16 (its own first failing rate was 28).
    assert o.constraints(result(levels, slo_pass=(True, False))) == [0.0, 0.0, -40.0, -5.0]
    # Broken at the check level below the incumbent's rate: value 0, constraints of that level.
    low = result(levels[1:], slo_pass=(False,))
    low = dataclasses.replace(low, benchmark=dataclasses.replace(low.benchmark, cannot_beat=0))
    assert o.values(low) == [0.0] and o.constraints(low) == [0.0, 0.0, 0.0, 6.0]


def test_objective_for_reads_the_run_config(tmp_path):
    c = RunConfig.model_validate(
        {
            "workload": {"concurrency": [4, 32, 8], "request_timeout_s": 7},
            "objective": {"metrics": ["p99_ttft_ms"], "slo": {"p99_tpot_ms": 30}, "max_gpu_memory_fraction": 0.8},
        }
    )
    assert objective_for(c) == Objective(("p99_ttft_ms",), 32, {"p99_tpot_ms": 30.0}, 0.8, 7000.0, None)
    c = RunConfig.model_validate({"workload": {"concurrency": [4, 32]}, "objective": {"at_concurrency": 4}})
    assert objective_for(c).at_concurrency == 4
    g = RunConfig.model_validate({"objective": {"metrics": ["goodput"], "slo": {"p99_tpot_ms": 30}}})
    assert objective_for(g).load_search == LoadSearch()


# -- a trial's record


def test_trial_attrs_of_a_measured_trial():
    times = PhaseTimes(
        wait_gpu_s=1.0, launch_s=0.5, startup_s=10.12345, benchmark_s=20.12345, stop_s=1.23456, total_s=40.12345
    )
    stats = gpu.GpuStats(
        peak_used_mib=80.0, total_mib=100.0, samples=[gpu.Sample(0.0, "benchmark", 0, 80.0, 100.0, 50.0, 200.0)]
    )
    holder = gpu.Holder(0, 123, "python", 1000.04)
    replayed = Replayed("s.json", (4,), False, None, 0.0)
    r = result(
        [level(4), level(16, output_throughput=2000.987654, failed=2, short_outputs=1)],
        exit_code=137,
        times=times,
        gpu_stats=stats,
        gpu_shared=(holder,),
        replayed=replayed,
        kv=KvCapacity(5000, 16),
        stopped_early="clearly worse",
        server_info={
            "version": "0.5.17",
            "chunked_prefill_size": 8192,
            "mem_fraction_static": 0.8,
            "cuda_graph_max_bs": 64,
            "attention_backend": "fa3",
            "other": 1,
        },
    )
    a = trial_attrs(r, objective(kv_needed=1000), {"input_len": 128})
    assert a["failure_class"] == "none" and "exit_code" not in a and "failure_hint" not in a
    assert (a["startup_s"], a["benchmark_s"], a["stop_s"], a["total_s"], a["overhead_s"]) == (
        10.123,
        20.123,
        1.235,
        40.123,
        9.877,
    )
    assert a["gpu_peak_used_mib"] == 80.0 and a["gpu_peak_used_fraction"] == 0.8
    assert a["workload"] == {"input_len": 128}
    assert a["replayed"] is True and a["replay_of"] == [4]
    assert a["gpu_shared"] == [{"gpu": 0, "pid": 123, "name": "python", "mib": 1000.0}]
    assert a["stopped_early"] == "clearly worse"
    assert a["max_total_num_tokens"] == 5000 and a["max_running_requests"] == 16 and "limit_class" not in a
    # The objective's level, rounded to 3 decimals.
    assert (a["output_throughput"], a["request_throughput"], a["total_throughput"]) == (2000.988, 24.123, 4000.123)
    assert (a["median_ttft_ms"], a["p99_ttft_ms"], a["median_tpot_ms"], a["p99_tpot_ms"]) == (
        40.123,
        80.123,
        8.123,
        12.123,
    )
    assert (a["median_itl_ms"], a["median_e2e_latency_ms"]) == (7.123, 490.123)
    assert (a["completed"], a["failed"], a["short_outputs"]) == (48, 2, 1)
    assert "goodput" not in a and "max_rate" not in a and "slo_broken" not in a
    assert a["levels"][1] == {
        "concurrency": 16,
        "request_rate": None,
        "repeat": 0,
        "output_throughput": 2000.99,
        "request_throughput": 24.123,
        "request_goodput": 20.123,
        "median_ttft_ms": 40.12,
        "p99_ttft_ms": 80.12,
        "median_tpot_ms": 8.123,
        "p99_tpot_ms": 12.123,
        "failed": 2,
    }
    assert [lv["concurrency"] for lv in a["levels"]] == [4, 16]
    assert a["server_version"] == "0.5.17" and a["server_chunked_prefill_size"] == 8192
    assert (a["server_mem_fraction_static"], a["server_cuda_graph_max_bs"], a["server_attention_backend"]) == (
        0.8,
        64,
        "fa3",
    )
    assert "server_other" not in a
    assert "server_attention_backend" not in trial_attrs(result([level()]), objective())
    assert "gpu_shared" not in trial_attrs(result([level()]), objective())
    assert "workload" not in trial_attrs(result([level()]), objective())
    assert "replayed" not in trial_attrs(result([level()]), objective())


def test_trial_attrs_of_a_failed_trial_and_of_a_pool_too_small():
    r = result([level(4), level(16)], failures.OOM_KV, exit_code=1, detail="KV cache pool is too small")
    a = trial_attrs(r, objective(kv_needed=1000))
    assert a["failure_class"] == "oom_kv" and a["exit_code"] == 1
    assert a["failure_explanation"] == failures.OOM_KV.explanation and a["failure_hint"] == failures.OOM_KV.hint
    assert a["failure_detail"] == "KV cache pool is too small"
    assert "output_throughput" not in a and "stopped_early" not in a and "gpu_peak_used_mib" not in a
    assert a["levels"][0]["concurrency"] == 4 and "slo_pass" not in a["levels"][0]
    short = trial_attrs(result([level()], kv=KvCapacity(250, 4)), objective(kv_needed=1000))
    assert short["limit_class"] == "kv_pool_too_small"
    assert short["limit_explanation"] == failures.KV_POOL_TOO_SMALL.explanation
    assert short["limit_hint"] == failures.KV_POOL_TOO_SMALL.hint
    assert short["limit_detail"].startswith("max_total_num_tokens=250 < 1000")
    # Not checked for a failed trial, nor in a study made before the constraint existed.
    assert "limit_class" not in trial_attrs(
        result([level()], failures.DIED, kv=KvCapacity(250, 4)), objective(kv_needed=1000)
    )
    assert "limit_class" not in trial_attrs(
        result([level()], kv=KvCapacity(250, 4)), objective(kv_needed=1000, kv_constraint=False)
    )


def test_trial_attrs_of_a_load_search():
    levels = [level(4, request_rate=4.0, request_goodput=3.98765), level(8, request_rate=8.0)]
    o = objective(("goodput",), slo={"p99_ttft_ms": 100}, search=SEARCH)
    a = trial_attrs(result(levels, slo_pass=(True, False), slo_broken="p99_ttft_ms 150 > 100"), o)
    assert a["goodput"] == 3.988 and a["max_rate"] == 4.0 and a["slo_broken"] == "p99_ttft_ms 150 > 100"
    assert [lv["slo_pass"] for lv in a["levels"]] == [True, False]
    assert [lv["request_rate"] for lv in a["levels"]] == [4.0, 8.0]
    none = trial_attrs(result(levels, slo_pass=(False, False)), o)
    assert none["goodput"] == 0.0 and none["max_rate"] == 0.0 and "slo_broken" not in none
    failed = trial_attrs(result([], failures.OOM_KV, benchmark=False), o)
    assert failed["goodput"] == 0.0 and failed["levels"] == []


def test_best_levels_are_the_best_throughput_of_feasible_complete_trials():
    study = optuna.create_study(directions=["maximize"])
    for feasible, levels, state in (
        (False, [(4, 900.0)], TrialState.COMPLETE),
        (True, [(4, 100.0), (16, 300.0), (1, 0.5)], TrialState.COMPLETE),
        (True, [(4, 150.0), (16, 200.0)], TrialState.COMPLETE),
        (False, [(4, 900.0)], TrialState.COMPLETE),
        (True, [(4, 800.0)], TrialState.FAIL),
    ):
        t = study.ask()
        t.set_user_attr("feasible", feasible)
        t.set_user_attr("levels", [{"concurrency": c, "output_throughput": v} for c, v in levels])
        study.tell(t, 1.0 if state == TrialState.COMPLETE else None, state=state)
    t = study.ask()
    study.tell(t, 1.0)  # no feasible attr (a trial recorded before it existed)
    t = study.ask()
    t.set_user_attr("feasible", True)
    study.tell(t, 1.0)  # feasible but no levels
    assert best_levels(study) == {4: 150.0, 16: 300.0, 1: 0.5}


# -- small helpers


def test_describe_names_a_parameters_kind():
    D = optuna.distributions
    assert describe_distribution(D.CategoricalDistribution(["a", 1])) == "choices ['a', 1]"
    assert describe_distribution(D.IntDistribution(1, 64, log=True)) == "an integer range 1..64 (log)"
    assert describe_distribution(D.FloatDistribution(0.5, 0.95)) == "a float range 0.5..0.95"


def test_redact_hides_credentials():
    assert _redact("postgresql://tuner:secret@db:5432/x") == "postgresql://***@db:5432/x"
    assert _redact("postgresql://u:p@ss@db/x") == "postgresql://***@db/x"  # an unquoted @ in the password
    assert _redact("sqlite:///studies/a@b.db") == "sqlite:///studies/a@b.db"  # an @ in a path is no user
    assert _redact("postgresql://u:pw@db/x?proxy=http://p") == "postgresql://***@db/x?proxy=http://p"
    assert _redact("sqlite:///studies/x.db") == "sqlite:///studies/x.db"
    assert _redact("user@host") == "user@host"


def test_postgresql_urls_use_psycopg_3_when_psycopg2_is_absent():
    assert _with_installed_driver("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert _with_installed_driver("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert _with_installed_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert _with_installed_driver("mysql://u@h/db") == "mysql://u@h/db"
    assert _with_installed_driver("postgresql://u@h/db?proxy=http://p") == "postgresql+psycopg://u@h/db?proxy=http://p"


def test_a_missing_driver_names_the_package_to_install():
    def error(module: str | None, via_cause: bool = True) -> ImportError:
        exc = ImportError("no driver")
        if via_cause:
            exc.__cause__ = ModuleNotFoundError(f"No module named {module!r}", name=module)
        else:
            exc.name = module
        return exc

    assert _missing_driver("mysql://h/db", error("MySQLdb")) == (
        "the mysql driver is not installed (SQLAlchemy needs the Python module MySQLdb): pip install mysqlclient "
        "(or mysql+pymysql://... with pip install pymysql)"
    )
    assert _missing_driver("postgresql+psycopg2://h/db", error("psycopg2._psycopg")) == (
        "the postgresql+psycopg2 driver is not installed (SQLAlchemy needs the Python module psycopg2._psycopg): "
        "pip install psycopg2-binary"
    )
    assert _missing_driver("x://h", error("oddmod", via_cause=False)).endswith("module oddmod): pip install oddmod")
    context = ImportError("no driver")
    context.__context__ = ModuleNotFoundError("No module named 'pg8000'", name="pg8000")
    assert _missing_driver("postgresql+pg8000://h", context).endswith("pip install pg8000")
    assert "module ?)" in _missing_driver("x://h", ImportError("bare"))
    assert _missing_driver("mysql://h/db?ssl=file://ca", error("MySQLdb")).startswith("the mysql driver")


def test_startup_timeout_grows_with_the_flags_that_slow_startup():
    c = RunConfig.model_validate(
        {"launcher": {"startup_timeout_s": 20, "startup_timeout_extra_s": {"enable-torch-compile": 10, "x": 5}}}
    )
    assert startup_timeout(c, ServerFlags.of({"enable-torch-compile": True})) == 30
    assert startup_timeout(c, ServerFlags.of({"enable-torch-compile": True, "x": 4})) == 35
    assert startup_timeout(c, ServerFlags.of({"enable-torch-compile": False})) == 20
    assert startup_timeout(c, ServerFlags.of({})) == 20


def test_port_free_tells_a_listening_port_from_a_free_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
    assert port_free("127.0.0.1", port)


def test_alive_and_model_paths(tmp_path):
    assert _alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not _alive(child.pid)
    assert looks_like_model_path("Qwen/Qwen3-8B") and looks_like_model_path(str(tmp_path))
    for bad in (
        "Qwen3-8B",
        "a/b/c",
        "/no/such/model",
        "/nosuchmodel",
        "./x/y",
        ".x/y",
        "~/no/such",
        "~/nosuch",
        str(tmp_path / "missing"),
        "~nosuchuser/m",
    ):  # no such user: no RuntimeError either
        assert not looks_like_model_path(bad), bad


def test_gpu_pool_hands_out_the_lowest_free_gpus_and_stops_waiting_when_cancelled():
    pool = gpu.GpuPool([3, 1, 2])
    cancel = threading.Event()
    assert pool.acquire(2, cancel) == (1, 2)
    with pytest.raises(SetupError, match="a trial needs 4 GPUs but --gpus gives 3"):
        pool.acquire(4, cancel)
    assert pool.acquire(1, cancel) == (3,)
    cancel.set()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        pool.acquire(1, cancel)
    assert time.monotonic() - t0 < 1.0
    assert pool._queue == []
    waiting = threading.Event()
    threading.Timer(0.2, waiting.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        pool.acquire(1, waiting)  # cancelled while it waits
    assert time.monotonic() - t0 < 3.0
    pool.release((2,))
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(2, threading.Event())))
    waiter.start()
    deadline = time.monotonic() + 60
    while not pool._queue:  # it asked, and waits
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not got  # one GPU free, two asked for
    pool.release((1,))
    waiter.join(60)
    assert got == [(1, 2)]


# -- storage and study


def sqlite_config(tmp_path: Path, **extra) -> RunConfig:
    return RunConfig.model_validate(
        {
            "study": "s",
            "storage": f"sqlite:///{tmp_path}/db/s.db",
            "trials_dir": str(tmp_path / "trials"),
            "model": {"path": "m/n"},
            **extra,
        }
    )


def test_open_storage_creates_a_sqlite_file_only_when_asked(tmp_path):
    c = sqlite_config(tmp_path)
    with pytest.raises(SetupError, match=r"no study 's': .*/db/s.db does not exist \(a run file's relative"):
        open_storage(c, create=False)
    assert not (tmp_path / "db").exists()
    open_storage(c)
    assert (tmp_path / "db" / "s.db").is_file()
    open_storage(c, create=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(SetupError, match=r"cannot create its folder .*/file \(File exists\)"):
        open_storage(sqlite_config(tmp_path, storage=f"sqlite:///{tmp_path}/file/s.db"))
    with pytest.raises(SetupError, match=r"--storage 'studies/x.db' is not a database URL"):
        open_storage(sqlite_config(tmp_path, storage="studies/x.db"))


def test_sqlite_transactions_take_the_write_lock_when_they_begin(tmp_path):
    """Two slots must never both pop one queued trial: each transaction locks at BEGIN (BEGIN IMMEDIATE)."""
    storage = open_storage(sqlite_config(tmp_path))
    other = sqlite3.connect(tmp_path / "db" / "s.db", timeout=0, isolation_level=None)
    with storage.engine.connect() as conn:
        conn.begin()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again once the transaction ended
    other.execute("ROLLBACK")


def test_open_storage_sets_up_heartbeats_and_says_what_failed(tmp_path):
    storage = open_storage(sqlite_config(tmp_path, heartbeat_s=3))
    assert (storage.heartbeat_interval, storage.grace_period) == (3, 6)
    assert isinstance(storage.heartbeat_stale_trial_callback, _RetryStale)
    assert open_storage(sqlite_config(tmp_path)).heartbeat_interval is None
    with pytest.raises(SetupError) as missing:
        open_storage(sqlite_config(tmp_path, storage="mysql://tuner:secret@localhost/x"))
    assert str(missing.value) == (
        "--storage mysql://***@localhost/x: the mysql driver is not installed (SQLAlchemy needs the Python module "
        "MySQLdb): pip install mysqlclient (or mysql+pymysql://... with pip install pymysql)"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SetupError) as refused:
        open_storage(sqlite_config(tmp_path, storage=f"postgresql://tuner:secret@127.0.0.1:{port}/x"))
    message = str(refused.value)
    assert message.startswith(f"--storage postgresql://***@127.0.0.1:{port}/x: cannot open it (")
    assert "secret" not in message and "\n" not in message
    with pytest.raises(SetupError, match=r"--storage nosuchdialect://x: cannot open it \(.+\)"):
        open_storage(sqlite_config(tmp_path, storage="nosuchdialect://x"))


def test_make_sampler_builds_the_run_files_sampler_with_its_options(tmp_path, monkeypatch):
    def cfg(**s) -> RunConfig:
        return RunConfig.model_validate({"sampler": s})

    tpe = make_sampler(cfg(n_startup_trials=3), 5)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._group, tpe._constant_liar) == (3, True, True, True)
    rng = optuna.samplers.TPESampler(seed=5)._rng.rng.random_sample()
    assert tpe._rng.rng.random_sample() == rng
    rnd = make_sampler(cfg(name="random"), 5)
    assert isinstance(rnd, optuna.samplers.RandomSampler)
    assert rnd._rng.rng.random_sample() == optuna.samplers.RandomSampler(seed=5)._rng.rng.random_sample()
    from tuner.search import storage

    real = storage.importlib.util.find_spec
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda n, *a: True if n == "torch" else real(n, *a))
    gp = make_sampler(cfg(name="gp", n_startup_trials=2), 5)
    assert isinstance(gp, optuna.samplers.GPSampler) and gp._n_startup_trials == 2
    assert gp._rng.rng.random_sample() == optuna.samplers.GPSampler(seed=5)._rng.rng.random_sample()
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    with pytest.raises(
        SetupError, match=r"^sampler gp needs torch \(pip install torch\), or set sampler: \{name: tpe\}$"
    ):
        make_sampler(cfg(name="gp"), 5)


def test_open_study_records_the_objective_once_and_the_run_config_every_time(tmp_path):
    c = sqlite_config(
        tmp_path,
        space="first.yaml",
        workload={"concurrency": [1, 8]},
        objective={"metrics": ["output_throughput", "p99_ttft_ms"], "slo": {"p99_tpot_ms": 50}},
    )
    study = open_study(c)
    attrs = study.user_attrs
    assert attrs["metrics"] == ["output_throughput", "p99_ttft_ms"]
    assert attrs["constraint_names"] == ["launch_ok", "kv_capacity", "slo:p99_tpot_ms"]
    assert attrs["at_concurrency"] == 8 and attrs["space"] == "first.yaml"
    assert "slo" not in attrs and "load_search" not in attrs
    assert attrs["run_config"]["space"] == "first.yaml"
    assert study.metric_names == ["output_throughput", "p99_ttft_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    again = open_study(c.model_copy(update={"space": "second.yaml"}))
    assert again.user_attrs["space"] == "first.yaml" and again.user_attrs["run_config"]["space"] == "second.yaml"
    other = c.model_copy(update={"objective": c.objective.model_copy(update={"metrics": ["median_ttft_ms"]})})
    with pytest.raises(SetupError) as err:
        open_study(other)
    assert str(err.value) == (
        "study 's' already exists with objectives ['output_throughput', 'p99_ttft_ms']: use "
        "another --study name for ['median_ttft_ms']"
    )


def test_open_study_of_a_goodput_objective_records_its_search(tmp_path):
    c = sqlite_config(
        tmp_path, objective={"metrics": ["goodput"], "slo": {"p99_tpot_ms": 50}, "load_search": {"start_rate": 3}}
    )
    attrs = open_study(c).user_attrs
    assert attrs["slo"] == {"p99_tpot_ms": 50.0}
    assert attrs["load_search"] == {**vars(LoadSearch()), "start_rate": 3.0}


def test_a_resumed_seeded_sampler_is_offset_by_the_trials_already_there(tmp_path):
    c = sqlite_config(tmp_path, sampler={"name": "random", "seed": 5})
    study = open_study(c)
    assert study.sampler._rng.rng.random_sample() == optuna.samplers.RandomSampler(seed=5)._rng.rng.random_sample()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    study = open_study(c)
    assert study.sampler._rng.rng.random_sample() == optuna.samplers.RandomSampler(seed=7)._rng.rng.random_sample()
    unseeded = open_study(sqlite_config(tmp_path, sampler={"name": "random", "seed": None}))
    assert isinstance(unseeded.sampler, optuna.samplers.RandomSampler)


_OPEN_AND_DRAW = """
import json, pathlib, sys, time
from tuner.config.run import RunConfig
from tuner.search.storage import open_study
config = RunConfig.model_validate(json.loads(sys.argv[1]))
here, n, me = pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
while not (here / "go").exists():
    time.sleep(0.001)
study = open_study(config)
(here / f"opened-{me}").touch()
while len(list(here.glob("opened-*"))) < n:  # every worker has opened the study before any asks
    time.sleep(0.01)
print(study.ask().suggest_float("x", 0, 1))
"""


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_workers_opening_one_study_at_once_never_share_a_random_stream(tmp_path, db):
    """Several `tune start` opening one seeded study at the same moment see the same history: each still draws
    its own flags, and the first worker of a fresh study draws what a lone one draws (reproducible). The same
    for workers on several hosts sharing a PostgreSQL study."""
    c = sqlite_config(tmp_path, sampler={"name": "random", "seed": 5})
    lone = sqlite_config(tmp_path / "lone", sampler={"name": "random", "seed": 5})
    if db == "postgresql":
        import psycopg

        from tests.test_postgres import PG

        try:
            psycopg.connect(PG, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is not reachable in CI ({exc})")
            pytest.skip(f"PostgreSQL not reachable: run bash tests/services.sh ({exc})")
        name = f"seeds-{os.getpid()}-{time.time_ns()}"
        c = c.model_copy(update={"storage": PG, "study": name})
        lone = lone.model_copy(update={"storage": PG, "study": f"{name}-lone"})
    lone = open_study(lone)
    alone = lone.ask().suggest_float("x", 0, 1)
    open_storage(c)
    n = 4
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _OPEN_AND_DRAW,
                json.dumps(c.model_dump(mode="json")),
                str(tmp_path),
                str(n),
                str(i),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    time.sleep(3)  # imported and waiting
    (tmp_path / "go").touch()
    draws = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        draws.append(float(out))
    assert len(set(draws)) == n, draws
    assert alone in draws


def test_load_existing_study_names_the_studies_there(tmp_path):
    c = sqlite_config(tmp_path)
    with pytest.raises(SetupError, match=r"no study 's': .* does not exist"):
        load_existing_study(c)
    open_storage(c)
    with pytest.raises(SetupError) as none:
        load_existing_study(c)
    assert str(none.value) == f"no study 's' in sqlite:///{tmp_path}/db/s.db (studies there: none)"
    open_study(c.model_copy(update={"study": "a"}))
    open_study(c.model_copy(update={"study": "b"}))
    with pytest.raises(SetupError, match=r"\(studies there: a, b\)$"):
        load_existing_study(c)
    assert load_existing_study(c.model_copy(update={"study": "b"})).study_name == "b"


def test_set_trial_attrs_writes_user_and_system_attrs_in_one_go(tmp_path):
    study = open_study(sqlite_config(tmp_path))
    trial = study.ask()
    from sqlalchemy import event

    commits = []
    event.listen(study._storage._backend.engine, "commit", lambda conn: commits.append(1))
    set_trial_attrs(study, trial, {"a": 1, "b": [1, 2]}, system={"constraints": [0.0]})
    assert len(commits) == 1  # one storage transaction for all the keys
    assert trial.user_attrs["a"] == 1 and trial.user_attrs["b"] == [1, 2]
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.user_attrs == {"a": 1, "b": [1, 2]} and stored.system_attrs["constraints"] == [0.0]
    set_trial_attrs(study, trial, {"c": "x"})
    assert study._storage.get_trial(trial._trial_id).user_attrs["c"] == "x"
    memory = optuna.create_study()
    t = memory.ask()
    set_trial_attrs(memory, t, {"a": 1}, system={"s": 2})
    assert memory.trials[0].user_attrs == {"a": 1} and memory.trials[0].system_attrs["s"] == 2


def test_a_retry_runs_the_same_parameters_and_keeps_its_role(tmp_path):
    study = open_study(sqlite_config(tmp_path))
    trial = study.ask({"x": optuna.distributions.IntDistribution(1, 9)})
    trial.set_user_attr("baseline", True)
    trial.set_user_attr("reference", "seed-balanced-v2")
    trial.set_user_attr("warm_start", "earlier.json")
    trial.set_user_attr("worker", "h:1")
    study.tell(trial, state=TrialState.FAIL)
    study.tell(study.ask(), 1.0)
    frozen, plain_trial = study.trials
    enqueue_retry(study, frozen)
    _RetryStale()(study, frozen)
    enqueue_retry(study, plain_trial, reason="why")
    _RetryStale()(study, study.trials[1])
    queued = list(study.get_trials(states=(TrialState.WAITING,)))
    assert [t.system_attrs["fixed_params"] for t in queued] == [frozen.params, frozen.params, {}, {}]
    assert queued[0].user_attrs == {
        "retry_of": 0,
        "retry_reason": "interrupted",
        "baseline": True,
        "reference": "seed-balanced-v2",
        "warm_start": "earlier.json",
    }
    assert queued[1].user_attrs["retry_reason"] == "worker h:1 stopped heartbeating"
    assert queued[2].user_attrs == {"retry_of": 1, "retry_reason": "why"}
    assert queued[3].user_attrs == {"retry_of": 1, "retry_reason": "worker ? stopped heartbeating"}


def test_heartbeat_is_recorded_while_a_trial_runs_and_stops_after(tmp_path, caplog):
    storage = open_storage(sqlite_config(tmp_path, heartbeat_s=1))
    study = optuna.create_study(storage=storage)
    beats: list[int] = []
    record = storage.record_heartbeat

    def beat(trial_id):
        beats.append(trial_id)
        if len(beats) == 2:
            raise optuna.exceptions.StorageInternalError("database is locked")
        record(trial_id)

    storage.record_heartbeat = beat
    trial = study.ask()
    with caplog.at_level("WARNING", logger="tuner.search.storage"), _Heartbeat(study, trial, 0.05) as hb:
        assert beats == [trial._trial_id]  # at once, before the first interval
        deadline = time.monotonic() + 60
        while len(beats) < 4:  # a failed beat is logged; the next ones go on
            assert time.monotonic() < deadline and hb._thread.is_alive(), beats
            time.sleep(0.01)
        assert hb._thread.is_alive()
    assert set(beats) == {trial._trial_id}
    assert [r.getMessage() for r in caplog.records] == [
        f"heartbeat for trial id {trial._trial_id} failed: database is locked"
    ]
    assert not hb._thread.is_alive()
    done = len(beats)
    time.sleep(0.1)
    assert len(beats) == done
    with _Heartbeat(study, study.ask(), None) as quiet:
        assert not quiet._thread.is_alive()
    assert len(beats) == done


def test_make_launcher_follows_the_launcher_kind(tmp_path):
    replay = make_launcher(RunConfig.model_validate({"launcher": {"kind": "replay", "surface": str(SURFACE)}}))
    assert isinstance(replay, ReplayLauncher) and replay.path == str(SURFACE)
    assert replay.surface.header.model_path == "standin/qwen3-8b"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "header": {}}')
    with pytest.raises(SetupError, match=r"^launcher.surface: .*not a surface file"):
        make_launcher(RunConfig.model_validate({"launcher": {"kind": "replay", "surface": str(bad)}}))
    docker = make_launcher(
        RunConfig.model_validate(
            {
                "launcher": {
                    "kind": "docker",
                    "image": "img:1",
                    "command": "python -m x",
                    "env": {"A": "1"},
                    "hf_cache": "/hf",
                    "volumes": ["/a:/b"],
                    "shm_size": "8g",
                    "gpu_runtime": True,
                }
            }
        )
    )
    assert isinstance(docker, DockerLauncher)
    assert (
        docker.image,
        docker.command,
        docker.env,
        docker.hf_cache,
        docker.volumes,
        docker.shm_size,
        docker.gpu_runtime,
    ) == ("img:1", ["python", "-m", "x"], {"A": "1"}, "/hf", ["/a:/b"], "8g", True)
    process = make_launcher(RunConfig.model_validate({"launcher": {"command": "python -m y", "env": {"B": "2"}}}))
    assert isinstance(process, ProcessLauncher)
    assert (process.command, process.env) == (["python", "-m", "y"], {"B": "2"})


# -- whole studies, replayed from a few recorded stand-in trials (no server, no GPU)


@pytest.fixture
def surface(tmp_path) -> Path:
    """A surface of the rows above; the studies' SQLite files go to /dev/shm where there is one (each trial
    commits a few times, and a disk's syncs would double the time of these tests)."""
    data = json.loads(SURFACE.read_text())
    data["rows"] = [r for r in data["rows"] if r["trial"] in ROWS]
    for r in data["rows"]:  # the two flags the test space tunes, so its configs are recorded ones
        r["flags"] = {k: v for k, v in r["flags"].items() if k in ("schedule-policy", "mem-fraction-static")}
    path = tmp_path / "surface.json"
    path.write_text(json.dumps(data))
    return path


def db_dir(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return tmp_path
    folder = shm / "sglang-tuner-tests" / str(os.getpid()) / tmp_path.relative_to(tmp_path.anchor)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _drop_shm_dbs():
    yield
    import shutil

    shutil.rmtree(Path("/dev/shm/sglang-tuner-tests") / str(os.getpid()), ignore_errors=True)


def replay_config(tmp_path: Path, surface: Path, **extra) -> RunConfig:
    space = write_space(
        tmp_path / "space.yaml",
        params={
            "schedule-policy": {"choices": ["lpm", "fcfs"]},
            "mem-fraction-static": {"low": 0.72, "high": 0.94, "step": 0.01},
        },
    )
    raw = {
        "study": "r",
        "storage": f"sqlite:///{db_dir(tmp_path)}/r.db",
        "trials_dir": str(tmp_path / "trials"),
        "space": str(space),
        "trials": 3,
        "launcher": {"kind": "replay", "surface": str(surface), "port": 31000},
        "workload": {"input_len": 128, "output_len": 48, "concurrency": [4, 16], "num_prompts": 48},
        "sampler": {"seed": 0, "n_startup_trials": 2},
        "confirm": None,
    }
    for key, value in extra.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return RunConfig.model_validate(raw)


def rows() -> dict[int, dict]:
    return {r["trial"]: r for r in json.loads(SURFACE.read_text())["rows"]}


def test_a_replayed_study_records_every_trial_for_the_sampler_and_the_dashboard(tmp_path, surface):
    class Done:
        def __init__(self):
            self.done: list[tuple[optuna.Study, int, str]] = []

        def phase(self, trial: int, name: str, detail: str = "") -> None:
            pass

        def trial_done(self, study, result) -> None:
            self.done.append((study, result.plan.number, result.failure.name if result.failure else "none"))

    progress = Done()
    tuner = Tuner(
        replay_config(tmp_path, surface, trials=3, artifacts=str(tmp_path / "new" / "store")),
        progress=progress,
        on_record=note_for,
    )
    assert tuner.config.model.path == "standin/qwen3-8b"  # a replay serves the surface's model
    assert tuner.objective.kv_tokens_needed == 16 * (128 + 48) and tuner.objective.at_concurrency == 16
    assert tuner.workload_record["concurrency"] == [4, 16] and tuner.workload_record["input_len"] == 128
    study = tuner.prepare()
    # The recorded OOM: run it as trial 1, right after the baseline (queued first, as references are).
    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.enqueue_trial({"schedule-policy": "lpm", "mem-fraction-static": 0.94})
    assert tuner.run() is study
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 and len(trials) == 3
    base, oom, sampled = trials
    recorded = rows()
    assert base.values == [next(lv["output_throughput"] for lv in recorded[0]["levels"] if lv["concurrency"] == 16)]
    assert base.user_attrs["baseline"] is True and base.params == {}
    assert base.user_attrs["flags"] == {"model-path": "standin/qwen3-8b", "host": "127.0.0.1", "port": 31000}
    assert base.user_attrs["argv"] == ["--model-path", "standin/qwen3-8b", "--host", "127.0.0.1", "--port", "31000"]
    assert base.system_attrs["constraints"] == [0.0, 0.0] and base.user_attrs["feasible"] is True
    assert base.user_attrs["worker"] == WORKER and base.user_attrs["host"] == HOST
    assert base.user_attrs["gpus"] == [0] and base.user_attrs["launcher"]["launcher"] == "replay"
    assert base.user_attrs["server"] == "replay of trial 0"
    assert base.user_attrs["workload"]["concurrency"] == [4, 16]
    assert datetime.fromisoformat(base.user_attrs["started_at"]) <= datetime.fromisoformat(base.user_attrs["ended_at"])
    assert base.user_attrs["trial_dir"] == str(tmp_path / "trials" / "r" / "0")
    assert [lv["concurrency"] for lv in base.user_attrs["levels"]] == [4, 16]
    assert oom.user_attrs["failure_class"] == "oom_runtime" and oom.user_attrs["baseline"] is False
    assert oom.values == [0.0] and oom.system_attrs["constraints"] == [1.0, 1.0]
    assert oom.user_attrs["feasible"] is False and oom.user_attrs["flags"]["mem-fraction-static"] == 0.94
    assert sampled.user_attrs["baseline"] is False and set(sampled.params) == {"schedule-policy", "mem-fraction-static"}
    # Each trial's files are artifacts of its own.
    store = tmp_path / "new" / "store"
    assert [(s is study, n, c) for s, n, c in progress.done][:2] == [(True, 0, "none"), (True, 1, "oom_runtime")]
    assert [n for _, n, _ in progress.done] == [0, 1, 2]
    from optuna_dashboard import get_note

    assert get_note(optuna.Trial(study, oom._trial_id)).startswith("## Trial 1")
    metas = {m.filename: m.mimetype for m in get_all_artifact_meta(base, storage=study._storage)}
    assert metas == {"server.log": "text/plain", "benchmark.csv": "text/csv", "trial.json": "application/json"}
    assert {m.filename for m in get_all_artifact_meta(oom, storage=study._storage)} == {"server.log", "trial.json"}
    assert len(list(store.iterdir())) >= 5
    assert (tmp_path / "trials" / "r" / "1" / "trial.json").is_file()
    assert Tuner.trials_done(study) == 3 and Tuner.trials_interrupted(study) == 0


def test_a_resumed_study_keeps_its_budget_and_numbering(tmp_path, surface):
    Tuner(replay_config(tmp_path, surface, trials=2)).run()
    again = Tuner(replay_config(tmp_path, surface, trials=2)).run()
    assert len(again.trials) == 2  # the budget was reached: nothing run
    more = Tuner(replay_config(tmp_path, surface, trials=3)).run()
    assert [t.number for t in more.trials] == [0, 1, 2]
    assert more.trials[2].user_attrs["baseline"] is False and more.trials[2].params
    assert more.trials[0].user_attrs["baseline"] is True


def test_references_run_after_the_baseline_once_each(tmp_path, surface):
    refs = [{"name": "hand", "flags": {"schedule-policy": "fcfs", "mem-fraction-static": 0.84}}]
    config = replay_config(tmp_path, surface, trials=3, references=refs)
    study = Tuner(config).run()
    base, hand, sampled = study.trials
    assert base.user_attrs["baseline"] is True and "reference" not in base.user_attrs
    assert hand.user_attrs["reference"] == "hand" and hand.user_attrs["baseline"] is False
    assert hand.user_attrs["flags"]["schedule-policy"] == "fcfs" and hand.user_attrs["replay_of"] == [8]
    assert "reference" not in sampled.user_attrs and sampled.user_attrs["baseline"] is False
    study = Tuner(replay_config(tmp_path, surface, trials=4, references=refs)).run()
    assert [t.user_attrs.get("reference") for t in study.trials].count("hand") == 1
    (tmp_path / "nb").mkdir()
    no_base = replay_config(tmp_path / "nb", surface, trials=1, references=refs, baseline=False)
    first = Tuner(no_base).run().trials[0]
    assert first.user_attrs["reference"] == "hand" and first.user_attrs["baseline"] is False


def test_without_baseline_trial_0_is_sampled(tmp_path, surface):
    study = Tuner(replay_config(tmp_path, surface, trials=1, baseline=False)).run()
    assert study.trials[0].params and study.trials[0].user_attrs["baseline"] is False


def test_an_slo_broken_at_the_first_level_stops_the_trial_there(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=1, objective={"slo": {"p99_ttft_ms": 1}})
    base = Tuner(config).run().trials[0]
    assert base.user_attrs["stopped_early"].startswith("SLO broken at concurrency 4: p99_ttft_ms ")
    assert [lv["concurrency"] for lv in base.user_attrs["levels"]] == [4]
    assert base.values == [0.0] and base.system_attrs["constraints"][2] > 0
    (tmp_path / "off").mkdir()
    off = replay_config(tmp_path / "off", surface, trials=1, objective={"slo": {"p99_ttft_ms": 1}, "early_stop": False})
    assert [lv["concurrency"] for lv in Tuner(off).run().trials[0].user_attrs["levels"]] == [4, 16]


def test_early_stop_skips_a_clearly_worse_trial_but_never_at_the_objective_level(tmp_path, surface):
    tuner = Tuner(replay_config(tmp_path, surface, trials=1, objective={"slo": {"p99_ttft_ms": 100}}))
    study = tuner.run()
    best = {lv["concurrency"]: lv["output_throughput"] for lv in study.trials[0].user_attrs["levels"]}
    check = tuner._early_stop(study)
    assert check(level(4, output_throughput=best[4] * 0.55, p99_ttft_ms=99.0)) is None
    assert check(level(4, output_throughput=0.5 * best[4], p99_ttft_ms=100.0)) is None  # both limits are inclusive
    assert (
        check(level(4, output_throughput=best[4] * 0.45))
        == f"clearly worse than the best at concurrency 4: {best[4] * 0.45:.0f} vs {best[4]:.0f} tok/s"
    )
    assert check(level(16, output_throughput=1.0)) is None  # the objective's own level is always measured
    assert check(level(8, output_throughput=1.0)) is None  # no best there yet
    assert check(level(16, p99_ttft_ms=100.5)) == "SLO broken at concurrency 16: p99_ttft_ms 100.5 > 100"


def test_a_trial_needing_more_gpus_is_recorded_infeasible_without_launching(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=2)
    write_space(
        Path(config.space), params={"schedule-policy": {"choices": ["lpm", "fcfs"]}, "tp-size": {"choices": [1, 2]}}
    )
    tuner = Tuner(config)
    study = tuner.prepare()
    assert "the space allows trials needing up to 2 GPUs" not in " ".join(tuner.warnings)  # a replay: no GPUs
    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.enqueue_trial({"schedule-policy": "lpm", "tp-size": 2})
    (tmp_path / "trials" / "r" / "1").mkdir()  # left by a study of that name whose database was deleted
    tuner.run()
    base, big, *_ = study.trials
    assert Tuner.trials_done(study) == 2  # the prediction took none of the budget: a third trial was drawn
    assert big.user_attrs["failure_class"] == "too_many_gpus" and big.user_attrs["launched"] is False
    assert big.user_attrs["gpus"] == [] and big.user_attrs["gpus_needed"] == 2 and big.user_attrs["baseline"] is False
    assert big.user_attrs["failure_detail"] == "needs 2 GPUs (tp x dp) but --gpus 0 gives 1"
    assert big.user_attrs["host"] == HOST and big.user_attrs["flags"]["tp-size"] == 2
    assert big.user_attrs["flags"]["port"] == 31000
    assert big.user_attrs["argv"][:2] == ["--model-path", "standin/qwen3-8b"]
    assert big.user_attrs["trial_dir"] == str(tmp_path / "trials" / "r" / "1")
    assert big.values == [0.0] and big.system_attrs["constraints"] == [1.0, 1.0]
    assert "server" not in big.user_attrs and "started_at" not in big.user_attrs
    assert {m.filename for m in get_all_artifact_meta(big, storage=study._storage)} == {"trial.json"}
    assert "launched" not in base.user_attrs and base.user_attrs["gpus"] == [0]


def surface_with(tmp_path: Path, surface: Path, change) -> Path:
    data = json.loads(surface.read_text())
    change(data)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(data))
    return path


def test_prepare_refuses_what_the_replay_cannot_answer_in_one_line(tmp_path, surface):
    def refused(config: RunConfig, launcher=None) -> str:
        with pytest.raises(SetupError) as err:
            Tuner(config, launcher=launcher).prepare()
        assert "\n" not in str(err.value)
        return str(err.value)

    assert refused(replay_config(tmp_path, surface, model={"path": "other/model"})) == (
        f"model.path 'other/model': {surface} recorded stand-in Qwen3-8B (standin/qwen3-8b); leave model out of a "
        f"replay's run file"
    )
    Tuner(replay_config(tmp_path, surface, model={"path": "stand-in Qwen3-8B"})).prepare()
    assert "ISL 64 / OSL 48" in refused(replay_config(tmp_path, surface, workload={"input_len": 64}))
    assert "objective.metrics [goodput]" in refused(
        replay_config(
            tmp_path,
            surface,
            objective={"metrics": ["goodput"], "slo": {"p99_ttft_ms": 100}},
            workload={"concurrency": [4, 16], "num_prompts": None},
        )
    )
    assert "not a flag of this SGLang" in refused(
        replay_config(
            tmp_path,
            surface,
            space=str(write_space(tmp_path / "bad.yaml", params={"no-such-flag": {"choices": [1, 2]}})),
        )
    )
    assert "no such search-space file" in refused(
        replay_config(tmp_path, surface, space=str(tmp_path / "missing.yaml"))
    )
    refs = [{"name": "hand", "flags": {"schedule-policy": "nope"}}]
    assert refused(replay_config(tmp_path, surface, references=refs)).startswith(
        "references[0].flags.schedule-policy: "
    )
    no_switch = surface_with(
        tmp_path,
        surface,
        lambda d: d["header"].update(
            catalog=[f for f in d["header"]["catalog"] if f["name"] != "disable-custom-all-reduce"]
        ),
    )
    assert refused(
        replay_config(tmp_path, surface, references=[{"name": "seed-balanced-v2"}]),
        make_launcher(replay_config(tmp_path, surface, launcher={"surface": str(no_switch)})),
    ).startswith("references[0] (seed-balanced-v2): ")
    assert refused(
        replay_config(tmp_path, surface, launcher={"kind": "process"}, model={"path": "Qwen/Qwen3-8B"}),
        ProcessLauncher([str(tmp_path / "no-such-python")]),
    ).startswith(f"cannot run the server command '{tmp_path / 'no-such-python'}'")
    no_port = surface_with(
        tmp_path,
        surface,
        lambda d: d["header"].update(catalog=[f for f in d["header"]["catalog"] if f["name"] != "port"]),
    )
    assert refused(
        replay_config(tmp_path, surface),
        make_launcher(replay_config(tmp_path, surface, launcher={"surface": str(no_port)})),
    ).endswith("--help lists no --port: is this SGLang's launch_server?")
    assert not (db_dir(tmp_path) / "r.db").exists() or not load_existing_study(replay_config(tmp_path, surface)).trials


def test_prepare_warns_of_deprecated_fixed_flags_and_unrecorded_ones(tmp_path, surface):
    config = replay_config(tmp_path, surface)
    write_space(
        Path(config.space),
        fixed={"cuda-graph-max-bs": 8, "log-level": "info"},
        params={"schedule-policy": {"choices": ["lpm", "fcfs"]}, "chunked-prefill-size": {"choices": [1, 2]}},
    )
    tuner = Tuner(config)
    tuner.prepare()
    assert "--cuda-graph-max-bs is deprecated in this SGLang" in tuner.warnings
    assert not any("--log-level" in w for w in tuner.warnings)
    assert any(w.startswith("--chunked-prefill-size is in no recorded trial of") for w in tuner.warnings)
    assert not any(w.startswith("--schedule-policy is in no") for w in tuner.warnings)
    assert not any("no local config.json" in w for w in tuner.warnings)  # a replay's surface says what failed
    assert tuner.idle_mib == {} and (tmp_path / "trials" / "r").is_dir()
    assert tuner.feasibility.longest_request == 128 + 48 and tuner.feasibility.gpus == (0,)


def test_a_resumed_study_refuses_a_parameter_of_another_kind(tmp_path, surface):
    Tuner(replay_config(tmp_path, surface, trials=2, baseline=False)).run()
    config = replay_config(tmp_path, surface)
    write_space(
        Path(config.space),
        params={
            "chunked-prefill-size": {"choices": [1, 2]},  # new: nothing to match
            "schedule-policy": {"choices": ["lpm", "fcfs"]},
            "mem-fraction-static": {"choices": [0.8, 0.85]},
        },
    )
    with pytest.raises(SetupError) as err:
        Tuner(config).prepare()
    assert str(err.value) == (
        f"{config.space}:11: mem-fraction-static is choices [0.8, 0.85] here but a float range 0.72..0.94 in study "
        f"'r''s trials: use a new --study name for the new space, or keep the old kind of mem-fraction-static"
    )
    write_space(
        Path(config.space),
        params={
            "schedule-policy": {"choices": ["lpm", "fcfs"]},
            "mem-fraction-static": {"low": 0.7, "high": 0.95, "step": 0.01},
            "chunked-prefill-size": {"choices": [1, 2]},
        },
    )
    Tuner(config).prepare()  # a wider range, and a new parameter: fine


def test_a_study_whose_baseline_sglang_refused_stops_before_another_launch(tmp_path, surface):
    def invalid(d):
        row = next(r for r in d["rows"] if r["trial"] == 0)
        row.update(failure_class="invalid_flag", failure_detail="argument --foo: invalid int value", levels=[])

    refused = surface_with(tmp_path, surface, invalid)
    config = replay_config(tmp_path, refused, trials=1, confirm={"top": 1, "repeats": 2})
    with pytest.raises(SetupError) as err:
        Tuner(config).run()
    expected = (
        f"the baseline (trial 0: the space's fixed flags only) failed as invalid_flag (argument --foo: "
        f"invalid int value): SGLang refuses a fixed flag, so every later trial would fail too; fix `fixed:` "
        f"in {config.space} (see the trial's server.log) and start a new study (--study NAME)"
    )
    assert str(err.value) == expected
    study = load_existing_study(config)
    assert len(study.trials) == 1 and study.trials[0].user_attrs["failure_class"] == "invalid_flag"
    assert "confirmation" not in study.user_attrs  # the budget is reached, but the study failed: nothing confirmed
    with pytest.raises(SetupError) as again:
        Tuner(replay_config(tmp_path, surface, trials=3)).prepare()
    assert str(again.value) == expected
    assert len(load_existing_study(config).trials) == 1


def test_trials_left_running_by_a_dead_tuner_on_this_host_are_failed_and_rerun(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=3, baseline=False)
    study = open_study(config)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    for worker in (f"{HOST}:{os.getpid()}", f"elsewhere:{child.pid}", f"{HOST}:x", None, f"{HOST}:{child.pid}"):
        t = study.ask({"schedule-policy": optuna.distributions.CategoricalDistribution(["lpm", "fcfs"])})
        if worker:
            t.set_user_attr("worker", worker)
    tuner = Tuner(config)
    tuner.prepare()
    states = [t.state for t in study.get_trials()]
    assert states[:5] == [TrialState.RUNNING] * 4 + [TrialState.FAIL]
    dead = study.trials[4]
    assert dead.user_attrs["failure_class"] == "interrupted"
    assert dead.user_attrs["failure_detail"] == f"worker {HOST}:{child.pid} died"
    [queued] = study.get_trials(states=(TrialState.WAITING,))
    assert queued.system_attrs["fixed_params"] == dead.params and queued.user_attrs["retry_of"] == 4
    assert "trial 4 was left RUNNING by a dead tuner: marked failed, re-queued" in tuner.warnings


def test_a_study_made_before_the_kv_constraint_keeps_its_constraints(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=1)
    open_study(config).set_user_attr("constraint_names", ["launch_ok"])
    tuner = Tuner(config)
    study = tuner.run()
    assert tuner.objective.kv_constraint is False
    assert study.trials[0].system_attrs["constraints"] == [0.0]
    fresh = Tuner(replay_config(tmp_path / "f", surface, trials=1)) if (tmp_path / "f").mkdir() is None else None
    fresh.prepare()
    assert fresh.objective.kv_constraint is True
    (tmp_path / "g").mkdir()
    old = replay_config(tmp_path / "g", surface, trials=1)
    optuna.create_study(storage=open_storage(old), study_name="r", direction="maximize").set_user_attr(
        "metrics", ["output_throughput"]
    )
    older = Tuner(old)
    older.prepare()  # no constraint names recorded at all: the constraints of now
    assert older.objective.kv_constraint is True


def test_an_interrupted_trial_is_recorded_failed_and_rerun_on_resume(tmp_path, surface):
    class CancelWhileStarting:
        def __init__(self):
            self.tuner = None
            self.phases: list[tuple[int, str]] = []

        def phase(self, trial: int, name: str, detail: str = "") -> None:
            self.phases.append((trial, name))
            if trial == 1 and name == "starting":
                (Path(self.tuner.config.study_dir) / "1" / "gpu.csv").write_text("t,gpu\n")
                self.tuner.cancel.set()

    progress = CancelWhileStarting()
    config = replay_config(tmp_path, surface, trials=2, confirm={"top": 1, "repeats": 2})
    tuner = progress.tuner = Tuner(config, progress=progress)
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    study = load_existing_study(config)
    _base, cut, retry = study.get_trials()
    assert cut.state == TrialState.FAIL and cut.user_attrs["failure_class"] == "interrupted"
    assert cut.user_attrs["failure_hint"] == failures.INTERRUPTED.hint
    metas = {m.filename: m.mimetype for m in get_all_artifact_meta(cut, storage=study._storage)}
    assert metas == {"server.log": "text/plain", "gpu.csv": "text/csv"}  # what the trial had written
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == cut.params
    assert "confirmation" not in study.user_attrs  # no confirmation after an interrupted run
    assert Tuner.trials_done(study) == 1 and Tuner.trials_interrupted(study) == 1
    study = Tuner(config).run()
    rerun = study.trials[2]
    assert rerun.state == TrialState.COMPLETE and rerun.params == cut.params
    assert rerun.user_attrs["retry_of"] == 1 and len(study.trials) == 3
    assert Tuner.trials_done(study) == 2 and Tuner.trials_interrupted(study) == 1
    assert "confirmation" in study.user_attrs  # the budget reached: the winner confirmed


def test_a_trial_numbered_past_the_budget_is_given_back(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=1)
    reference = (
        Tuner(
            replay_config(
                tmp_path / "ref", surface, trials=2, references=[{"name": "hand", "flags": {"schedule-policy": "fcfs"}}]
            )
        )
        if (tmp_path / "ref").mkdir() is None
        else None
    )
    ref_study = reference.run()
    enqueue_retry(ref_study, ref_study.trials[1])
    reference.config.trials = 2
    reference._run_asked(ref_study, ref_study.ask(), gpu.GpuPool([0]), reference._artifact_store())
    [again] = ref_study.get_trials(states=(TrialState.WAITING,))
    assert again.user_attrs == {"retry_of": 1, "reference": "hand"}
    tuner = Tuner(config)
    study = tuner.run()
    plain = study.ask()
    tuner._run_asked(study, plain, gpu.GpuPool([0]), tuner._artifact_store())
    assert study.trials[1].state == TrialState.FAIL and study.trials[1].user_attrs["failure_class"] == "over_budget"
    assert not study.get_trials(states=(TrialState.WAITING,))
    enqueue_retry(study, study.trials[0])
    tuner._run_asked(study, study.ask(), gpu.GpuPool([0]), tuner._artifact_store())
    given_back = study.trials[2]
    assert given_back.state == TrialState.FAIL and given_back.user_attrs["failure_class"] == "over_budget"
    # A re-run handed over from the queue goes back to it, with what makes it a re-run (not why it was given back).
    [queued] = study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs == {"retry_of": 0, "baseline": True} and queued.system_attrs["fixed_params"] == {}
    assert Tuner.trials_done(study) == 1
    # So does a warm start's queued config, still marked as the earlier study's (the views say so).
    study.tell(study.ask(), state=TrialState.FAIL)  # the queued re-run, out of the way
    study.enqueue_trial({}, user_attrs=TrialRecord(warm_start="earlier.json").attrs())
    tuner._run_asked(study, study.ask(), gpu.GpuPool([0]), tuner._artifact_store())
    [queued] = study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs == {"warm_start": "earlier.json"}


def test_a_trial_runs_on_the_gpu_it_got_and_that_gpus_port(tmp_path, surface):
    config = replay_config(
        tmp_path,
        surface,
        trials=2,
        gpus=[1, 2],
        model={"path": "standin/qwen3-8b", "served_name": "qwen"},
        launcher={"env": {"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "A": "1"}},
    )
    tuner = Tuner(config)
    study = tuner.prepare()
    pool = gpu.GpuPool([1, 2])
    pool.acquire(1, threading.Event())  # GPU 1 busy with another slot's trial
    tuner._run_asked(study, study.ask(), pool, tuner._artifact_store())
    t = study.trials[0]
    assert t.user_attrs["gpus"] == [2] and t.user_attrs["flags"]["port"] == 31001
    assert t.user_attrs["flags"]["served-model-name"] == "qwen"
    assert pool._free == {2}  # given back
    # Both GPUs busy: the next trial waits for the first one given back.
    pool.acquire(1, threading.Event())
    threading.Timer(0.3, pool.release, ((1,),)).start()
    tuner._run_asked(study, study.ask(), pool, tuner._artifact_store())
    assert study.trials[1].user_attrs["gpus"] == [1] and study.trials[1].user_attrs["flags"]["port"] == 31000
    plan = tuner.plan(7, ServerFlags.of({"schedule-policy": "lpm"}), (2,), 31001)
    assert plan.trial_dir == tmp_path / "trials" / "r" / "7" and plan.gpus == (2,) and plan.port == 31001
    assert plan.env == {"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "A": "1"} and plan.host == "127.0.0.1"
    assert plan.startup_timeout_s == config.launcher.startup_timeout_s
    assert plan.flags.as_dict() == {
        "model-path": "standin/qwen3-8b",
        "host": "127.0.0.1",
        "port": 31001,
        "served-model-name": "qwen",
        "schedule-policy": "lpm",
    }
    assert tuner.plan(0, ServerFlags.of({}), (), 1).env["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    plain = Tuner(replay_config(tmp_path, surface))
    assert plain.plan(0, ServerFlags.of({}), (), 1).env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert "served-model-name" not in plain.plan(0, ServerFlags.of({}), (), 1).flags.as_dict()


def test_the_runner_gets_the_studys_workload_model_and_stopping_rules(tmp_path, surface):
    from tuner.bench.workload import Workload
    from tuner.trial.replay import ReplayRunner

    config = replay_config(tmp_path, surface, launcher={"stop_grace_s": 2.5}, objective={"slo": {"p99_ttft_ms": 9}})
    progress = object()
    tuner = Tuner(config, progress=progress)
    study = tuner.prepare()
    tuner.idle_mib = {0: 5.0}
    r = tuner.runner(study, None)
    assert type(r) is ReplayRunner and r.launcher is tuner.launcher
    assert r.workload is tuner.workload and r.model == "standin/qwen3-8b" and r.study == "r"
    assert r.idle_mib == {0: 5.0} and r.stop_grace_s == 2.5 and r.progress is progress and r.cancel is tuner.cancel
    assert r.early_stop is not None and r.on_launch is None and r.load_search is None
    assert r.slo == {"p99_ttft_ms": 9.0}
    other = Workload(levels=tuner.workload.levels[:1])
    again = tuner.runner(study, study.ask(), other)
    assert again.workload is other and again.early_stop is None and again.on_launch is not None
    assert (
        Tuner(
            replay_config(
                tmp_path,
                surface,
                model={"path": "standin/qwen3-8b", "served_name": "q"},
                objective={"early_stop": False},
            )
        )
        .runner(study, None)
        .model
        == "q"
    )
    assert (
        Tuner(replay_config(tmp_path, surface, objective={"early_stop": False})).runner(study, None).early_stop is None
    )
    from tuner.trial.runner import TrialRunner

    assert type(Tuner(config, launcher=ProcessLauncher(["python"])).runner(study, None)) is TrialRunner


# -- the machine checks of a real run (GPUs through a fake NVML, ports, model path), called on their own


@pytest.fixture
def nvml_gpus(monkeypatch):
    from tests.test_gpu import FakeNvml

    fake = FakeNvml(n=3).install(monkeypatch)
    yield fake
    gpu.reset()


def machine_tuner(tmp_path, surface, space_fixed=None, space_params=None, **extra) -> tuple[Preflight, object]:
    from tuner.config.space import load_space

    extra = {"model": {"path": "Qwen/Qwen3-8B"}, **extra}
    extra["launcher"] = {"kind": "process", **extra.get("launcher", {})}
    config = replay_config(tmp_path, surface, **extra)
    write_space(Path(config.space), fixed=space_fixed, params=space_params)
    tuner = Tuner(config, launcher=ProcessLauncher(["python", "-m", "sglang.launch_server"]))
    return tuner.preflight(), load_space(config.space)


def test_the_gpus_must_hold_the_fixed_flags_and_exist(tmp_path, surface, nvml_gpus):
    checks, space = machine_tuner(tmp_path, surface, space_fixed={"tp-size": 2}, gpus=[0])
    with pytest.raises(SetupError) as err:
        checks.check_gpus(space)
    assert str(err.value) == "the space's fixed flags need 2 GPUs per trial (tp x dp) but --gpus gives 1"
    checks, space = machine_tuner(tmp_path, surface, space_fixed={"tp-size": 2}, gpus=[0, 1])
    checks.check_gpus(space)
    assert checks.warnings == []
    checks, space = machine_tuner(tmp_path, surface, space_params={"tp-size": {"choices": [1, 2]}}, gpus=[1])
    checks.check_gpus(space)
    assert checks.warnings == [
        "the space allows trials needing up to 2 GPUs but --gpus gives 1: those are recorded "
        "infeasible (too_many_gpus) without launching"
    ]
    checks, space = machine_tuner(tmp_path, surface, gpus=[0, 5])
    with pytest.raises(SetupError, match="5"):
        checks.check_gpus(space)


def test_without_nvml_the_gpu_checks_say_what_is_not_checked(tmp_path, surface, monkeypatch, caplog):
    import pynvml

    from tests.test_gpu import _no_nvml_library

    gpu.reset()
    monkeypatch.setattr(pynvml, "nvmlInit", _no_nvml_library)
    try:
        checks, space = machine_tuner(tmp_path, surface, gpus=[0, 3])
        with caplog.at_level("WARNING"):
            checks.check_gpus(space)
        assert not caplog.records  # said once, as the tuner's warning, not logged by tuner.serve.gpu as well
        [said] = checks.warnings
        assert said.startswith("NVML is not available (") and said.endswith(
            "): --gpus 0,3 not checked, no GPU memory numbers, no wait for free GPUs"
        )
        assert gpu.unavailable_reason() in said
        checks, space = machine_tuner(tmp_path, surface, objective={"max_gpu_memory_fraction": 0.9})
        checks.check_gpus(space)
        assert checks.warnings[0].endswith(
            "no wait for free GPUs, and objective.max_gpu_memory_fraction cannot be checked (every trial passes it)"
        )
    finally:
        gpu.reset()


def test_a_real_run_needs_a_model_it_can_find_and_free_ports(tmp_path, surface, nvml_gpus):
    checks, space = machine_tuner(tmp_path, surface, model={"path": "no-such-model"})
    with pytest.raises(SetupError) as err:
        checks.check_machine(space)
    assert str(err.value) == "model.path 'no-such-model': no such folder, and not a hub id (org/name)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        # The slot of GPU 1 serves on port + 1: that one is taken.
        checks, space = machine_tuner(
            tmp_path, surface, gpus=[1, 2], model={"path": "Qwen/Qwen3-8B"}, launcher={"port": taken - 1}
        )
        with pytest.raises(SetupError) as err:
            checks.check_machine(space)
        assert str(err.value) == (
            f"port {taken} on 127.0.0.1 is in use or not a port: stop what holds it or pass another --port"
        )
        checks, space = machine_tuner(
            tmp_path, surface, gpus=[1], model={"path": "Qwen/Qwen3-8B"}, launcher={"port": taken - 1}
        )
        checks.check_machine(space)  # one slot: only the launcher's port
    if os.geteuid() == 0 and port_free("127.0.0.1", 1):  # the lowest port is a port (root may bind it)
        checks, space = machine_tuner(tmp_path, surface, launcher={"port": 1})
        checks.check_machine(space)
    checks, space = machine_tuner(
        tmp_path, surface, gpus=[0, 1], model={"path": "Qwen/Qwen3-8B"}, launcher={"port": 65535}
    )
    with pytest.raises(SetupError, match=r"port 65536 on 127\.0\.0\.1 is in use or not a port"):
        checks.check_machine(space)


def test_a_gpu_someone_else_holds_is_refused_unless_shared_and_waited_for_after_cleanup(tmp_path, surface, nvml_gpus):
    checks, _ = machine_tuner(tmp_path, surface, gpus=[0, 1])
    checks.check_gpus_idle(0.0)
    nvml_gpus.holders[1] = [(4242, 30000.0)]
    nvml_gpus.extra[1] = 30000.0
    with pytest.raises(SetupError) as err:
        checks.check_gpus_idle(0.0)
    assert str(err.value) == (
        "GPU 1: 30500 MiB used by pid 4242 (30000 MiB): measured beside it, a server gets what is left (a smaller KV "
        "pool, shared compute); stop it, choose other --gpus, or pass --allow-shared-gpu (gpus_shared: true) to "
        "measure anyway"
    )
    shared, _ = machine_tuner(tmp_path, surface, gpus=[0, 1], gpus_shared=True)
    shared.check_gpus_idle(0.0)
    assert shared.warnings == [
        "shared GPU (GPU 1: 30500 MiB used by pid 4242 (30000 MiB)): every trial records what else held its GPUs"
    ]

    def let_go():
        time.sleep(0.3)
        nvml_gpus.holders.clear()
        nvml_gpus.extra.clear()

    nvml_gpus.holders[0] = [(4343, 20000.0)]
    nvml_gpus.extra[0] = 20000.0
    t0 = time.monotonic()
    with pytest.raises(SetupError) as err:
        checks.check_gpus_idle(0.6)  # still held after the wait
    assert time.monotonic() - t0 >= 0.5
    assert str(err.value).startswith(
        "GPU 0: 20500 MiB used by pid 4343 (20000 MiB); GPU 1: 30500 MiB used by pid "
        "4242 (30000 MiB): measured beside it"
    )
    threading.Thread(target=let_go).start()
    t0 = time.monotonic()
    checks.check_gpus_idle(5.0)  # a server cleanup_orphans just stopped lets go of its GPU
    assert time.monotonic() - t0 < 3.0


def test_feasibility_facts_come_from_the_model_folder_and_nvml(tmp_path, surface, nvml_gpus):
    model = ROOT / "tests" / "data" / "models" / "qwen3-8b"
    checks, _ = machine_tuner(tmp_path, surface, gpus=[1], model={"path": str(model)}, launcher={"env": {"X": "1"}})
    f = checks.feasibility()
    assert f.model is not None and f.gpu_mib == 80 * 1024 and f.gpus == (1,) and f.longest_request == 176
    assert f.env["X"] == "1" and f.env.get("PATH") == os.environ.get("PATH")  # a process inherits our environment
    assert checks.warnings == []
    hub, _ = machine_tuner(tmp_path, surface, model={"path": "Qwen/Qwen3-8B"})
    assert hub.feasibility().model is None
    assert hub.warnings == [
        "model.path Qwen/Qwen3-8B: no local config.json, so only too_many_gpus is predicted "
        "before launch (memory, heads and context are checked by SGLang)"
    ]


def test_a_replay_predicts_from_the_surfaces_model_facts_and_its_recorded_gpu(tmp_path, surface, nvml_gpus):
    """A replay whose model.path has no config.json predicts from the facts the header carries (`tune record`
    copied them from config.json), on the recorded GPU's memory, not this machine's NVML (80 GiB here)."""
    from tuner.sglang.feasibility import ModelFacts

    facts = ModelFacts.from_folder(ROOT / "tests" / "data" / "models" / "qwen3-8b")
    assert facts is not None

    def recorded_facts(data: dict) -> None:
        data["header"].update(model_facts=dataclasses.asdict(facts), gpu_memory_mib=143771.0)

    checks = Tuner(replay_config(tmp_path, surface_with(tmp_path, surface, recorded_facts))).preflight()
    f = checks.feasibility()
    assert f.model == facts and f.gpu_mib == 143771.0 and checks.warnings == []
    assert Tuner(replay_config(tmp_path, surface)).preflight().feasibility().model is None  # none recorded


def test_without_nvml_no_kv_failure_is_predicted(tmp_path, surface, monkeypatch):
    import pynvml

    from tests.test_gpu import _no_nvml_library

    gpu.reset()
    monkeypatch.setattr(pynvml, "nvmlInit", _no_nvml_library)
    try:
        model = ROOT / "tests" / "data" / "models" / "qwen3-8b"
        checks, _ = machine_tuner(tmp_path, surface, model={"path": str(model)})
        assert checks.feasibility().gpu_mib is None
        assert checks.warnings == ["no GPU memory from NVML: KV-pool failures are not predicted before launch"]
    finally:
        gpu.reset()


def test_baseline_refused_without_a_detail():
    c = RunConfig.model_validate({"space": "s.yaml"})
    assert baseline_refused(c, "").startswith(
        "the baseline (trial 0: the space's fixed flags only) failed as invalid_flag: SGLang refuses a fixed flag"
    )


def test_a_real_launcher_keeps_the_model_it_was_given(tmp_path, surface):
    config = replay_config(tmp_path, surface, launcher={"kind": "process"})
    assert Tuner(config, launcher=ProcessLauncher(["python"])).config.model.path == ""
    config = replay_config(tmp_path, surface, model={"path": "stand-in Qwen3-8B"})
    assert Tuner(config).config.model.path == "stand-in Qwen3-8B"


def test_sigterm_during_a_trial_records_it_interrupted_and_restores_the_handlers(tmp_path, surface):
    import signal

    class TermWhileStarting:
        tuner: Tuner

        def phase(self, trial: int, name: str, detail: str = "") -> None:
            if trial == 1 and name == "starting":
                os.kill(os.getpid(), signal.SIGTERM)
                assert self.tuner.cancel.wait(60)  # the main thread's handler ran

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    progress = TermWhileStarting()
    config = replay_config(tmp_path, surface, trials=3)
    progress.tuner = Tuner(config, progress=progress)
    with pytest.raises(KeyboardInterrupt):
        progress.tuner.run()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    study = load_existing_study(config)
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["failure_class"] == "interrupted"


def test_a_goodput_study_replays_its_load_search_and_records_the_rate(tmp_path):
    from tuner.config.run import load_config

    run = load_config(
        ROOT / "runs" / "demo-chat.yaml",
        {"trials": 1, "storage": f"sqlite:///{db_dir(tmp_path)}/c.db", "trials_dir": str(tmp_path / "trials")},
    )
    tuner = Tuner(run)
    assert tuner.objective.kv_tokens_needed == 0  # its in-flight tokens follow the rates, not a concurrency
    assert tuner.workload_record["load_search"] == vars(run.objective.load_search)
    assert tuner.workload_record["slo"] == {"p99_ttft_ms": 2000.0, "p99_tpot_ms": 40.0}
    assert "concurrency" not in tuner.workload_record
    assert tuner.workload.slo.ttft_ms == 2000.0 and tuner.workload.slo.tpot_ms == 40.0
    study = tuner.run()
    base = study.trials[0]
    assert base.user_attrs["max_rate"] == 28.0 and base.user_attrs["goodput"] > 0
    assert base.values[0] == pytest.approx(base.user_attrs["goodput"], abs=1e-3)
    assert base.system_attrs["constraints"][:2] == [0.0, 0.0]
    assert study.user_attrs["load_search"] == vars(run.objective.load_search)
    assert base.user_attrs["workload"]["load_search"]["start_rate"] == 4.0


def chat_replay(tmp_path, name: str, trials: int, **load_search):
    from tuner.config.run import load_config

    recorded = {"start_rate": 4, "max_rate": 64, "factor": 2, "bisect_steps": 2, "level_duration_s": 15}
    return load_config(
        ROOT / "runs" / "demo-chat.yaml",
        {
            "trials": trials,
            "storage": f"sqlite:///{db_dir(tmp_path)}/{name}.db",
            "trials_dir": str(tmp_path / name),
            "objective": {
                "metrics": ["goodput"],
                "slo": {"p99_ttft_ms": 2000, "p99_tpot_ms": 40},
                "load_search": {**recorded, "min_prompts": 48, **load_search},
                "max_gpu_memory_fraction": 0.99,
            },
        },
    )


def test_a_goodput_search_starts_at_the_incumbents_rate_and_the_stopped_trials_are_never_best(tmp_path):
    """The replayed H200 chat study: the baseline and the reference search from start_rate (their whole curves);
    each sampled trial starts one grid level below the best trial's 28 req/s and stops where it breaks the SLO,
    recorded COMPLETE and infeasible with what it measured; switched off, each searches from start_rate."""
    study = Tuner(chat_replay(tmp_path, "on", 5)).run()
    base, ref, *sampled = study.trials
    assert base.user_attrs["max_rate"] == 28.0 and base.user_attrs["levels"][0]["request_rate"] == 4.0
    assert ref.user_attrs["levels"][0]["request_rate"] == 4.0 and "stopped_early" not in ref.user_attrs
    assert study.best_trial.number == 0
    for t in sampled:
        assert t.state == TrialState.COMPLETE and t.user_attrs["feasible"] is False
        assert t.user_attrs["levels"][0]["request_rate"] == 16.0 and len(t.user_attrs["levels"]) <= 2
        assert "cannot beat trial 0" in t.user_attrs["stopped_early"]
        assert any(c > 0 for c in t.system_attrs["constraints"])
        assert t.values[0] == pytest.approx(t.user_attrs["goodput"], abs=1e-3)
    on_s = sum(t.user_attrs["benchmark_s"] for t in sampled)

    off = Tuner(chat_replay(tmp_path, "off", 5, from_incumbent=False)).run()
    assert [t.params for t in off.trials[:3]] == [t.params for t in study.trials[:3]]  # the same first draw
    for t in off.trials[2:]:
        assert t.user_attrs["levels"][0]["request_rate"] == 4.0 and "stopped_early" not in t.user_attrs
    assert on_s < 0.5 * sum(t.user_attrs["benchmark_s"] for t in off.trials[2:])


def test_a_space_optuna_refuses_to_sample_fails_the_trial_and_stops_the_study(tmp_path, surface):
    config = replay_config(tmp_path, surface, trials=2, baseline=False)
    tuner = Tuner(config)
    study = tuner.prepare()
    # A parameter of another kind, added by another host after this one's check.
    study.add_trial(
        optuna.trial.create_trial(
            params={"mem-fraction-static": 0.8},
            values=[1.0],
            distributions={"mem-fraction-static": optuna.distributions.CategoricalDistribution([0.8, 0.85])},
        )
    )
    with pytest.raises(SetupError, match=r"^trial 1: Optuna refused to sample the space: "):
        tuner.run()
    failed = study.trials[1]
    assert failed.state == TrialState.FAIL and failed.user_attrs["failure_class"] == "sampling_error"
    assert failed.user_attrs["failure_detail"].startswith("ValueError: ")
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_an_interrupted_baseline_is_rerun_as_the_baseline_with_heartbeats(tmp_path, surface):
    from optuna.storages._rdb.models import TrialHeartbeatModel

    class CancelTrial0:
        tuner: Tuner

        def phase(self, trial: int, name: str, detail: str = "") -> None:
            if trial == 0 and name == "starting":
                self.tuner.cancel.set()

    progress = CancelTrial0()
    progress.tuner = Tuner(replay_config(tmp_path, surface, trials=1), progress=progress)
    with pytest.raises(KeyboardInterrupt):
        progress.tuner.run()
    study = Tuner(replay_config(tmp_path, surface, trials=1, heartbeat_s=30)).run()
    cut, rerun = study.trials
    assert cut.state == TrialState.FAIL and rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["baseline"] is True and rerun.user_attrs["retry_of"] == 0
    assert set(rerun.user_attrs["flags"]) == {"model-path", "host", "port"}
    with study._storage._backend.scoped_session() as session:  # each trial beat while it ran
        beaten = {b.trial_id for b in session.query(TrialHeartbeatModel).all()}
    assert beaten == {rerun._trial_id}


def test_a_port_taken_since_the_check_stops_a_real_trial_before_its_launch(tmp_path, surface, nvml_gpus):
    from tuner.config.space import load_space

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # A replay starts no server: the port does not matter.
        replay = Tuner(replay_config(tmp_path, surface, trials=1, launcher={"port": port}))
        assert replay.run().trials[0].state == TrialState.COMPLETE
        (tmp_path / "real").mkdir()
        config = replay_config(
            tmp_path / "real", surface, model={"path": "Qwen/Qwen3-8B"}, launcher={"kind": "process", "port": port}
        )
        tuner = Tuner(config, launcher=ProcessLauncher([sys.executable, "-c", "raise SystemExit(9)"]))
        tuner.space, tuner.feasibility = load_space(config.space), tuner.preflight().feasibility()
        study = open_study(config)
        with pytest.raises(SetupError) as err:
            tuner._run_asked(study, study.ask(), gpu.GpuPool([0]), tuner._artifact_store())
    assert str(err.value) == f"port {port} on 127.0.0.1 is in use: stop what holds it or pass --port"
    cut = study.trials[0]
    assert cut.state == TrialState.FAIL and cut.user_attrs["failure_class"] == "interrupted"
    assert study.get_trials(states=(TrialState.WAITING,))[0].user_attrs["retry_of"] == 0


def test_prepare_for_a_real_launcher_waits_for_gpus_its_cleanup_freed_and_records_their_idle_memory(
    tmp_path, surface, nvml_gpus
):
    from tuner.trial.surface import Surface

    class Restarted(ProcessLauncher):
        """The process launcher after a killed run: its cleanup found and stopped two servers of the study (the
        catalog is the recorded SGLang's, so no --help runs)."""

        studies: ClassVar[list[str]] = []  # the class is made per test: what its one launcher cleaned up

        def flag_catalog(self):
            return Surface.load(surface).flag_catalog()

        def cleanup_orphans(self, study: str) -> list[str]:
            self.studies.append(study)

            def let_go():
                nvml_gpus.holders.clear()
                nvml_gpus.extra.clear()

            threading.Timer(0.3, let_go).start()  # they let go of the GPU a moment later
            return ["pid 101", "pid 102"]

    nvml_gpus.holders[1] = [(101, 0.0)]
    nvml_gpus.extra[1] = 1000.0
    config = replay_config(tmp_path, surface, gpus=[1], model={"path": "Qwen/Qwen3-8B"}, launcher={"kind": "process"})
    launcher = Restarted(["python"])
    tuner = Tuner(config, launcher=launcher)
    tuner.prepare()
    assert launcher.studies == ["r"]
    assert "stopped servers left by an earlier run of this study: pid 101, pid 102" in tuner.warnings
    assert tuner.idle_mib == {1: 500.0}  # what the GPU holds before any launch: free means back to this
