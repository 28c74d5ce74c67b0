"""One trial, start to end: GPU free -> launch -> ready -> benchmark (watched) -> stop -> TrialResult.

The server is stopped in every path out of here, exceptions and cancellation included.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from tuner.bench.client import (
    BenchmarkError,
    BenchmarkResult,
    BenchmarkTimeout,
    ServerDied,
    WarmupResult,
    run_benchmark,
)
from tuner.bench.load_search import Incumbent, run_load_search
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import LoadSearch, Workload
from tuner.errors import Cancelled
from tuner.serve import gpu
from tuner.serve.compile_cache import kernel_files
from tuner.serve.gpu import Holder  # by name: in TrialResult, `gpu` is the field above gpu_shared
from tuner.serve.launcher import Launcher, LaunchSpec, Server
from tuner.serve.poller import Poller
from tuner.serve.prestart import Spawned
from tuner.serve.readiness import NotReady, healthy, wait_ready
from tuner.sglang import endpoints, failures
from tuner.sglang.decode_log import DecodeGraphs
from tuner.sglang.failures import FailureClass, Phase
from tuner.sglang.flags import ServerFlags
from tuner.sglang.kv import KvCapacity
from tuner.sglang.startup_log import StartupPhases
from tuner.trial.numbers import number

HEALTH_EVERY_S = 1.0
UNHEALTHY_AFTER = 3  # consecutive failed /health polls (a loaded server may be slow to answer one)


class Progress(Protocol):
    """Optional methods, called when present: tick(trial, elapsed_s, log_path) about every 100 ms while the
    server starts, and trial_done(study, result) once a trial is recorded."""

    def phase(self, trial: int, name: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class TrialPlan:
    number: int
    flags: ServerFlags  # the complete command line: tuned and fixed flags, --model-path, --host, --port
    gpus: tuple[int, ...]
    host: str
    port: int
    trial_dir: Path
    startup_timeout_s: float
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class PhaseTimes:
    wait_gpu_s: float = 0.0
    launch_s: float = 0.0
    startup_s: float = 0.0
    benchmark_s: float = 0.0
    stop_s: float = 0.0
    total_s: float = 0.0

    @property
    def overhead_s(self) -> float:
        """What the tuner itself cost: everything but the server's startup and the benchmark."""
        return max(0.0, self.total_s - self.startup_s - self.benchmark_s)


@dataclass(frozen=True)
class Replayed:
    """A result answered from a recorded surface (tuner.launcher.replay), never measured by this study."""

    surface: str
    sources: tuple[int, ...]  # the recorded trials it came from
    modelled: bool  # no recorded trial had these flags: interpolated from the nearest ones
    gpu_peak_used_mib: float | None
    gpu_total_mib: float
    modelled_rates: tuple[float, ...] = ()  # a load search's rates read off the recorded curves, not recorded levels
    flags_recorded: bool = True  # a recorded trial ran these very flags (False: modelled from its nearest)

    def record(self) -> dict:
        out: dict = {
            "replayed": True,
            "modelled": self.modelled,
            "replay_surface": self.surface,
            "replay_of": list(self.sources),
        }
        if self.modelled_rates:
            out["modelled_rates"] = list(self.modelled_rates)
        if self.gpu_peak_used_mib is not None:
            out.update(
                gpu_peak_used_mib=round(self.gpu_peak_used_mib, 1),
                gpu_total_mib=round(self.gpu_total_mib, 1),
                gpu_peak_used_fraction=round(self.gpu_peak_used_mib / self.gpu_total_mib, 4),
            )
        return out


@dataclass
class TrialResult:
    plan: TrialPlan
    failure: FailureClass | None
    failure_detail: str
    exit_code: int | None
    times: PhaseTimes
    benchmark: BenchmarkResult | None
    gpu: gpu.GpuStats
    server_info: dict
    gpu_busy_before: bool = False
    gpu_shared: tuple[Holder, ...] = ()  # other processes on the trial's GPUs when it launched
    kv: KvCapacity = field(default_factory=KvCapacity)
    replayed: Replayed | None = None
    startup: StartupPhases = field(default_factory=StartupPhases)  # where its startup seconds went (its log)
    # files its server added to the shared compile caches, launch to stop (None: none shared); 0 is a warm start
    kernels_built: int | None = None
    prestarted_s: float | None = None  # its interpreter imported this long before the launch (None: started fresh)
    prestart_imports_s: float | None = None  # how long that interpreter's imports took (before the launch)
    spawned: tuple[Spawned, ...] = ()  # SGLang's spawned processes, on stand-bys or not (() : it had none)
    decode_graphs: DecodeGraphs | None = None  # what its decode log lines said of CUDA graphs (None: not benchmarked)
    level_graphs: tuple[DecodeGraphs, ...] = ()  # the same, per measured level (its warm-up included)
    artifacts_error: str = ""  # why its files could not be written (a full disk): the record says so
    launched: bool = True  # False: predicted to fail and never launched (it used no trial of the budget)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def levels(self) -> tuple[LevelResult, ...]:
        return self.benchmark.levels if self.benchmark else ()


