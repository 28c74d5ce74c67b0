"""A trial's record: the one typed view of what a study stores about a trial, its writer and its reader.

Optuna keeps a trial's record as flat user attributes (JSON values by string key). Every key is spelled here and
only here: ``TrialRecord.attrs()`` writes the record (what the study stores, in one transaction), and
``TrialRecord.of(frozen_trial)`` reads it back, typed. The keys are those studies have always stored, so every
existing study database still reads; a key a study never stored (an older tuner, a trial that never ran) reads as
None, or an empty tuple for lists. The study's own attributes (its objective, run file, confirmations) are read
and written the same way by ``StudyRecord``.

The writer omits a field that is None: a record written in parts (when the trial is queued, when it launches,
when it ends) stores only what each part knows, and reading never confuses "not recorded" with a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.serve.gpu import Holder
from tuner.serve.prestart import Spawned
from tuner.sglang.decode_log import DecodeGraphs
from tuner.sglang.failures import KV_POOL_TOO_SMALL, FailureClass
from tuner.sglang.flags import TUNER_FLAGS, ServerFlags
from tuner.sglang.kv import KvCapacity
from tuner.sglang.startup_log import StartupPhases

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from tuner.bench.metrics import LevelResult
    from tuner.trial.runner import TrialResult

NO_FAILURE = "none"  # the failure class of a trial that ran and measured
OVER_BUDGET = "over_budget"  # a trial number past the budget, given back
SAMPLING_ERROR = "sampling_error"  # Optuna could not sample the space


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _tuple(value: Any) -> tuple | None:
    return tuple(value) if value is not None else None


# -- the parts --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A failure (keys ``failure_*``) or a broken limit (``limit_*``): its class, why, what to do, what was seen.

    A trial that ran and measured has the failure class ``none`` and nothing else."""

    name: str
    explanation: str | None = None
    hint: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, failure: FailureClass, detail: str | None) -> Verdict:
        return cls(failure.name, failure.explanation, failure.hint, detail)

    def write(self, prefix: str) -> dict[str, Any]:
        return _drop_none(
            {
                f"{prefix}_class": self.name,
                f"{prefix}_explanation": self.explanation,
                f"{prefix}_hint": self.hint,
                f"{prefix}_detail": self.detail,
            }
        )

    @classmethod
    def read(cls, a: Mapping[str, Any], prefix: str) -> Verdict | None:
        name = a.get(f"{prefix}_class")
        if name is None:
            return None
        return cls(name, a.get(f"{prefix}_explanation"), a.get(f"{prefix}_hint"), a.get(f"{prefix}_detail"))


@dataclass(frozen=True)
class PhaseSeconds:
    """Seconds the server took to start, the benchmark to run, the server to stop; all of it; the tuner's own."""

    startup_s: float | None = None
    benchmark_s: float | None = None
    stop_s: float | None = None
    total_s: float | None = None
    overhead_s: float | None = None


@dataclass(frozen=True)
class GpuUse:
    """The GPU memory, utilisation and power a trial used (keys ``gpu_*``); all None where NVML was missing."""

    peak_used_mib: float | None = None
    peak_used_mib_benchmark: float | None = None
    mean_used_mib_benchmark: float | None = None
    used_mib_after_startup: float | None = None
    total_mib: float | None = None
    peak_used_fraction: float | None = None
    mean_util_pct_benchmark: float | None = None
    mean_power_w_benchmark: float | None = None
    devices: tuple[Mapping[str, Any], ...] | None = None  # each GPU's own numbers (serve.gpu.DeviceStats.record)

    def write(self) -> dict[str, Any]:
        out = {f"gpu_{f.name}": getattr(self, f.name) for f in fields(self)}
        if self.devices is not None:
            out["gpu_devices"] = [dict(d) for d in self.devices]
        return _drop_none(out)

    @classmethod
    def read(cls, a: Mapping[str, Any]) -> GpuUse:
        values = {f.name: a.get(f"gpu_{f.name}") for f in fields(cls)}
        values["devices"] = _tuple(values["devices"])
        return cls(**values)


# The objective's level, named as bench_serving names it: the trial's headline numbers.
HEADLINE = (
    "output_throughput",
    "request_throughput",
    "total_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "median_e2e_latency_ms",
    "completed",
    "failed",
    "short_outputs",
)


