"""The run file: one YAML file that describes a whole tuning run, so that it can be repeated.

Command-line options override it. Every key is checked: a typo is an error that names the key, not a default
silently used.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.workload import SLO, Level, LoadSearch, SharedPrefix, Workload


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    path: str = ""
    served_name: str | None = None


@dataclass
class LauncherConfig:
    kind: str = "process"  # process | docker | replay
    # The command that starts SGLang; another venv's python or a wrapper script works too.
    command: list[str] = field(default_factory=lambda: ["python", "-m", "sglang.launch_server"])
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 30000
    startup_timeout_s: float = 600.0
    # Extra startup seconds when a flag is set: torch compile alone can take many minutes.
    startup_timeout_extra_s: dict[str, float] = field(default_factory=lambda: {"enable-torch-compile": 1200.0})
    # SGLang spends ~6 s draining on SIGTERM; a trial server holds nothing worth draining, so kill it sooner.
    stop_grace_s: float = 0.5
    # Docker only
    image: str | None = None
    volumes: list[str] = field(default_factory=list)
    hf_cache: str | None = None
    shm_size: str = "16g"
    gpu_runtime: bool = True
    # Replay only: a recorded surface (surfaces/*.json) that answers every trial instead of a server
    surface: str | None = None


@dataclass
class ArrivalConfig:
    process: str = "poisson"  # poisson | gamma (bench_serving --burstiness)
    burstiness: float = 1.0


DATASETS = ("random", "shared-prefix", "sharegpt")


@dataclass
class WorkloadConfig:
    input_len: int = 512
    output_len: int = 128
    concurrency: list[int] = field(default_factory=lambda: [1, 16, 64])
    num_prompts: int | None = None  # per level; default: enough for a steady state at that concurrency
    request_rate: float | None = None
    preset: str | None = None  # seed-response-time | seed-concurrency
    endpoint: str = "completions"
    prompt_kind: str = "ids"
    dataset: str | None = None  # random (default) | shared-prefix | sharegpt (with path); a file path: sharegpt
    path: str | None = None  # the sharegpt file
    range_ratio: float = 1.0  # bench_serving --random-range-ratio
    shared_prefix: SharedPrefix | None = None
    arrival: ArrivalConfig = field(default_factory=ArrivalConfig)
    warmup_requests: int = 2
    flush_cache: bool = True
    seed: int = 1
    request_timeout_s: float = 300.0

    def build(self, slo: SLO) -> Workload:
        from tuner import workload as wl

        if self.shared_prefix is not None:
            sp = self.shared_prefix
            levels = tuple(Level(c, sp.input_len, sp.output_len, self.num_prompts or default_prompts(c),
                                 self.request_rate) for c in self.concurrency)
        elif self.preset == "seed-response-time":
            levels = wl.seed_response_time().levels
        elif self.preset == "seed-concurrency":
            levels = wl.seed_concurrency(self.input_len, self.output_len).levels
        elif self.preset is None:
            levels = tuple(
                Level(c, self.input_len, self.output_len, self.num_prompts or default_prompts(c), self.request_rate)
                for c in self.concurrency
            )
        else:
            raise ConfigError(f"workload.preset: unknown preset {self.preset!r} (seed-response-time, seed-concurrency)")
        return Workload(
            levels=levels,
            endpoint=self.endpoint,
            prompt_kind="dataset" if self.sharegpt_path else self.prompt_kind,
            dataset=self.sharegpt_path,
            seed=self.seed,
            warmup_requests=self.warmup_requests,
            flush_cache=self.flush_cache,
            slo=slo,
            request_timeout_s=self.request_timeout_s,
            range_ratio=self.range_ratio,
            burstiness=self.arrival.burstiness,
            shared_prefix=self.shared_prefix,
        )

    @property
    def sharegpt_path(self) -> str | None:
        # ``dataset: <file>`` is how earlier run files named a ShareGPT file: still accepted.
        if self.dataset is not None and self.dataset not in DATASETS:
            return self.dataset
        return self.path if self.dataset == "sharegpt" else None


def default_prompts(concurrency: int) -> int:
    # Four waves at full concurrency: the first and last are ramp-up and drain, the middle ones are steady.
    return max(4 * concurrency, 8)


@dataclass
class ObjectiveConfig:
    # bench_serving metric names; *_ms metrics are minimised, the rest maximised.
    metrics: list[str] = field(default_factory=lambda: ["output_throughput"])
    at_concurrency: int | None = None  # the level the objective is read at; default: the highest concurrency
    slo: dict[str, float] = field(default_factory=dict)  # e.g. {p99_ttft_ms: 2000, median_tpot_ms: 50}
    max_gpu_memory_fraction: float | None = None  # peak used / total, e.g. 0.97
    early_stop: bool = True  # skip later levels once an SLO is broken or the config is clearly worse
    load_search: LoadSearch | None = None  # with metrics [goodput]; default LoadSearch()

    def request_slo(self) -> SLO:
        """The per-request limits that goodput counts against (bench_serving's --goodput), from the slo keys."""
        return SLO(ttft_ms=self.slo.get("p99_ttft_ms") or self.slo.get("median_ttft_ms"),
                   tpot_ms=self.slo.get("median_tpot_ms") or self.slo.get("p99_tpot_ms"))

    @property
    def search(self) -> LoadSearch | None:
        """The load search when the objective is goodput, else None (fixed concurrency levels)."""
        return (self.load_search or LoadSearch()) if GOODPUT in self.metrics else None


# The SLO-goodput objective: request_goodput at the highest request rate that holds the SLO (tuner/load_search.py).
GOODPUT = "goodput"


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe | random | gp
    seed: int | None = 0
    n_startup_trials: int = 8


@dataclass
class ReferenceConfig:
    """A hand-tuned config run beside SGLang's defaults: flags over the space's fixed ones, or a built-in name."""

    name: str = ""
    flags: dict[str, Any] = field(default_factory=dict)  # SGLang flag names without dashes; empty: a built-in


@dataclass
class ConfirmConfig:
    """Re-run the top trials (and the baseline and references) at the end of a study; rank by the 95% bound."""

    top: int = 3
    repeats: int = 3


@dataclass
class RunConfig:
    study: str = "default"
    storage: str | None = None  # default: sqlite:///studies/<study>.db
    trials_dir: str = "trials"
    space: str = "search_spaces/default.yaml"
    trials: int = 40
    baseline: bool = True  # trial 0 runs SGLang's defaults (the space's fixed flags only)
    gpus: list[int] = field(default_factory=lambda: [0])
    # Measure on GPUs that other processes hold too (opt-in: their numbers are not a lone server's); each trial
    # records what else held its GPUs.
    gpus_shared: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    references: list[ReferenceConfig] = field(default_factory=list)  # enqueued right after the baseline
    confirm: ConfirmConfig | None = field(default_factory=ConfirmConfig)  # null: no re-runs at the end
    heartbeat_s: float | None = None  # RDB storages: a dead worker's trial is failed and retried after 2x this
    artifacts: str | None = None  # artifact store folder; default: <trials_dir>/<study>/artifacts

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.study}.db"

    @property
    def study_dir(self) -> Path:
        return Path(self.trials_dir) / self.study

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None, *, check: bool = True) -> RunConfig:
    """``check=False`` for commands that only read a study (status, export, report): they need no model."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such run file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a run file is a mapping (study, model, launcher, space, workload, ...)")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    config = _build(RunConfig, raw, "")
    if check:
        _check(config)
    return config


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'run file'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        path = f"{where}.{key}" if where else str(key)
        if name not in names:
            raise ConfigError(f"{path}: unknown key (expected one of {', '.join(sorted(names))})")
        kwargs[name] = _coerce(hints[name], value, path)
    return cls(**kwargs)


def _coerce(hint, value, path):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            return shlex.split(value)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and args[0] is int:
            try:
                value = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
            except ValueError:
                raise ConfigError(f"{path}: expected whole numbers separated by commas (e.g. 0,1), "
                                  f"got {value!r}") from None
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):  # YAML's yes/no/true: int(True) is 1, which nobody means
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if hint is float and not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        if hint is int and number != float(value):
            raise ConfigError(f"{path}: expected a whole number, got {value!r}")
        return number
    if hint is str:
        return str(value)
    return value


def direction(metric: str) -> str:
    return "minimize" if metric.endswith("_ms") else "maximize"


def _check(c: RunConfig) -> None:
    from tuner.metrics import LevelResult

    metric_names = {f.name for f in dataclasses.fields(LevelResult)}
    if c.trials < 1:
        raise ConfigError(f"trials: must be at least 1, got {c.trials}")
    if not c.study or any(ch in c.study for ch in "/\\ ") or c.study.startswith("."):
        raise ConfigError(f"study: {c.study!r} must be a plain name (letters, digits, - and _)")
    if not c.gpus:
        raise ConfigError("gpus: give at least one GPU index, e.g. --gpus 0")
    if any(g < 0 for g in c.gpus) or len(set(c.gpus)) != len(c.gpus):
        raise ConfigError(f"gpus: {c.gpus} must be distinct NVML indices >= 0")
    if not c.model.path and c.launcher.kind != "replay":  # a replay serves the surface's model
        raise ConfigError("model.path: which model to serve? (--model or model: {path: ...} in the run file)")
    if c.launcher.kind not in ("process", "docker", "replay"):
        raise ConfigError(f"launcher.kind: {c.launcher.kind!r} is not process, docker or replay")
    if c.launcher.kind == "replay" and not c.launcher.surface:
        raise ConfigError("launcher.surface: the replay launcher needs a recorded surface (surfaces/*.json)")
    if c.launcher.kind == "replay" and not Path(c.launcher.surface).is_file():
        raise ConfigError(f"launcher.surface: {c.launcher.surface}: no such file")
    if c.launcher.kind == "docker" and not c.launcher.image:
        raise ConfigError("launcher.image: the docker launcher needs an image (tag or digest)")
    if not c.launcher.command:
        raise ConfigError("launcher.command: empty; the default is python -m sglang.launch_server")
    if not 1 <= c.launcher.port <= 65535:
        raise ConfigError(f"launcher.port: {c.launcher.port} is not a TCP port")
    if not 1 <= len(c.objective.metrics) <= 2:
        raise ConfigError("objective.metrics: one metric, or two for a Pareto front")
    for m in [*(m for m in c.objective.metrics if m != GOODPUT), *c.objective.slo]:
        if m not in metric_names or m in ("concurrency", "input_len", "output_len", "repeat"):
            close = difflib.get_close_matches(m, sorted(metric_names), 3, 0.5) or \
                sorted(n for n in metric_names if m.split("_")[-1] in n)[:3]
            raise ConfigError(f"objective: {m!r} is not a bench_serving metric (e.g. {', '.join(close) or 'output_throughput'})")
    _check_workload_shape(c)
    levels = c.workload.concurrency
    if not levels or any(x < 1 for x in levels):
        raise ConfigError(f"workload.concurrency: {levels} must be positive integers")
    if c.objective.at_concurrency is not None and c.objective.at_concurrency not in levels:
        raise ConfigError(f"objective.at_concurrency: {c.objective.at_concurrency} is not one of {levels}")
    if c.workload.input_len < 1 or c.workload.output_len < 1:
        raise ConfigError("workload: input_len and output_len must be at least 1")
    for name in ("num_prompts", "request_rate", "request_timeout_s"):
        value = getattr(c.workload, name)
        if value is not None and value <= 0:
            raise ConfigError(f"workload.{name}: must be above 0, got {value:g}")
    if c.workload.warmup_requests < 0:
        raise ConfigError(f"workload.warmup_requests: must be 0 or more, got {c.workload.warmup_requests}")
    try:
        c.workload.build(SLO()).validate()
    except ConfigError:
        raise
    except ValueError as exc:  # endpoint, prompt_kind and their combinations
        raise ConfigError(f"workload: {exc}") from None
    if c.launcher.startup_timeout_s <= 0 or c.launcher.stop_grace_s < 0:
        raise ConfigError("launcher: startup_timeout_s must be above 0 and stop_grace_s 0 or more")
    if c.heartbeat_s is not None and c.heartbeat_s < 1:
        raise ConfigError(f"heartbeat_s: {c.heartbeat_s:g} must be at least 1 second")
    path = c.workload.sharegpt_path
    if path and not Path(path).is_file():
        where = "workload.path" if c.workload.dataset == "sharegpt" else "workload.dataset"
        raise ConfigError(f"{where}: {path}: no such file (workload.dataset is random, shared-prefix or sharegpt)")
    frac = c.objective.max_gpu_memory_fraction
    if frac is not None and not 0 < frac <= 1:
        raise ConfigError(f"objective.max_gpu_memory_fraction: {frac} must be in (0, 1]")
    _check_references(c)
    if c.confirm is not None and (c.confirm.top < 0 or c.confirm.repeats < 2):
        raise ConfigError(f"confirm: top must be 0 or more and repeats at least 2 (an interval needs two runs), "
                          f"got top {c.confirm.top}, repeats {c.confirm.repeats}")
    if c.sampler.name not in ("tpe", "random", "gp"):
        raise ConfigError(f"sampler.name: {c.sampler.name!r} is not tpe, random or gp")



def _check_workload_shape(c: RunConfig) -> None:
    w, o = c.workload, c.objective
    if w.dataset == "sharegpt" and not w.path:
        raise ConfigError("workload.path: dataset sharegpt needs the file, e.g. path: ShareGPT_V3.json")
    if w.path and w.dataset != "sharegpt":
        raise ConfigError("workload.path: only read with dataset: sharegpt")
    if (w.dataset == "shared-prefix") != (w.shared_prefix is not None):
        raise ConfigError("workload: dataset: shared-prefix goes with a shared_prefix: {groups: ..., ...} mapping")
    if w.arrival.process not in ("poisson", "gamma"):
        raise ConfigError(f"workload.arrival.process: {w.arrival.process!r} is not poisson or gamma")
    if w.arrival.process == "poisson" and w.arrival.burstiness != 1.0:
        raise ConfigError(f"workload.arrival: burstiness {w.arrival.burstiness:g} means gamma arrivals: "
                          "write process: gamma")
    if GOODPUT in o.metrics:
        if len(o.metrics) != 1:
            raise ConfigError("objective.metrics: goodput is a single objective: metrics: [goodput]")
        if not o.slo:
            raise ConfigError("objective.slo: goodput needs an SLO, e.g. slo: {p99_ttft_ms: 2000, p99_tpot_ms: 50}")
        for key, value in (("workload.request_rate", w.request_rate), ("workload.num_prompts", w.num_prompts),
                           ("objective.at_concurrency", o.at_concurrency)):
            if value is not None:
                raise ConfigError(f"{key}: not used by the goodput objective, whose load_search sets rates and "
                                  "level sizes: remove it")
        try:
            o.search.validate()
        except ValueError as exc:
            raise ConfigError(f"objective.load_search: {exc}") from None
    elif o.load_search is not None:
        raise ConfigError("objective.load_search: only used with metrics: [goodput]")


def _check_references(c: RunConfig) -> None:
    from tuner.references import BUILTIN

    seen = set()
    for i, ref in enumerate(c.references):
        where = f"references[{i}]"
        if not ref.name or ref.name in seen:
            raise ConfigError(f"{where}.name: give each reference a distinct name (e.g. seed-balanced-v2)")
        seen.add(ref.name)
        if not ref.flags and ref.name not in BUILTIN:
            raise ConfigError(f"{where}: {ref.name!r} has no flags and is not a built-in reference "
                              f"({', '.join(sorted(BUILTIN))})")
        for name, value in ref.flags.items():
            if name.startswith("-") or not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"{where}.flags.{name}: a flag name without dashes and one value "
                                  f"(true for a switch), got {value!r}")
