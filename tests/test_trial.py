"""One trial in-process (tuner.trial.runner): TrialRunner against the stand-in launched by the product's
ProcessLauncher, the Watcher against real /health endpoints, and a trial's record (trial.json, benchmark.csv, gpu.csv).

In-process on purpose: mutation testing (benchmarks/MUTATION.md) only sees code the pytest process runs, and a
trial here takes under a second (tiny workloads, the stand-in's fast start).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import FAST_ENV, STANDIN, free_port, servers_of
from tests.test_gpu import IDLE_MIB, TOTAL_MIB, FakeNvml, no_nvml  # noqa: F401 - no_nvml is a fixture
from tuner.bench.client import BenchmarkResult
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import Level, LoadSearch, Workload
from tuner.serve import gpu
from tuner.serve.launcher import LaunchSpec, Server
from tuner.serve.process import ProcessLauncher
from tuner.serve.readiness import wait_ready
from tuner.sglang import failures
from tuner.sglang.flags import ServerFlags
from tuner.trial import runner as trial
from tuner.trial.runner import (
    Cancelled,
    PhaseTimes,
    Replayed,
    TrialPlan,
    TrialResult,
    TrialRunner,
    Watcher,
    write_artifacts,
)

MODEL = "standin/qwen3-8b"
NUMBER = 3  # not 0: a record that drops the trial's number shows
LOG_LINE = re.compile(r"max_total_num_tokens=(\d+),.*?max_running_requests=(\d+)")


class Recorder:
    """A Progress that keeps every phase and startup tick it is given."""

    def __init__(self, on_phase=None):
        self.phases: list[tuple[int, str, str]] = []
        self.ticks: list[tuple[int, float, Path]] = []
        self.on_phase = on_phase

    def phase(self, trial: int, name: str, detail: str = "") -> None:
        self.phases.append((trial, name, detail))
        if self.on_phase:
            self.on_phase(name, detail)

    def tick(self, trial: int, elapsed: float, log_path: Path) -> None:
        self.ticks.append((trial, elapsed, log_path))

    def names(self) -> list[str]:
        return [name for _, name, _ in self.phases]


def levels(*spec: tuple[int, int]) -> tuple[Level, ...]:
    """(concurrency, num_prompts) levels of 16 input and 4 output tokens."""
    return tuple(Level(c, 16, 4, n) for c, n in spec)


def runner(
    study: str, *, faults: str = "", env: dict | None = None, workload: Workload | None = None, **kwargs
) -> TrialRunner:
    launcher = ProcessLauncher(
        [sys.executable, str(STANDIN)],
        {**FAST_ENV, "SGLANG_STANDIN_STARTUP_S": "0.2", "SGLANG_STANDIN_FAULTS": faults, **(env or {})},
    )
    workload = workload or Workload(levels=levels((1, 2), (2, 2)), warmup_requests=0, request_timeout_s=10)
    return TrialRunner(launcher, workload, MODEL, study, **{"stop_grace_s": 5, **kwargs})


def plan(
    tmp_path: Path, *, gpus: tuple[int, ...] = (), startup_timeout_s: float = 20, flags: dict | None = None
) -> TrialPlan:
    port = free_port()
    server_flags = ServerFlags.of({"model-path": MODEL, "host": "127.0.0.1", "port": port, **(flags or {})})
    return TrialPlan(
        NUMBER, server_flags, gpus, "127.0.0.1", port, tmp_path / "trials" / str(NUMBER), startup_timeout_s
    )


def record_of(p: TrialPlan) -> dict:
    return json.loads((p.trial_dir / "trial.json").read_text())


# -- a trial that runs


def test_a_trial_starts_measures_stops_its_server_and_records_it(tmp_path, unique_study):
    progress, launched = Recorder(), []

    def on_launch(server):
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().decode().split("\0")
        launched.append((server, set(environ)))

    p = plan(tmp_path)
    result = runner(unique_study, progress=progress, on_launch=on_launch).run(p)

    assert result.ok and result.failure is None and result.failure_detail == ""
    [(server, environ)] = launched
    assert server.exit_code() == result.exit_code == 0  # stopped by SIGTERM, and reaped
    # Marked so that a later run finds what a killed tuner left behind, and tells whose it was.
    assert {f"SGLANG_TUNER_STUDY={unique_study}", f"SGLANG_TUNER_TRIAL={NUMBER}"} <= environ
    assert servers_of(unique_study) == []
    assert progress.phases == [
        (NUMBER, "launching", ""),
        (NUMBER, "starting", "timeout 20 s"),
        (NUMBER, "benchmarking", ""),
        (NUMBER, "benchmarking", f"c=1: {result.levels[0].output_throughput:.0f} tok/s"),
        (NUMBER, "benchmarking", f"c=2: {result.levels[1].output_throughput:.0f} tok/s"),
        (NUMBER, "stopping", ""),
    ]
    log_path = p.trial_dir / "server.log"
    assert progress.ticks and all(t == NUMBER and lp == log_path for t, _, lp in progress.ticks)
    elapsed = [e for _, e, _ in progress.ticks]
    assert elapsed == sorted(elapsed) and 0 <= elapsed[0] < elapsed[-1] < result.times.startup_s

    assert [(lv.concurrency, lv.completed) for lv in result.levels] == [(1, 2), (2, 2)]
    assert result.levels == result.benchmark.levels and result.benchmark.stopped_early is None
    # SGLang's resolved arguments, and the KV pool from its startup line.
    assert result.server_info["port"] == p.port and result.server_info["model_path"] == MODEL
    tokens, running = LOG_LINE.findall(log_path.read_text())[-1]
    assert (result.kv.max_total_num_tokens, result.kv.max_running_requests) == (int(tokens), int(running))
    assert not result.gpu_busy_before and result.gpu_shared == () and result.replayed is None

    t = result.times
    assert t.wait_gpu_s >= 0 and t.launch_s > 0 and t.startup_s >= 0.2 and t.benchmark_s > 0 and t.stop_s > 0
    assert t.wait_gpu_s + t.launch_s + t.startup_s + t.benchmark_s + t.stop_s <= t.total_s < 30
    assert t.overhead_s == pytest.approx(t.total_s - t.startup_s - t.benchmark_s)

    record = record_of(p)
    assert record["trial"] == NUMBER and record["argv"] == p.flags.argv() and record["gpus"] == []
    assert record["failure_class"] is None and record["failure_detail"] == "" and record["exit_code"] == 0
    assert record["times"] == {**vars(t), "overhead_s": t.overhead_s}
    assert record["stopped_early"] is None and record["slo_broken"] is None and record["gpu"] == {}
    assert [lv["concurrency"] for lv in record["levels"]] == [1, 2]
    assert record["levels"][0]["output_throughput"] == result.levels[0].output_throughput
    assert record["server_info"]["port"] == p.port
    assert record["kv_capacity"] == {"max_total_num_tokens": int(tokens), "max_running_requests": int(running)}
    assert record["gpu_shared"] == [] and "replay" not in record
    with open(p.trial_dir / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["concurrency"] for r in rows] == ["1", "2"]
    assert not (p.trial_dir / "gpu.csv").exists()  # no NVML here: no samples, no file


def test_early_stopping_ends_the_benchmark_where_the_rule_says(tmp_path, unique_study):
    seen = []

    def stop_after_first(level: LevelResult) -> str | None:
        seen.append(level.concurrency)
        return "clearly worse"

    p = plan(tmp_path)
    result = runner(unique_study, early_stop=stop_after_first).run(p)
    assert result.ok and seen == [1] and [lv.concurrency for lv in result.levels] == [1]
    assert result.benchmark.stopped_early == "clearly worse" and record_of(p)["stopped_early"] == "clearly worse"


def test_a_goodput_trial_searches_rates_on_its_server_and_keeps_the_curve_when_it_dies(tmp_path, unique_study):
    # The stand-in dies after 5 completed requests: the first rate (4 requests) holds, the second kills it.
    progress = Recorder()
    search = LoadSearch(start_rate=4, max_rate=8, factor=2, bisect_steps=0, level_duration_s=0.25, min_prompts=4)
    workload = Workload(levels=levels((1, 4)), warmup_requests=0, request_timeout_s=10)
    p = plan(tmp_path)
    result = runner(
        unique_study,
        faults="die_under_load:",
        workload=workload,
        progress=progress,
        load_search=search,
        slo={"p99_ttft_ms": 60_000},
    ).run(p)

    assert result.failure is failures.DIED and result.failure_detail == "server exited with status 1"
    [lv] = result.levels
    assert (lv.request_rate, lv.completed) == (4, 4) and result.benchmark.slo_pass == (True,)
    details = [d for _, name, d in progress.phases if name == "benchmarking" and d]
    assert details == [f"4 req/s: p99 TTFT {lv.p99_ttft_ms:.0f} ms, p99 TPOT {lv.p99_tpot_ms:.1f} ms"]
    assert [r["request_rate"] for r in record_of(p)["levels"]] == [4]


def test_a_goodput_trial_records_where_the_slo_broke(tmp_path, unique_study):
    search = LoadSearch(start_rate=4, max_rate=8, factor=2, bisect_steps=0, level_duration_s=0.25, min_prompts=2)
    workload = Workload(levels=levels((1, 2)), warmup_requests=0, request_timeout_s=10)
    p = plan(tmp_path)
    result = runner(unique_study, workload=workload, load_search=search, slo={"p99_ttft_ms": 0.001}).run(p)
    assert result.ok and result.benchmark.slo_pass == (False,)
    assert result.benchmark.slo_broken.startswith("SLO broken at 4 req/s: p99_ttft_ms")
    record = record_of(p)
    assert record["slo_broken"] == result.benchmark.slo_broken and record["levels"][0]["slo_pass"] is False


@pytest.mark.usefixtures("no_nvml")
def test_without_nvml_a_trial_on_a_gpu_neither_waits_nor_says_so_itself(tmp_path, unique_study, caplog):
    caplog.set_level(logging.WARNING, logger="tuner.serve.gpu")
    progress = Recorder()
    result = runner(unique_study, progress=progress).run(plan(tmp_path, gpus=(0,)))
    assert result.ok and "waiting for GPU" not in progress.names()
    assert not caplog.records  # the Tuner says it once, as one of its warnings


# -- trials that fail, each with its class


def test_a_server_that_dies_at_startup_is_classified_and_never_benchmarked(tmp_path, unique_study):
    progress = Recorder()
    p = plan(tmp_path)
    result = runner(unique_study, faults="segfault:", progress=progress).run(p)
    assert result.failure is failures.SEGFAULT and result.exit_code == 139
    assert result.failure_detail == "server exited with status 139 during startup"
    assert result.benchmark is None and result.levels == () and "benchmarking" not in progress.names()
    assert progress.names()[-1] == "stopping"
    assert result.times.benchmark_s == 0 and 0 < result.times.startup_s < 30
    record = record_of(p)
    assert record["failure_class"] == "segfault" and record["exit_code"] == 139
    assert record["levels"] == [] and record["stopped_early"] is None and record["slo_broken"] is None
    assert record["server_info"] == {} and record["kv_capacity"] == {}
    assert not (p.trial_dir / "benchmark.csv").exists()


def test_a_server_that_never_gets_healthy_ends_at_its_startup_timeout(tmp_path, unique_study):
    progress = Recorder()
    p = plan(tmp_path, startup_timeout_s=1)
    result = runner(unique_study, faults="hang:", progress=progress).run(p)
    assert result.failure is failures.STARTUP_TIMEOUT and result.failure_detail == "server not healthy after 1 s"
    assert (NUMBER, "starting", "timeout 1 s") in progress.phases
    assert 1 <= result.times.startup_s < 5 and servers_of(unique_study) == []


def test_levels_measured_before_the_server_died_are_kept_with_its_class(tmp_path, unique_study):
    # Dies after 5 completed requests: c=1 completes its 4, c=2 is cut short.
    p = plan(tmp_path)
    workload = Workload(levels=levels((1, 4), (2, 8)), warmup_requests=0, request_timeout_s=10)
    result = runner(unique_study, faults="die_under_load:", workload=workload).run(p)
    assert result.failure is failures.DIED and result.failure_detail == "server exited with status 1"
    assert result.exit_code == 1
    assert [(lv.concurrency, lv.completed) for lv in result.levels] == [(1, 4)]
    record = record_of(p)
    assert record["failure_class"] == "died_during_benchmark" and [lv["concurrency"] for lv in record["levels"]] == [1]
    with open(p.trial_dir / "benchmark.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_a_level_over_its_time_budget_is_a_benchmark_timeout(tmp_path, unique_study, monkeypatch):
    # The stand-in stops answering (streams stall) after 5 requests; /health is watched too slowly to notice.
    # A level's budget is 4 requests x 10 s plus its slack: a slack of -39.5 s leaves it 0.5 s.
    monkeypatch.setattr(trial, "HEALTH_EVERY_S", 30.0)
    monkeypatch.setattr("tuner.bench.client.LEVEL_SLACK_S", -39.5)
    workload = Workload(levels=levels((1, 4), (1, 4)), warmup_requests=0, request_timeout_s=10)
    p = plan(tmp_path)
    result = runner(unique_study, faults="unhealthy:", workload=workload).run(p)
    assert result.failure is failures.BENCH_TIMEOUT
    assert result.failure_detail.startswith("level did not finish within its budget of")
    assert [lv.concurrency for lv in result.levels] == [1]


def test_a_server_frozen_under_load_is_unhealthy_and_killed_after_its_grace(tmp_path, unique_study, monkeypatch):
    """A hung server (here: SIGSTOP, so it logs nothing) answers no /health: the watcher's count alone says so;
    it ignores SIGTERM too, so it is killed once its stop grace is over."""
    monkeypatch.setattr(trial, "HEALTH_EVERY_S", 0.05)
    launched = []

    def freeze_when_benchmarking(name, detail):
        if (name, detail) == ("benchmarking", ""):
            os.kill(launched[0].proc.pid, signal.SIGSTOP)

    # No cache flush before the level: its POST is not watched and would wait out its own 10 s timeout.
    workload = Workload(levels=levels((1, 4)), warmup_requests=0, flush_cache=False, request_timeout_s=10)
    result = runner(
        unique_study,
        workload=workload,
        progress=Recorder(on_phase=freeze_when_benchmarking),
        on_launch=launched.append,
        stop_grace_s=0.3,
    ).run(plan(tmp_path))
    assert result.failure is failures.UNHEALTHY
    assert result.failure_detail == f"/health failed {trial.UNHEALTHY_AFTER} times in a row"
    assert result.exit_code == 137 and servers_of(unique_study) == []


def test_a_live_server_that_refuses_every_request_is_recorded_not_raised(tmp_path, unique_study):
    # A KV pool of 40 tokens caps a request at 39: SGLang answers 400 to each 64-token prompt, and stays up.
    workload = Workload(levels=(Level(1, 64, 4, 2),), warmup_requests=1, request_timeout_s=10)
    p = plan(tmp_path, flags={"max-total-tokens": 40})
    result = runner(unique_study, workload=workload).run(p)
    assert result.failure is failures.REQUESTS_FAILED and result.exit_code == 0
    assert "all 1 warm-up requests failed: HTTP 400" in result.failure_detail
    assert "longer than the model's context length" in result.failure_detail
    assert result.levels == () and record_of(p)["failure_class"] == "requests_failed"


# -- stopping: the server goes in every path out


def test_cancelling_during_startup_stops_the_server_and_raises(tmp_path, unique_study):
    cancel = threading.Event()
    progress, launched = Recorder(), []
    progress.tick = lambda *a: cancel.set()  # the tuner is stopped while the server starts
    p = plan(tmp_path)
    with pytest.raises(Cancelled):
        runner(unique_study, progress=progress, cancel=cancel, on_launch=launched.append).run(p)
    assert launched[0].exit_code() is not None and servers_of(unique_study) == []
    assert progress.names() == ["launching", "starting", "stopping"]
    assert not (p.trial_dir / "trial.json").exists()  # the study records it as interrupted


def test_cancelling_during_the_benchmark_stops_the_server_and_raises(tmp_path, unique_study):
    cancel = threading.Event()
    progress, launched = Recorder(on_phase=lambda name, detail: name == "benchmarking" and cancel.set()), []
    workload = Workload(levels=(Level(1, 16, 64, 4),), warmup_requests=0, request_timeout_s=10)
    with pytest.raises(Cancelled):  # 64 tokens at the stand-in's real speed: seconds, cut at once
        runner(
            unique_study,
            env={"SGLANG_STANDIN_SPEED": "1"},
            workload=workload,
            progress=progress,
            cancel=cancel,
            on_launch=launched.append,
        ).run(plan(tmp_path))
    assert launched[0].exit_code() is not None and servers_of(unique_study) == []
    assert progress.names()[-1] == "stopping"


# -- the GPU at launch (NVML faked at pynvml's functions, as in test_gpu)


@pytest.mark.parametrize("extra_mib, busy", [(0.0, False), (1024.0, False), (1024.5, True)])
def test_memory_in_use_at_launch_beyond_idle_and_slack_marks_the_gpu_busy(
    monkeypatch, tmp_path, unique_study, extra_mib, busy
):
    """What another process takes between our wait for a free GPU and the launch: more than FREE_SLACK_MIB above
    the GPU's idle memory is someone else's (SGLang 0.5.17 then words its failure like a too-low fraction)."""
    fake = FakeNvml(n=1).install(monkeypatch)
    real_wait = gpu.wait_until_free
    waited = []

    def wait_then_someone_takes_memory(gpus, idle_mib):
        waited.append((gpus, dict(idle_mib)))
        real_wait(gpus, idle_mib, timeout_s=1)
        fake.extra[0] = extra_mib

    monkeypatch.setattr(gpu, "wait_until_free", wait_then_someone_takes_memory)
    progress = Recorder()
    p = plan(tmp_path, gpus=(0,))
    p.trial_dir.mkdir(parents=True)  # a re-run of an interrupted trial finds its folder
    try:
        # The server then fails for want of KV cache memory: the memory at launch says whose fault it was.
        result = runner(unique_study, faults="oom_kv_startup:", progress=progress, idle_mib={0: IDLE_MIB}).run(p)
    finally:
        gpu.reset()
    assert waited == [((0,), {0: IDLE_MIB})] and progress.names()[0] == "waiting for GPU"
    assert result.gpu_busy_before is busy and result.gpu_shared == ()
    assert result.failure is (failures.GPU_BUSY if busy else failures.OOM_KV)


def test_idle_memory_unknown_for_a_gpu_counts_as_zero(monkeypatch, tmp_path, unique_study):
    fake = FakeNvml(n=1).install(monkeypatch)
    monkeypatch.setattr(gpu, "wait_until_free", lambda gpus, idle: fake.extra.update({0: 1024.5 - IDLE_MIB}))
    try:
        result = runner(unique_study).run(plan(tmp_path, gpus=(0,)))
    finally:
        gpu.reset()
    assert result.gpu_busy_before  # 1024.5 MiB used > 0 + 1024 MiB of slack


def test_a_process_on_the_gpu_at_launch_is_recorded_and_the_gpu_sampled(monkeypatch, tmp_path, unique_study):
    fake = FakeNvml(n=1, study=unique_study).install(monkeypatch)
    fake.holders[0] = [(os.getpid(), 300.0)]  # someone else's process, holding little memory
    # One sample from the sampler's thread at launch; the rest are the trial's own, at its phase changes.
    real_sampler = gpu.GpuSampler
    monkeypatch.setattr(gpu, "GpuSampler", lambda gpus: real_sampler(gpus, interval_s=60))
    p = plan(tmp_path, gpus=(0,), flags={"mem-fraction-static": 0.8})
    try:
        result = runner(unique_study, idle_mib={0: IDLE_MIB}).run(p)
    finally:
        gpu.reset()
    assert result.gpu_busy_before and result.ok
    [holder] = result.gpu_shared
    assert (holder.gpu, holder.pid, holder.mib) == (0, os.getpid(), 300.0)
    record = record_of(p)
    assert record["gpu_shared"] == [holder.record()]
    assert record["gpu"]["gpu_used_mib_after_startup"] == pytest.approx(0.8 * TOTAL_MIB, abs=0.1)
    with open(p.trial_dir / "gpu.csv") as f:
        rows = list(csv.DictReader(f))
    # The launch sample, the sample once ready (still "startup": the server's loaded footprint), one benchmark.
    assert [r["phase"] for r in rows] == ["startup", "startup", "benchmark"]
    assert float(rows[1]["used_mib"]) == pytest.approx(0.8 * TOTAL_MIB, abs=0.1)


# -- the watcher


class Polls:
    """The watcher's /health polls as each one ends (True: answered 200 in time), through trial.healthy. The
    watcher polls one at a time and settles a poll before the next one starts: once n + 1 have ended, it has
    counted the first n."""

    def __init__(self, monkeypatch):
        self.results: list[bool] = []
        self._cond = threading.Condition()
        real = trial.healthy

        def counted(*args, **kwargs):
            ok = real(*args, **kwargs)
            with self._cond:
                self.results.append(ok)
                self._cond.notify_all()
            return ok

        monkeypatch.setattr(trial, "healthy", counted)

    def wait_for(self, n: int, timeout: float = 60) -> list[bool]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.results) >= n, timeout), f"{n} polls: {self.results}"
            return list(self.results)


def test_the_watcher_says_why_the_benchmark_must_stop(tmp_path, unique_study, monkeypatch):
    # A poll waits 2 x 0.25 s for its answer: a loaded machine may delay the stand-in's, not by that much 3 times.
    monkeypatch.setattr(trial, "HEALTH_EVERY_S", 0.25)
    polls = Polls(monkeypatch)
    p = plan(tmp_path)
    launcher = runner(unique_study).launcher
    server = launcher.launch(LaunchSpec(p.flags, {}, tmp_path / "server.log", p.host, p.port, (), unique_study, 0))
    try:
        wait_ready(server, 60)
        cancel = threading.Event()
        with Watcher(server, cancel) as watcher:
            polls.wait_for(trial.UNHEALTHY_AFTER + 1)
            assert watcher.reason() is None and not watcher.unhealthy
            cancel.set()
            assert watcher.reason() == "interrupted"
            cancel.clear()
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(30)
            assert watcher.reason() == "server exited with status 137"
            # /health fails now, but the server's exit is the reason, not its health.
            dead = len(polls.results) + 1  # the poll under way may have had its answer before the kill
            assert polls.wait_for(dead + trial.UNHEALTHY_AFTER + 1)[dead:] == [False] * (trial.UNHEALTHY_AFTER + 1)
            assert not watcher.unhealthy
            cancel.set()
            assert watcher.reason() == "interrupted"  # stopping the tuner comes first
    finally:
        server.stop(5)


class Running(Server):
    """A server that is up: what the watcher needs of one is its /health and its exit code."""

    def exit_code(self) -> int | None:
        return None

    def stop(self, grace_s: float = 10.0) -> int | None:
        return None


def health_server(tmp_path: Path, answer) -> tuple[ThreadingHTTPServer, LaunchSpec]:
    """A /health endpoint answering each GET with ``answer()``'s status, and a spec pointing at it."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answer())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    p = plan(tmp_path)
    return httpd, LaunchSpec(p.flags, {}, tmp_path / "server.log", "127.0.0.1", httpd.server_address[1], (), "t", 0)