class Watcher(Poller):
    """Watches a running server during the benchmark: its process, and /health every second."""

    def __init__(self, server: Server, cancel: threading.Event):
        # A /health request in flight ends within its timeout, twice the interval: stop() waits that long.
        super().__init__("health-watch", HEALTH_EVERY_S, join_s=HEALTH_EVERY_S * 2 + 1)
        self.server = server
        self.cancel = cancel
        self.unhealthy = False
        self._fails = 0
        self._client = httpx.Client(timeout=httpx.Timeout(HEALTH_EVERY_S * 2, connect=0.5))

    def __exit__(self, *exc) -> None:
        self.stop()
        self._client.close()

    def tick(self) -> None:
        if healthy(self._client, self.server.spec.base_url):
            self._fails = 0
        elif self.server.exit_code() is None:
            self._fails += 1
            self.unhealthy = self._fails >= UNHEALTHY_AFTER

    def reason(self) -> str | None:
        """Polled by the benchmark every 100 ms; any answer aborts the level at once."""
        if self.cancel.is_set():
            return "interrupted"
        code = self.server.exit_code()
        if code is not None:
            return f"server exited with status {code}"
        if self.unhealthy:
            return f"{endpoints.HEALTH} failed {UNHEALTHY_AFTER} times in a row"
        return None