@dataclass(frozen=True)
class Headline:
    """The numbers of the level the trial is scored at (rounded to 3 decimals); all None when none was measured."""

    output_throughput: float | None = None
    request_throughput: float | None = None
    total_throughput: float | None = None
    median_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    median_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    median_itl_ms: float | None = None
    median_e2e_latency_ms: float | None = None
    completed: int | None = None
    failed: int | None = None
    short_outputs: int | None = None

    @classmethod
    def of(cls, level: LevelResult) -> Headline:
        return cls(**{name: round(getattr(level, name), 3) for name in HEADLINE})


@dataclass(frozen=True)
class RecordedLevel:
    """One measured level as the record keeps it (a concurrency, or a load search's request rate): bench_serving's
    headline numbers, and for a load search whether it held the SLO. ``benchmark.csv`` keeps every number."""

    concurrency: int = 0
    request_rate: float | None = None
    repeat: int = 0
    output_throughput: float | None = None
    request_throughput: float | None = None
    request_goodput: float | None = None
    median_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    median_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    failed: int | None = None
    slo_pass: bool | None = None  # a load search's verdict; None (not written) otherwise
    # Its decode log lines (its warm-up's included): how many, and how many without a CUDA graph; None (not
    # written) where the log was not read.
    decode_logged: int | None = None
    decode_graphless: int | None = None

    @classmethod
    def of(cls, lv: LevelResult, slo_pass: bool | None = None, graphs: DecodeGraphs | None = None) -> RecordedLevel:
        return cls(
            concurrency=lv.concurrency,
            request_rate=lv.request_rate,
            repeat=lv.repeat,
            output_throughput=round(lv.output_throughput, 2),
            request_throughput=round(lv.request_throughput, 3),
            request_goodput=round(lv.request_goodput, 3),
            median_ttft_ms=round(lv.median_ttft_ms, 2),
            p99_ttft_ms=round(lv.p99_ttft_ms, 2),
            median_tpot_ms=round(lv.median_tpot_ms, 3),
            p99_tpot_ms=round(lv.p99_tpot_ms, 3),
            failed=lv.failed,
            slo_pass=slo_pass,
            decode_logged=graphs.logged if graphs else None,
            decode_graphless=graphs.graphless if graphs else None,
        )

    def write(self) -> dict[str, Any]:
        optional = ("slo_pass", "decode_logged", "decode_graphless")
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in optional or getattr(self, f.name) is not None
        }

    @property
    def label(self) -> str:
        """``8 req/s`` for a load search's level, ``c=8`` otherwise."""
        return f"{self.request_rate:g} req/s" if self.request_rate is not None else f"c={self.concurrency}"

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> RecordedLevel:
        defaults = cls()
        return cls(**{f.name: d.get(f.name, getattr(defaults, f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class ServerSettled:
    """What /get_server_info said SGLang settled on (keys ``server_*``)."""

    version: str | None = None
    mem_fraction_static: float | None = None
    chunked_prefill_size: int | None = None
    cuda_graph_max_bs: int | None = None
    attention_backend: str | None = None

    @classmethod
    def of(cls, server_info: Mapping[str, Any]) -> ServerSettled:
        return cls(**{f.name: server_info.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ReplayMark:
    """A trial answered from a recorded surface, never measured by this study."""

    surface: str | None
    sources: tuple[int, ...]  # the recorded trials it came from
    modelled: bool  # no recorded trial had these flags: modelled from the nearest ones
    modelled_rates: tuple[float, ...] | None = None  # a load search's rates read off the curves

    def write(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replayed": True,
            "modelled": self.modelled,
            "replay_surface": self.surface,
            "replay_of": list(self.sources),
        }
        if self.modelled_rates:
            out["modelled_rates"] = list(self.modelled_rates)
        return out

    @classmethod
    def read(cls, a: Mapping[str, Any]) -> ReplayMark | None:
        if not a.get("replayed"):
            return None
        return cls(
            a.get("replay_surface"),
            tuple(a.get("replay_of") or ()),
            bool(a.get("modelled")),
            _tuple(a.get("modelled_rates")),
        )

    def text(self) -> str:
        """For tables: 'trial N' (its recorded row) or 'modelled (N, M, K)'."""
        sources = ", ".join(map(str, self.sources))
        return f"modelled ({sources})" if self.modelled else f"trial {sources}"


# -- the record -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """Everything a study stores about one trial, typed. Fields that are None (or None-valued parts) were not
    recorded. ``number``, ``state``, ``values`` and ``params`` are Optuna's own, never written as attributes."""

    number: int | None = None
    state: TrialState | None = None
    values: tuple[float, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    # its role, set when it is queued
    baseline: bool | None = None
    reference: str | None = None  # a hand-tuned reference config's name
    warm_start: str | None = None  # the earlier study's surface whose best config it is (sampler.warm_start)
    retry_of: int | None = None
    retry_reason: str | None = None
    # where and how it ran, set when it is planned
    worker: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    host: str | None = None
    gpus: tuple[int, ...] | None = None
    gpus_needed: int | None = None
    flags: ServerFlags | None = None  # the whole command line, as SGLang names its flags
    argv: tuple[str, ...] | None = None
    trial_dir: Path | None = None
    launcher: Mapping[str, Any] | None = None  # the launcher's own description (kind, command, image digest...)
    launched: bool | None = None  # False: predicted to fail, never launched
    server: str | None = None  # the launched server's identity (pid, container)
    # what it measured, set when it ends
    failure: Verdict | None = None
    exit_code: int | None = None
    feasible: bool | None = None
    limit: Verdict | None = None  # a broken limit of a measured trial (its KV pool too small)
    stopped_early: str | None = None
    slo_broken: str | None = None
    times: PhaseSeconds = field(default_factory=PhaseSeconds)
    startup: StartupPhases = field(default_factory=StartupPhases)  # the startup's phases, from SGLang's log
    kernels_built: int | None = None  # files its server added to the shared compile caches (None: none shared)
    # It built none. Recorded before kernels_built was (2026-12-05): the caches held any file at its launch.
    compile_cache_warm: bool | None = None
    prestarted_s: float | None = None  # its interpreter imported this long before the launch (None: started fresh)
    prestart_imports_s: float | None = None  # how long that interpreter's imports took (None: not recorded)
    spawned: tuple[Spawned, ...] | None = None  # SGLang's spawned processes, on stand-bys or why not (None: none)
    # the warm-up until stable latencies before its first level (part of benchmark_s): seconds, bursts, settled
    warmup_s: float | None = None
    warmup_bursts: int | None = None
    warmup_stable: bool | None = None
    gpu: GpuUse = field(default_factory=GpuUse)
    gpu_shared: tuple[Holder, ...] | None = None  # other processes on its GPUs (--allow-shared-gpu)
    kv: KvCapacity = field(default_factory=KvCapacity)
    headline: Headline = field(default_factory=Headline)
    goodput: float | None = None  # a load search's value: goodput at the highest rate holding the SLO
    max_rate: float | None = None
    levels: tuple[RecordedLevel, ...] | None = None
    settled: ServerSettled = field(default_factory=ServerSettled)
    workload: Mapping[str, Any] | None = None  # what was measured (bench.workload's description, the search)
    replay: ReplayMark | None = None
    decode_graphs: DecodeGraphs | None = None  # its decode log lines on CUDA graphs (key ``decode_graphs``)
    defaults_outside_space: tuple[str, ...] | None = None  # the baseline's flags the space cannot draw
    # A replayed baseline no recorded trial ran: why nothing is compared with its modelled numbers.
    unrecorded_baseline: str | None = None

    # -- the writer
    def attrs(self) -> dict[str, Any]:
        """The user attributes this record is stored as (None fields left out)."""
        out: dict[str, Any] = _drop_none(
            {
                "baseline": self.baseline,
                "reference": self.reference,
                "warm_start": self.warm_start,
                "retry_of": self.retry_of,
                "retry_reason": self.retry_reason,
                "worker": self.worker,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "host": self.host,
                "gpus": list(self.gpus) if self.gpus is not None else None,
                "gpus_needed": self.gpus_needed,
                "flags": self.flags.as_dict() if self.flags is not None else None,
                "argv": list(self.argv) if self.argv is not None else None,
                "trial_dir": str(self.trial_dir) if self.trial_dir is not None else None,
                "launcher": dict(self.launcher) if self.launcher is not None else None,
                "launched": self.launched,
                "server": self.server,
            }
        )
        if self.failure is not None:
            out.update(self.failure.write("failure"))
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        out.update(_drop_none(vars(self.times)))
        if self.startup.record():
            out["startup_phases"] = self.startup.record()
        if self.kernels_built is not None:
            out["kernels_built"] = self.kernels_built
        if self.compile_cache_warm is not None:
            out["compile_cache_warm"] = self.compile_cache_warm
        if self.prestarted_s is not None:
            out["prestarted_s"] = self.prestarted_s
        if self.prestart_imports_s is not None:
            out["prestart_imports_s"] = self.prestart_imports_s
        if self.spawned is not None:
            out["spawned"] = [_drop_none(asdict(s)) for s in self.spawned]
        out.update(
            _drop_none(
                {"warmup_s": self.warmup_s, "warmup_bursts": self.warmup_bursts, "warmup_stable": self.warmup_stable}
            )
        )
        out.update(self.gpu.write())
        if self.workload is not None:
            out["workload"] = dict(self.workload)
        if self.replay is not None:
            out.update(self.replay.write())
        if self.gpu_shared is not None:
            out["gpu_shared"] = [h.record() for h in self.gpu_shared]
        if self.stopped_early is not None:
            out["stopped_early"] = self.stopped_early
        out.update(self.kv.record())
        if self.limit is not None:
            out.update(self.limit.write("limit"))
        out.update(_drop_none(vars(self.headline)))
        out.update(_drop_none({"goodput": self.goodput, "max_rate": self.max_rate, "slo_broken": self.slo_broken}))
        if self.levels is not None:
            out["levels"] = [lv.write() for lv in self.levels]
        out.update({f"server_{k}": v for k, v in _drop_none(vars(self.settled)).items()})
        if self.decode_graphs is not None:
            out["decode_graphs"] = self.decode_graphs.record()
        if self.defaults_outside_space is not None:
            out["defaults_outside_space"] = list(self.defaults_outside_space)
        if self.unrecorded_baseline is not None:
            out["unrecorded_baseline"] = self.unrecorded_baseline
        if self.feasible is not None:
            out["feasible"] = self.feasible
        return out

    @classmethod
    def measured(
        cls,
        result: TrialResult,
        level: LevelResult | None,
        *,
        kv_shortfall: str | None = None,
        load_search: bool = False,
        workload: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        """What a trial's end adds to its record: ``level`` is the one it is scored at (None: nothing measured),
        ``kv_shortfall`` why its KV pool cannot hold the workload (kept, and infeasible), ``load_search`` whether
        the study searches request rates (its goodput and highest rate are then recorded, 0 when none held)."""
        t = result.times
        gpu = GpuUse.read(result.gpu.record())
        replay = None
        if result.replayed:
            r = result.replayed
            replay = ReplayMark(r.surface, tuple(r.sources), r.modelled, tuple(r.modelled_rates) or None)
            if r.gpu_peak_used_mib is not None and r.gpu_total_mib:  # what the recorded trial used
                gpu = GpuUse(
                    **{
                        **vars(gpu),
                        "peak_used_mib": round(r.gpu_peak_used_mib, 1),
                        "total_mib": round(r.gpu_total_mib, 1),
                        "peak_used_fraction": round(r.gpu_peak_used_mib / r.gpu_total_mib, 4),
                    }
                )
        slo_pass = result.benchmark.slo_pass if result.benchmark else ()
        bench = result.benchmark
        warm = bench.warmup if bench else None
        return cls(
            # A healthy server's status is our own SIGKILL at stop (137): only a failed one's says something.
            failure=Verdict.of(result.failure, result.failure_detail) if result.failure else Verdict(NO_FAILURE),
            exit_code=result.exit_code if result.failure else None,
            times=PhaseSeconds(
                startup_s=round(t.startup_s, 3),
                benchmark_s=round(t.benchmark_s, 3),
                stop_s=round(t.stop_s, 3),
                total_s=round(t.total_s, 3),
                overhead_s=round(t.overhead_s, 3),
            ),
            startup=result.startup,
            kernels_built=result.kernels_built,
            compile_cache_warm=None if result.kernels_built is None else result.kernels_built == 0,
            prestarted_s=None if result.prestarted_s is None else round(result.prestarted_s, 1),
            prestart_imports_s=None if result.prestart_imports_s is None else round(result.prestart_imports_s, 2),
            spawned=result.spawned or None,
            warmup_s=round(warm.seconds, 3) if warm else None,
            warmup_bursts=warm.bursts if warm else None,
            warmup_stable=warm.stable if warm else None,
            gpu=gpu,
            workload=dict(workload) if workload else None,
            replay=replay,
            gpu_shared=tuple(
                Holder(h.gpu, h.pid, h.name, round(h.mib, 1) if h.mib is not None else None) for h in result.gpu_shared
            )
            or None,
            stopped_early=(bench.stopped_early or None) if bench else None,
            kv=result.kv,
            limit=Verdict.of(KV_POOL_TOO_SMALL, kv_shortfall) if kv_shortfall else None,
            headline=Headline.of(level) if level else Headline(),
            goodput=(round(level.request_goodput, 3) if level else 0.0) if load_search else None,
            max_rate=(level.request_rate if level else 0.0) if load_search else None,
            slo_broken=(bench.slo_broken or None) if load_search and bench else None,
            levels=tuple(
                RecordedLevel.of(
                    lv,
                    slo_pass[i] if slo_pass else None,
                    result.level_graphs[i] if i < len(result.level_graphs) else None,
                )
                for i, lv in enumerate(result.levels)
            ),
            settled=ServerSettled.of(result.server_info),
            decode_graphs=result.decode_graphs,
        )

    # -- the reader
    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        """A stored trial's record, or a running trial's as far as it is written (absent keys read as None)."""
        values = getattr(trial, "values", None)  # a running trial has no state or values yet
        return cls.from_attrs(
            trial.user_attrs,
            number=trial.number,
            state=getattr(trial, "state", None),
            values=tuple(values) if values is not None else None,
            params=dict(trial.params),
        )

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any], **optuna_fields: Any) -> TrialRecord:
        """The record of these user attributes (a live trial's, or a stored one's)."""
        flags = a.get("flags")
        kv = KvCapacity(a.get("max_total_num_tokens"), a.get("max_running_requests"))
        return cls(
            **optuna_fields,
            baseline=a.get("baseline"),
            reference=a.get("reference"),
            warm_start=a.get("warm_start"),
            retry_of=a.get("retry_of"),
            retry_reason=a.get("retry_reason"),
            worker=a.get("worker"),
            started_at=a.get("started_at"),
            ended_at=a.get("ended_at"),
            host=a.get("host"),
            gpus=_tuple(a.get("gpus")),
            gpus_needed=a.get("gpus_needed"),
            flags=ServerFlags(tuple(flags.items())) if flags is not None else None,
            argv=_tuple(a.get("argv")),
            trial_dir=Path(a["trial_dir"]) if a.get("trial_dir") is not None else None,
            launcher=a.get("launcher"),
            launched=a.get("launched"),
            server=a.get("server"),
            failure=Verdict.read(a, "failure"),
            exit_code=a.get("exit_code"),
            feasible=a.get("feasible"),
            limit=Verdict.read(a, "limit"),
            stopped_early=a.get("stopped_early"),
            slo_broken=a.get("slo_broken"),
            times=PhaseSeconds(**{f.name: a.get(f.name) for f in fields(PhaseSeconds)}),
            startup=StartupPhases.read(a.get("startup_phases")),
            kernels_built=a.get("kernels_built"),
            compile_cache_warm=a.get("compile_cache_warm"),
            prestarted_s=a.get("prestarted_s"),
            prestart_imports_s=a.get("prestart_imports_s"),
            spawned=tuple(Spawned(**s) for s in a["spawned"]) if a.get("spawned") is not None else None,
            warmup_s=a.get("warmup_s"),
            warmup_bursts=a.get("warmup_bursts"),
            warmup_stable=a.get("warmup_stable"),
            gpu=GpuUse.read(a),
            gpu_shared=tuple(Holder(**h) for h in a["gpu_shared"]) if a.get("gpu_shared") is not None else None,
            kv=kv,
            headline=Headline(**{name: a.get(name) for name in HEADLINE}),
            goodput=a.get("goodput"),
            max_rate=a.get("max_rate"),
            levels=tuple(RecordedLevel.read(lv) for lv in a["levels"]) if a.get("levels") is not None else None,
            settled=ServerSettled(**{f.name: a.get(f"server_{f.name}") for f in fields(ServerSettled)}),
            workload=a.get("workload"),
            replay=ReplayMark.read(a),
            decode_graphs=DecodeGraphs.read(a["decode_graphs"]) if a.get("decode_graphs") is not None else None,
            defaults_outside_space=_tuple(a.get("defaults_outside_space")),
            unrecorded_baseline=a.get("unrecorded_baseline"),
        )

    # -- what readers ask of it
    @staticmethod
    def uses_budget(trial: FrozenTrial) -> bool:
        """Whether a trial takes one of the study's ``trials``: all but those predicted to fail and never launched
        (they cost no GPU time). A running trial takes one until it is recorded as predicted. Read without the
        whole record: the budget is counted before every trial, over every trial of the study."""
        return trial.user_attrs.get("launched") is not False

    @property
    def failure_class(self) -> str | None:
        """The failure class: ``none`` for a trial that measured, None before it ended (or never recorded)."""
        return self.failure.name if self.failure is not None else None

    @property
    def failed(self) -> bool:
        return self.failure is not None and self.failure.name != NO_FAILURE

    @property
    def is_feasible(self) -> bool:
        return bool(self.feasible)

    @property
    def is_baseline(self) -> bool:
        return bool(self.baseline)

    @property
    def baseline_words(self) -> str:
        """How views name the baseline: one no recorded trial ran (a replay's) is said to be modelled."""
        return f"baseline (SGLang defaults{', modelled: none recorded' if self.unrecorded_baseline else ''})"

    @property
    def role(self) -> str:
        """``baseline``, ``reference <name>`` or ``top`` (a sampled trial)."""
        if self.baseline:
            return "baseline"
        if self.reference:
            return f"reference {self.reference}"
        return "top"

    @property
    def flag_values(self) -> dict[str, Any]:
        return self.flags.as_dict() if self.flags is not None else {}

    @property
    def measured_levels(self) -> tuple[RecordedLevel, ...]:
        return self.levels or ()

    @property
    def sglang_version(self) -> str | None:
        """SGLang's version: from /get_server_info, else what the launcher said."""
        return self.settled.version or (self.launcher or {}).get("sglang_version")

    @property
    def graphless_by_level(self) -> str | None:
        """Graphless of logged decode steps per level (``c=1 0/3, c=8 5/6``); None where no level had one."""
        levels = [lv for lv in self.measured_levels if lv.decode_logged is not None]
        if not any(lv.decode_graphless for lv in levels):
            return None
        return ", ".join(f"{lv.label} {lv.decode_graphless}/{lv.decode_logged}" for lv in levels)

    def number_at(self, key: str) -> Any:
        """A recorded number by its stored key (tables of compared configs name their rows by key)."""
        if key in HEADLINE:
            return getattr(self.headline, key)
        if key.startswith("gpu_") and key[4:] in {f.name for f in fields(GpuUse)}:
            return getattr(self.gpu, key[4:])
        return {"goodput": self.goodput, "max_rate": self.max_rate}[key]


def replay_notice(records: Iterable[TrialRecord]) -> str | None:
    """One sentence for a study some of whose trials were replayed (None for a study of real trials only):
    every view of such a study says it, so a replayed number is never read as a measurement."""
    records = list(records)
    replayed = [r for r in records if r.replay]
    if not replayed:
        return None
    modelled = sum(bool(r.replay and r.replay.modelled) for r in replayed)
    launcher = replayed[0].launcher or {}
    return (
        f"REPLAY of recorded trials, not a measurement: {len(replayed)} of {len(records)} trials answered from "
        f"{launcher.get('surface', 'a surface')} ({launcher.get('recorded', '?')}, {launcher.get('gpu', '?')}, "
        f"SGLang {launcher.get('sglang_version', '?')}), {modelled} of them modelled from the nearest "
        f"recorded trials." + (f" The surface does not record: {launcher['absent']}." if launcher.get("absent") else "")
    )


@dataclass(frozen=True)
class Budget:
    """A study's finished trials as its budget (``trials``, the user's GPU time) counts them: the launched ones
    (replayed ones stand for launches), and apart from them those predicted to fail, which used no trial of it."""

    launched: int
    predicted: int
    total: int | None = None  # the budget of the latest run (None: the study never stored a run file)

    @classmethod
    def of(cls, study: optuna.Study, total: int | None = None) -> Budget:
        """``total`` defaults to the ``trials`` of the run file the study was last run with."""
        complete = study.get_trials(deepcopy=False, states=_complete())
        launched = sum(TrialRecord.uses_budget(t) for t in complete)
        if total is None:
            total = StudyRecord.of(study).run.get("trials")
        return cls(launched, len(complete) - launched, total)

    def text(self) -> str:
        """``12 launched (budget 12) + 3 predicted to fail, not launched``"""
        out = f"{self.launched} launched" + (f" (budget {self.total})" if self.total is not None else "")
        return out + (f" + {self.predicted} predicted to fail, not launched" if self.predicted else "")


# -- the study's record -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmedTrial:
    """One trial re-run by ``tune confirm`` (search.confirm.Confirmation): its runs of the first metric, mean
    ± 95% CI and the one-sided bound it is ranked by (None where one run gives no spread; +-inf when it failed)."""

    metric: str
    runs: tuple[float, ...]
    bound: float | None
    role: str = "top"  # top | baseline | reference <name>
    mean: float | None = None
    std: float | None = None
    ci95: float | None = None
    failure: str | None = None

    def write(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "role": self.role,
            "runs": list(self.runs),
            "mean": self.mean,
            "std": self.std,
            "ci95": self.ci95,
            "bound": self.bound,
            "failure": self.failure,
        }

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> ConfirmedTrial:
        return cls(
            d["metric"],
            tuple(d["runs"]),
            d.get("bound"),
            d.get("role", "top"),
            d.get("mean"),
            d.get("std"),
            d.get("ci95"),
            d.get("failure"),
        )


@dataclass(frozen=True)
class Compared:
    """The confirmed winner ``a`` against ``b`` (the defaults, a reference): difference of means, its Welch 95%
    interval, and the sentence that says it (search.confirm.Comparison)."""

    a: str
    b: str
    metric: str
    diff: float
    low: float
    high: float
    b_mean: float
    within_noise: bool
    statement: str

    def write(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> Compared:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class ConfirmationRound:
    """When confirmation last ran (after how many completed trials), with how many repeats, and its comparisons."""

    repeats: int
    metric: str
    after_trials: int
    comparisons: tuple[Compared, ...] = ()

    def write(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "metric": self.metric,
            "after_trials": self.after_trials,
            "comparisons": [c.write() for c in self.comparisons],
        }

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> ConfirmationRound:
        return cls(
            d["repeats"], d["metric"], d["after_trials"], tuple(Compared.read(c) for c in d.get("comparisons", []))
        )


@dataclass(frozen=True)
class StudyRecord:
    """What a study stores about itself: its objective (set once, at creation), the latest run file, and the
    confirmations of ``tune confirm``."""

    metrics: tuple[str, ...] | None = None
    constraint_names: tuple[str, ...] | None = None
    at_concurrency: int | None = None
    slo: Mapping[str, float] | None = None
    load_search: Mapping[str, Any] | None = None  # vars(bench.workload.LoadSearch): a goodput study
    space: str | None = None
    run_config: Mapping[str, Any] | None = None  # RunConfig.to_dict() of the latest run
    confirmations: Mapping[int, ConfirmedTrial] | None = None  # by trial number, best bound first
    confirmation: ConfirmationRound | None = None

    def attrs(self) -> dict[str, Any]:
        return _drop_none(
            {
                "metrics": list(self.metrics) if self.metrics is not None else None,
                "constraint_names": list(self.constraint_names) if self.constraint_names is not None else None,
                "at_concurrency": self.at_concurrency,
                "slo": self.slo,
                "load_search": self.load_search,
                "space": self.space,
                "run_config": self.run_config,
                "confirmations": {str(n): c.write() for n, c in self.confirmations.items()}
                if self.confirmations is not None
                else None,
                "confirmation": self.confirmation.write() if self.confirmation is not None else None,
            }
        )

    @classmethod
    def of(cls, study: Any) -> StudyRecord:
        """A study's (or a study summary's) record."""
        a = study.user_attrs
        confirmations = a.get("confirmations")
        confirmation = a.get("confirmation")
        return cls(
            metrics=_tuple(a.get("metrics")),
            constraint_names=_tuple(a.get("constraint_names")),
            at_concurrency=a.get("at_concurrency"),
            slo=a.get("slo"),
            load_search=a.get("load_search"),
            space=a.get("space"),
            run_config=a.get("run_config"),
            confirmations={int(n): ConfirmedTrial.read(c) for n, c in confirmations.items()}
            if confirmations is not None
            else None,
            confirmation=ConfirmationRound.read(confirmation) if confirmation is not None else None,
        )

    def write(self, study: optuna.Study) -> None:
        for key, value in self.attrs().items():
            study.set_user_attr(key, value)

    @property
    def run(self) -> Mapping[str, Any]:
        return self.run_config or {}

    @property
    def is_load_search(self) -> bool:
        return self.load_search is not None

    @property
    def slo_limits(self) -> dict[str, float]:
        """The SLO: the study's, else the latest run file's."""
        return dict(self.slo or self.run.get("objective", {}).get("slo") or {})

    def confirmed(self, number: int) -> ConfirmedTrial | None:
        return (self.confirmations or {}).get(number)

    @property
    def comparisons(self) -> tuple[Compared, ...]:
        return self.confirmation.comparisons if self.confirmation is not None else ()


# -- the trials a view compares ---------------------------------------------------------------------------------


class NothingToExport(TunerError):
    pass


def records(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=states)]


def _complete() -> tuple[TrialState, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE,)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best feasible trial; with two objectives, the Pareto trial best on the first one.

    After ``tune confirm`` the winner is the confirmed trial with the best confidence bound instead.
    """
    import optuna

    confirmed = [n for n, c in (StudyRecord.of(study).confirmations or {}).items() if not c.failure]
    if confirmed:
        # Stored sorted by bound, best first (search.confirm).
        return study.trials[confirmed[0]]
    best: FrozenTrial | None
    try:
        if len(study.directions) == 1:
            best = study.best_trial
        else:
            front = study.best_trials
            if not front:
                raise ValueError
            sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
            best = max(front, key=lambda t: sign * t.values[0])
    except ValueError:
        best = None
    if best is None or not TrialRecord.of(best).is_feasible:
        done = len(study.get_trials(deepcopy=False, states=_complete()))
        raise NothingToExport(f"study {study.study_name!r} has no feasible trial yet ({done} completed)")
    return best


def best_record(study: optuna.Study) -> TrialRecord:
    return TrialRecord.of(best_trial(study))


def best_or_none(study: optuna.Study) -> TrialRecord | None:
    try:
        return best_record(study)
    except NothingToExport:
        return None


def baseline_record(study: optuna.Study) -> TrialRecord | None:
    """The completed baseline trial (SGLang's defaults) that others are compared with, if any: a replayed
    baseline no recorded trial ran is modelled, not a baseline (``no_baseline`` says why)."""
    return next((r for r in records(study, _complete()) if r.baseline and not r.unrecorded_baseline), None)


def no_baseline(study: optuna.Study) -> str | None:
    """Why the study compares its trials with no baseline although it has one (a replayed baseline no recorded
    trial ran); None otherwise."""
    return next((r.unrecorded_baseline for r in records(study, _complete()) if r.unrecorded_baseline), None)


def reference_records(study: optuna.Study) -> dict[str, TrialRecord]:
    """Each reference's completed trial by name (the latest, if it was re-run)."""
    return {r.reference: r for r in records(study, _complete()) if r.reference}


# -- what export deploys ----------------------------------------------------------------------------------------

SIMPLEST_RULE = (
    "among the confirmed configs whose mean lies within the winner's 95% interval (mean ± CI), the one that "
    "overrides the fewest of SGLang's defaults, ties to the better bound"
)


@dataclass(frozen=True)
class ExportChoice:
    """The trial export deploys: the winner, or a simpler confirmed config the re-runs cannot tell from it."""

    chosen: TrialRecord
    winner: TrialRecord
    why: str | None = None  # why ``chosen`` stands in for ``winner`` (None: it is the winner)


def overridden(r: TrialRecord, defaults: Mapping[str, Any]) -> list[str]:
    """The flags ``r`` sets otherwise than SGLang's defaults (``defaults``: the baseline's flags, i.e. the
    space's fixed ones); the tuner's own flags and switches left off do not count."""
    return [
        name
        for name, value in r.flag_values.items()
        if name not in TUNER_FLAGS and value != defaults.get(name, False if value is False else None)
    ]


def export_choice(study: optuna.Study) -> ExportChoice:
    """The config to deploy. Without confirmation, the best trial. After it, by vLLM's recipe sweeps' rule: a config
    whose re-runs fall within the winner's 95% interval is as good as the re-runs can tell, and every flag it does
    not override is one less thing to carry across SGLang versions, so the one overriding the fewest flags is
    deployed (the winner itself when nothing simpler qualifies)."""
    winner = best_record(study)
    sr = StudyRecord.of(study)
    won = sr.confirmed(winner.number) if winner.number is not None else None
    if won is None or won.failure or won.mean is None or won.ci95 is None:
        return ExportChoice(winner, winner)
    low, high = won.mean - won.ci95, won.mean + won.ci95
    # The baseline's flags are the defaults, whether its numbers were recorded or modelled.
    base = next((r for r in records(study, _complete()) if r.baseline), None)
    defaults = base.flag_values if base is not None else {}
    # Confirmations are stored best bound first: the position breaks a tie in favour of the better bound.
    candidates = []
    for position, (number, c) in enumerate((sr.confirmations or {}).items()):
        if c.failure or c.mean is None or not low <= c.mean <= high:
            continue
        r = TrialRecord.of(study.trials[number])
        if r.is_feasible and r.flags is not None:
            candidates.append((len(overridden(r, defaults)), position, r, c))
    simplest = min(candidates, key=lambda x: x[:2], default=None)
    if simplest is None or simplest[2].number == winner.number:
        return ExportChoice(winner, winner)
    count, _, chosen, c = simplest
    assert c.mean is not None
    kept = ", ".join(overridden(chosen, defaults)) or "none: SGLang's defaults"
    why = (
        f"trial {chosen.number} ({chosen.role}) stands in for the winner, trial {winner.number}: its confirmed "
        f"{c.metric} {c.mean:.2f} lies within the winner's 95% interval {low:.2f} to {high:.2f} "
        f"({won.mean:.2f} ± {won.ci95:.2f}), and it overrides {count} flag(s) ({kept}) where the winner overrides "
        f"{len(overridden(winner, defaults))} ({', '.join(overridden(winner, defaults))}). Rule: {SIMPLEST_RULE}."
    )
    return ExportChoice(chosen, winner, why)