def test_health_counts_as_failed_only_three_polls_in_a_row(tmp_path, monkeypatch):
    # Each scripted answer must come within the poll's 2 x 0.25 s, or it counts as a failure: margin for a loaded
    # machine, where a few tens of ms would do on an idle one.
    monkeypatch.setattr(trial, "HEALTH_EVERY_S", 0.25)
    script = [503, 503, 200, 503, 503, 200, 503, 503, 503]
    seen: list[bool] = []  # watcher.unhealthy as each poll arrives: the verdict on the polls before it
    enough = threading.Event()
    watcher: Watcher | None = None

    def answer() -> int:
        seen.append(watcher.unhealthy)
        if len(seen) >= len(script) + 2:
            enough.set()
        return script[len(seen) - 1] if len(seen) <= len(script) else 200

    httpd, spec = health_server(tmp_path, answer)
    try:
        watcher = Watcher(Running(spec), threading.Event())
        with watcher:
            assert enough.wait(60), seen
        assert seen[: len(script) + 1] == [False] * len(script) + [True]
        assert watcher.reason() == "/health failed 3 times in a row"
        polls = len(seen)
        time.sleep(0.2)
        assert len(seen) == polls  # no polling once the benchmark is over
    finally:
        httpd.shutdown()


def test_a_slow_health_answer_within_twice_the_poll_interval_is_healthy(tmp_path, monkeypatch):
    """A loaded server may answer /health late: up to 2 x HEALTH_EVERY_S (here 1 s) still counts as an answer.
    Each answer here takes 0.6 s, longer than the interval, and 0.4 s inside the limit for this machine's own load."""
    monkeypatch.setattr(trial, "HEALTH_EVERY_S", 0.5)
    polls = Polls(monkeypatch)

    def answer() -> int:
        time.sleep(0.6)
        return 200

    httpd, spec = health_server(tmp_path, answer)
    try:
        with Watcher(Running(spec), threading.Event()) as watcher:
            assert polls.wait_for(trial.UNHEALTHY_AFTER) == [True] * trial.UNHEALTHY_AFTER
            assert not watcher.unhealthy
    finally:
        httpd.shutdown()