class TrialRunner:
    def __init__(
        self,
        launcher: Launcher,
        workload: Workload,
        model: str,
        study: str,
        *,
        idle_mib: dict[int, float] | None = None,
        stop_grace_s: float = 15.0,
        early_stop: Callable[[LevelResult], str | None] | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        on_launch: Callable[[Server], None] | None = None,
        load_search: LoadSearch | None = None,
        slo: dict[str, float] | None = None,
        incumbent: Incumbent | None = None,
    ):
        self.launcher = launcher
        self.workload = workload
        self.model = model
        self.study = study
        self.idle_mib = idle_mib or {}
        self.stop_grace_s = stop_grace_s
        self.early_stop = early_stop
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.on_launch = on_launch
        self.load_search = load_search  # instead of the workload's fixed levels: the SLO-goodput search
        self.slo = slo or {}
        self.incumbent = incumbent  # the study's best feasible trial so far, where the search starts (or None)

    def _phase(self, plan: TrialPlan, name: str, detail: str = "") -> None:
        if self.progress:
            self.progress.phase(plan.number, name, detail)

    def run(self, plan: TrialPlan) -> TrialResult:
        t0 = time.monotonic()
        times = PhaseTimes()
        plan.trial_dir.mkdir(parents=True, exist_ok=True)
        log_path = plan.trial_dir / "server.log"

        if plan.gpus and gpu.nvml_available(quiet=True):
            self._phase(plan, "waiting for GPU")
            gpu.wait_until_free(plan.gpus, self.idle_mib)
        # Read again at the launch itself: something else may take the GPU in between, and SGLang 0.5.17 words
        # a busy GPU exactly like a too-low --mem-fraction-static. Our own servers never share a GPU, so any
        # process on it now is someone else's.
        shared = tuple(gpu.holders(plan.gpus))
        busy_before = bool(shared) or any(
            u > self.idle_mib.get(g, 0.0) + gpu.FREE_SLACK_MIB for g, u in gpu.used_mib(plan.gpus).items()
        )
        times.wait_gpu_s = time.monotonic() - t0

        spec = LaunchSpec(plan.flags, plan.env, log_path, plan.host, plan.port, plan.gpus, self.study, plan.number)
        self._phase(plan, "launching")
        cache_folders = self.launcher.compile_cache_folders(spec)
        cached = None if cache_folders is None else kernel_files(cache_folders)
        log_from = _size(log_path)  # the log may hold an earlier launch's lines (a retry, a study made anew)
        t_launch = time.monotonic()
        server = self.launcher.launch(spec)
        times.launch_s = time.monotonic() - t_launch
        if self.on_launch:
            try:
                self.on_launch(server)
            except BaseException:  # e.g. the storage cannot be written: no server is left running
                server.stop(self.stop_grace_s)
                raise

        failure: FailureClass | None = None
        detail = ""
        bench: BenchmarkResult | None = None
        info: dict = {}
        kv = KvCapacity()
        startup = StartupPhases()
        spawned: tuple[Spawned, ...] = ()
        exit_code: int | None = None
        marks: list[int] = []  # the log's size when the benchmark began and as each level ended
        sampler = gpu.GpuSampler(plan.gpus)
        try:
            with sampler:
                self._phase(plan, "starting", f"timeout {plan.startup_timeout_s:.0f} s")
                t_start = time.monotonic()
                try:
                    ready = wait_ready(
                        server, plan.startup_timeout_s, on_tick=lambda e: self._starting_tick(plan, e, log_path)
                    )
                    times.startup_s = ready.startup_s
                    info = ready.server_info
                    kv = KvCapacity.of(info, failures.log_tail(log_path))  # the startup line, before logs grow
                except NotReady as exc:
                    times.startup_s = time.monotonic() - t_start
                    failure, detail = (
                        self._classify(server, Phase.STARTUP, log_path, busy_before, timed_out=exc.exit_code is None),
                        str(exc),
                    )
                launch_log = _launch_log(log_path, log_from)
                startup = StartupPhases.of(launch_log, times.startup_s) if launch_log is not None else StartupPhases()
                spawned = Spawned.of_log(launch_log or "")
                if failure is None:
                    sampler.sample_now()
                    sampler.phase = "benchmark"
                    self._phase(plan, "benchmarking")
                    t_bench = time.monotonic()
                    marks.append(_size(log_path))
                    with Watcher(server, self.cancel) as watcher:
                        try:
                            bench = self._benchmark(plan, spec.base_url, watcher, lambda: marks.append(_size(log_path)))
                        except ServerDied as exc:
                            if self.cancel.is_set():
                                raise Cancelled() from None
                            failure, detail = (
                                self._classify(
                                    server, Phase.BENCHMARK, log_path, busy_before, unhealthy=watcher.unhealthy
                                ),
                                str(exc),
                            )
                            bench = exc.measured
                        except BenchmarkTimeout as exc:
                            failure, detail = (
                                self._classify(server, Phase.BENCHMARK, log_path, busy_before, timed_out=True),
                                str(exc),
                            )
                            bench = exc.measured
                        except BenchmarkError as exc:  # a live server that refused every warm-up request
                            failure, detail, bench = failures.REQUESTS_FAILED, str(exc), exc.measured
                    times.benchmark_s = time.monotonic() - t_bench
                    sampler.sample_now()  # one benchmark sample at least, however short the benchmark
                sampler.phase = "stopping"
        finally:
            self._phase(plan, "stopping")
            t_stop = time.monotonic()
            exit_code = server.stop(self.stop_grace_s)
            times.stop_s = time.monotonic() - t_stop
            times.total_s = time.monotonic() - t0
        result = TrialResult(
            plan, failure, detail, exit_code, times, bench, sampler.stats(), info, busy_before, shared, kv
        )
        result.startup = startup
        if cache_folders is not None and cached is not None:
            # A trial beside it on the same machine adds to the same caches: on several GPUs this counts theirs too.
            result.kernels_built = len(kernel_files(cache_folders) - cached)
        result.prestarted_s = server.prestarted_s
        result.prestart_imports_s = server.prestart_imports_s
        result.spawned = spawned
        if bench is not None:
            # Read once the server has stopped, so every line it wrote during the benchmark is in the file. A
            # running batch past the largest captured graph decodes eagerly (sgl-project/sglang issue 33483): the
            # score shows only the slowdown, these lines show the cause.
            result.decode_graphs, result.level_graphs = DecodeGraphs.of_log(log_path, marks)
        write_artifacts(result)
        return result

    def _benchmark(
        self, plan: TrialPlan, base_url: str, watcher: Watcher, level_done: Callable[[], None]
    ) -> BenchmarkResult:
        """The benchmark; ``level_done`` is called as each level ends, in the order of the result's levels."""

        def on_level(lv: LevelResult) -> None:
            level_done()
            if self.load_search is not None:
                detail = rate_detail(lv)
            else:
                detail = f"c={lv.concurrency}: {lv.output_throughput:.0f} tok/s"
            self._phase(plan, "benchmarking", detail)

        if self.load_search is not None:
            return run_load_search(
                base_url,
                self.model,
                self.workload,
                self.load_search,
                self.slo,
                incumbent=self.incumbent,
                check_server=watcher.reason,
                on_warmup=lambda w: self._warmed(plan, w),
                on_level=on_level,
            )
        return run_benchmark(
            base_url,
            self.model,
            self.workload,
            check_server=watcher.reason,
            on_warmup=lambda w: self._warmed(plan, w),
            early_stop=self.early_stop,
            on_level=on_level,
        )

    def _warmed(self, plan: TrialPlan, w: WarmupResult) -> None:
        settled = "" if w.stable else ", latencies still moving"
        self._phase(plan, "benchmarking", f"warmed up in {w.seconds:.1f} s ({w.bursts} bursts{settled})")

    def _starting_tick(self, plan: TrialPlan, elapsed: float, log_path: Path) -> None:
        self._check_cancel()
        tick = getattr(self.progress, "tick", None)  # optional in the Progress protocol
        if tick:
            tick(plan.number, elapsed, log_path)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def _classify(
        self,
        server: Server,
        phase: Phase,
        log_path: Path,
        busy_before: bool,
        *,
        timed_out: bool = False,
        unhealthy: bool = False,
    ) -> FailureClass:
        return failures.classify(
            phase=phase,
            exit_code=server.exit_code(),
            log=failures.log_tail(log_path),
            timed_out=timed_out,
            unhealthy=unhealthy,
            gpu_busy_before=busy_before,
        )


