"""A trial's record (tuner.trial.record): what the writer stores, the reader reads back, typed, on a real SQLite
study; and the studies recorded before the record existed (docs/h200-chat's H200 study) read as typed records."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_study import SEARCH, level, objective, result

from conftest import ROOT
from tuner.search.storage import set_trial_attrs
from tuner.search.study import trial_attrs
from tuner.serve.gpu import Holder
from tuner.serve.prestart import Spawned
from tuner.sglang import failures
from tuner.sglang.decode_log import DecodeGraphs
from tuner.sglang.flags import ServerFlags
from tuner.sglang.kv import KvCapacity
from tuner.sglang.startup_log import StartupPhases
from tuner.trial.record import (
    Compared,
    ConfirmationRound,
    ConfirmedTrial,
    GpuUse,
    Headline,
    PhaseSeconds,
    RecordedLevel,
    ReplayMark,
    ServerSettled,
    StudyRecord,
    TrialRecord,
    Verdict,
    baseline_record,
    best_record,
    reference_records,
)

OLD_STUDY = ROOT / "docs" / "h200-chat" / "h200-qwen3-8b-chat.db"


def _every_field_set() -> TrialRecord:
    """A record with every attribute field (and every field of its parts) set: none may be lost on the way."""
    return TrialRecord(
        baseline=False,
        reference="hand-tuned",
        warm_start="surfaces/earlier.json",
        retry_of=2,
        retry_reason="interrupted",
        worker="host:123",
        started_at="2026-01-01T10:00:00",
        ended_at="2026-01-01T10:05:00",
        host="host",
        gpus=(0, 1),
        gpus_needed=2,
        flags=ServerFlags.of({"model-path": "m", "port": 30000, "mem-fraction-static": 0.87, "enable-x": True}),
        argv=("--model-path", "m", "--port", "30000"),
        trial_dir=Path("/tmp/trials/s/3"),
        launcher={"launcher": "process", "command": "python -m sglang.launch_server"},
        launched=True,
        server="pid 123",
        failure=Verdict("oom_kv", "the pool did not fit", "lower --mem-fraction-static", "KV cache pool"),
        exit_code=1,
        feasible=False,
        limit=Verdict("kv_pool_too_small", "too small", "raise it", "max_total_num_tokens=250 < 1000"),
        stopped_early="clearly worse",
        slo_broken="p99_ttft_ms 150 > 100",
        times=PhaseSeconds(10.5, 20.25, 1.5, 33.0, 0.75),
        startup=StartupPhases(14.0, 31.0, 0.11, 4.0, 10.2, 1.0, "fired up"),
        kernels_built=7,
        compile_cache_warm=False,
        prestarted_s=41.5,
        prestart_imports_s=21.25,
        spawned=(
            Spawned(1, "sglang.srt.managers.scheduler", True, 26.3, 97.1),
            Spawned(2, "sglang.srt.managers.detokenizer_manager", False, why="its stand-by was still importing"),
        ),
        warmup_s=12.5,
        warmup_bursts=3,
        warmup_stable=True,
        gpu=GpuUse(80.0, 79.0, 70.5, 60.0, 100.0, 0.8, 55.5, 300.0, ({"gpu": 0, "peak_used_mib": 80.0},)),
        gpu_shared=(Holder(0, 42, "python", 1000.0), Holder(1, 43, "", None)),
        kv=KvCapacity(5000, 16),
        headline=Headline(2000.5, 24.1, 4000.1, 40.1, 80.1, 8.1, 12.1, 7.1, 490.1, 48, 2, 1),
        goodput=3.988,
        max_rate=4.0,
        levels=(
            RecordedLevel(4, 4.0, 0, 100.5, 1.5, 1.25, 30.5, 60.5, 8.5, 9.5, 0, True, 8, 5),
            RecordedLevel(8, 8.0, 1, 200.5, 2.5, 0.5, 90.5, 160.5, 18.5, 19.5, 1, False),
        ),
        settled=ServerSettled("0.5.17", 0.8, 8192, 64, "fa3"),
        workload={"dataset": "random", "input_len": 128, "output_len": 64},
        replay=ReplayMark("s.json", (4, 7), True, (16.0,)),
        decode_graphs=DecodeGraphs(40, 12, "2026-01-01 10:01:00", 65, 80, 64),
        defaults_outside_space=("max-running-requests 4096 (choices 64..512)",),
        unrecorded_baseline="s.json recorded no trial of SGLang's defaults",
    )


def _stored(tmp_path: Path, *parts: dict, values: float = 1.0) -> optuna.trial.FrozenTrial:
    """The attributes written the way a study writes them, into a SQLite file, and read back from a fresh load."""
    url = f"sqlite:///{tmp_path}/record.db"
    study = optuna.create_study(storage=url, study_name="record")
    trial = study.ask()
    for attrs in parts:
        set_trial_attrs(study, trial, attrs)
    study.tell(trial, values)
    return optuna.load_study(study_name="record", storage=url).trials[0]


def _without_optuna_fields(r: TrialRecord) -> TrialRecord:
    return dataclasses.replace(r, number=None, state=None, values=None, params={})


def test_every_field_survives_writer_storage_reader(tmp_path):
    written = _every_field_set()
    unset = [f.name for f in dataclasses.fields(written) if getattr(written, f.name) is None]
    assert unset == ["number", "state", "values"]  # every attribute field is exercised
    for part in ("times", "gpu", "headline", "settled", "kv"):
        assert None not in vars(getattr(written, part)).values(), part
    stored = _stored(tmp_path, written.attrs())
    read = TrialRecord.of(stored)
    assert (read.number, read.state, read.values) == (0, TrialState.COMPLETE, (1.0,))
    assert _without_optuna_fields(read) == written
    assert read.attrs() == stored.user_attrs  # and writing what was read stores the same attributes
    assert isinstance(read.flags, ServerFlags) and read.flags.as_dict()["mem-fraction-static"] == 0.87
    assert read.levels is not None and read.levels[1].slo_pass is False and read.levels[0].p99_ttft_ms == 60.5


def test_a_record_written_in_parts_reads_as_one(tmp_path):
    """Queued, planned, measured: each part stores only what it knows, and the reader sees them all."""
    measured = TrialRecord.measured(
        result([level(4), level(16)], kv=KvCapacity(5000, 16), server_info={"version": "0.5.17"}),
        level(16),
        workload={"input_len": 128},
    )
    planned = TrialRecord(baseline=True, host="h", gpus=(0,), flags=ServerFlags.of({"port": 1}), trial_dir=Path("d"))
    stored = _stored(tmp_path, TrialRecord(baseline=True).attrs(), planned.attrs(), measured.attrs())
    read = TrialRecord.of(stored)
    assert read.is_baseline and read.host == "h" and read.gpus == (0,) and read.trial_dir == Path("d")
    assert read.failure_class == "none" and not read.failed and read.role == "baseline"
    assert read.kv == KvCapacity(5000, 16) and read.settled.version == "0.5.17"
    assert [lv.concurrency for lv in read.measured_levels] == [4, 16]
    assert read.headline.output_throughput == measured.headline.output_throughput
    assert read.workload == {"input_len": 128} and read.replay is None


def test_what_the_study_writes_reads_back_equal(tmp_path):
    """trial_attrs (the study's writer) through storage and the reader: the same record, field by field."""
    r = result(
        [level(4, request_rate=4.0), level(8, request_rate=8.0)],
        failures.OOM_KV,
        exit_code=137,
        detail="KV cache pool is too small",
        slo_pass=(True, False),
        gpu_shared=(Holder(0, 1, "x", 12.34),),
    )
    attrs = trial_attrs(r, objective(("goodput",), slo={"p99_ttft_ms": 100}, search=SEARCH), {"input_len": 64})
    read = TrialRecord.of(_stored(tmp_path, attrs))
    assert read.attrs() == attrs
    assert read.failure == Verdict.of(failures.OOM_KV, "KV cache pool is too small") and read.exit_code == 137
    assert read.goodput == 0.0 and read.max_rate == 0.0  # failed: nothing held the SLO
    assert read.gpu_shared == (Holder(0, 1, "x", 12.3),)
    assert [lv.slo_pass for lv in read.measured_levels] == [True, False]


def test_absent_keys_read_as_not_recorded():
    empty = TrialRecord.from_attrs({})
    assert empty == TrialRecord() and empty.attrs() == {}
    assert empty.failure_class is None and empty.flag_values == {} and empty.measured_levels == ()
    assert empty.gpu == GpuUse() and empty.kv == KvCapacity() and not empty.is_feasible and empty.role == "top"
    assert StudyRecord.of(optuna.create_study()) == StudyRecord()


def test_the_study_record_survives_writer_storage_reader(tmp_path):
    written = StudyRecord(
        metrics=("goodput",),
        constraint_names=("launch_ok", "kv_capacity", "slo:p99_ttft_ms"),
        at_concurrency=64,
        slo={"p99_ttft_ms": 100.0},
        load_search={"start_rate": 4.0, "max_rate": 64.0},
        space="search_spaces/x.yaml",
        run_config={"model": {"path": "m"}, "launcher": {"env": {"A": "1"}}},
        confirmations={
            3: ConfirmedTrial("goodput", (4.0, 4.5), 3.9, "top", 4.25, 0.35, 3.1, None),
            0: ConfirmedTrial("goodput", (), float("-inf"), "baseline", None, None, None, "oom_kv"),
        },
        confirmation=ConfirmationRound(
            2, "goodput", 12, (Compared("best (trial 3)", "x", "goodput", 1.0, 0.5, 1.5, 3.0, False, "better"),)
        ),
    )
    assert None not in vars(written).values()  # every field is exercised
    url = f"sqlite:///{tmp_path}/study.db"
    written.write(optuna.create_study(storage=url, study_name="s"))
    stored = optuna.load_study(study_name="s", storage=url)
    read = StudyRecord.of(stored)
    assert read == written and read.attrs() == stored.user_attrs
    assert list(read.confirmations or {}) == [3, 0]  # best bound first, as written
    assert read.confirmed(3) == written.confirmed(3) and read.comparisons[0].statement == "better"


@pytest.fixture(scope="module")
def old_study(tmp_path_factory) -> optuna.Study:
    """The H200 chat study (recorded before the typed record existed), on a copy: reading must not write."""
    copy = tmp_path_factory.mktemp("old") / OLD_STUDY.name
    shutil.copy(OLD_STUDY, copy)
    url = f"sqlite:///{copy}"
    [summary] = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def test_the_old_h200_study_reads_as_typed_records(old_study):
    trials = old_study.get_trials(deepcopy=False)
    assert len(trials) == 13
    for t in trials:
        r = TrialRecord.of(t)
        # Every stored key is read, and written back as it was stored.
        assert r.attrs() == t.user_attrs, t.number
        if t.state == TrialState.WAITING:
            assert r.flags is None and r.failure is None
            continue
        if t.state == TrialState.FAIL:
            assert r.failure_class == "interrupted" or r.failure is None, t.number
            continue
        assert isinstance(r.flags, ServerFlags) and r.flags.as_dict()["port"] == 30000
        assert r.failure_class is not None and r.times.startup_s is not None and r.trial_dir is not None
        assert isinstance(r.kv, KvCapacity)
        assert r.levels is not None
        if not r.failed:
            assert r.levels and all(isinstance(lv, RecordedLevel) for lv in r.levels)
            assert all(lv.slo_pass is not None and lv.request_rate is not None for lv in r.levels)
            assert isinstance(r.kv.max_total_num_tokens, int) and isinstance(r.kv.max_running_requests, int)
            assert r.goodput is not None and r.workload and "load_search" in r.workload
    study = StudyRecord.of(old_study)
    assert study.attrs() == old_study.user_attrs
    assert study.metrics == ("goodput",) and study.is_load_search and study.slo_limits
    assert study.run["model"]["path"]


def test_the_old_h200_study_has_a_best_a_baseline_and_its_references(old_study):
    base, best = baseline_record(old_study), best_record(old_study)
    assert base is not None and base.number == 0 and base.is_baseline and base.flags is not None
    assert best.is_feasible and best.values and best.goodput == pytest.approx(best.values[0], abs=1e-3)
    refs = reference_records(old_study)
    assert refs and all(r.reference == name and r.role == f"reference {name}" for name, r in refs.items())