# -- the record


def test_overhead_is_what_the_tuner_itself_cost():
    assert PhaseTimes(startup_s=3, benchmark_s=5, total_s=10).overhead_s == 2
    assert PhaseTimes(startup_s=3, benchmark_s=5, total_s=7.5).overhead_s == 0.0  # clock noise: never negative


def test_a_replayed_result_says_so_with_its_sources_and_gpu_numbers():
    plain = Replayed("surfaces/s.json", (4, 7), False, None, 0.0)
    assert plain.record() == {
        "replayed": True,
        "modelled": False,
        "replay_surface": "surfaces/s.json",
        "replay_of": [4, 7],
    }
    full = Replayed("surfaces/s.json", (4,), True, 70_000.36, 81_559.06, (3.0, 5.5))
    assert full.record() == {
        "replayed": True,
        "modelled": True,
        "replay_surface": "surfaces/s.json",
        "replay_of": [4],
        "modelled_rates": [3.0, 5.5],
        "gpu_peak_used_mib": 70_000.4,
        "gpu_total_mib": 81_559.1,
        "gpu_peak_used_fraction": 0.8583,
    }


def test_a_result_without_a_benchmark_has_no_levels_and_its_record_carries_the_replay(tmp_path):
    p = plan(tmp_path)
    p.trial_dir.mkdir(parents=True)
    replayed = Replayed("surfaces/s.json", (2,), False, None, 0.0)
    result = TrialResult(
        p, failures.OOM_KV, "recorded", None, PhaseTimes(), None, gpu.GpuStats(), {}, replayed=replayed
    )
    assert not result.ok and result.levels == ()
    write_artifacts(result)
    assert (p.trial_dir / "trial.json").read_text().startswith('{\n  "trial": 3,\n')  # one field a line, to read
    record = record_of(p)
    assert record["replay"] == replayed.record() and record["failure_class"] == "oom_kv"
    assert record["levels"] == [] and record["kv_capacity"] == {}
    empty = TrialResult(p, None, "", 0, PhaseTimes(), BenchmarkResult(()), gpu.GpuStats(), {})
    assert empty.levels == ()
    write_artifacts(empty)
    assert not (p.trial_dir / "benchmark.csv").exists()  # nothing measured: no empty table