STARTUP_LOG_BYTES = 4 << 20  # the startup lines come first; a server's later decode lines are not needed here


def rate_detail(lv: LevelResult) -> str:
    """A load search's level as the progress says it; a p99 a replayed surface did not record is "not
    recorded", as in every view."""
    ttft, tpot = number(lv.p99_ttft_ms, ".0f", " ms"), number(lv.p99_tpot_ms, ".1f", " ms")
    return f"{lv.request_rate:g} req/s: p99 TTFT {ttft}, p99 TPOT {tpot}"


def _launch_log(log_path: Path, log_from: int) -> str | None:
    """This launch's first lines of the server log (where its startup went: SGLang's own timestamps, and the
    prestart boot's lines on its spawned processes); None if the log cannot be read."""
    try:
        with open(log_path, "rb") as f:
            f.seek(log_from)
            return f.read(STARTUP_LOG_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def write_artifacts(result: TrialResult) -> None:
    """benchmark.csv, gpu.csv and trial.json next to server.log: the trial readable without the database.

    Each file is whole or absent: written beside and renamed. One that cannot be written (the disk is full)
    is left out, and ``result.artifacts_error`` says why, for the trial's record."""
    try:
        _write_artifacts(result)
    except OSError as exc:
        result.artifacts_error = f"cannot write its files to {result.plan.trial_dir} ({exc.strerror or exc})"


def _whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary path)``, then renamed to ``path``: never a half-written file, even on a full disk."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_artifacts(result: TrialResult) -> None:
    d = result.plan.trial_dir
    bench = result.benchmark
    if bench and bench.levels:
        _whole(d / "benchmark.csv", bench.to_csv)
    if result.gpu.samples:
        _whole(d / "gpu.csv", result.gpu.write_csv)
    record = {
        "trial": result.plan.number,
        "argv": result.plan.flags.argv(),
        "gpus": list(result.plan.gpus),
        "failure_class": result.failure.name if result.failure else None,
        "failure_detail": result.failure_detail,
        "exit_code": result.exit_code,
        "times": {**vars(result.times), "overhead_s": result.times.overhead_s},
        "gpu": result.gpu.record(),
        "stopped_early": result.benchmark.stopped_early if result.benchmark else None,
        "slo_broken": result.benchmark.slo_broken if result.benchmark else None,
        # Every level measured, those before a failure included.
        "levels": result.benchmark.to_frame().to_dict("records") if result.benchmark else [],
        "server_info": result.server_info,
        "kv_capacity": result.kv.record(),
        "startup_phases": result.startup.record(),
        "kernels_built": result.kernels_built,
        "prestarted_s": result.prestarted_s,
        "prestart_imports_s": result.prestart_imports_s,
        "spawned": [asdict(s) for s in result.spawned],
        "warmup": result.benchmark.warmup.record() if result.benchmark and result.benchmark.warmup else None,
        "decode_graphs": result.decode_graphs.record() if result.decode_graphs else None,
        "gpu_shared": [h.record() for h in result.gpu_shared],
        **({"replay": result.replayed.record()} if result.replayed else {}),
    }
    text = json.dumps(record, indent=2, default=str)
    _whole(d / "trial.json", lambda tmp: tmp.write_text(text))
