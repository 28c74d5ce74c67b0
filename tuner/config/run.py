"""The run file: one YAML file that describes a whole tuning run, so that it can be repeated.

Command-line options override it. Every key is checked against the schema below (schemas/run.schema.json is
generated from it): a typo or a wrong type is an error that names the file, line and key, not a default silently
used. Relative paths in a run file are relative to the run file's folder, and so are the default storage
(studies/<study>.db) and trials folder: a run file finds its study from any folder. Paths given on the command
line are relative to the current folder.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from tuner.bench.metrics import LevelResult
from tuner.bench.request_log import RequestLogError, log_traffic
from tuner.bench.workload import SLO, Level, LoadSearch, SharedPrefix, Workload
from tuner.config.references import BUILTIN, ReferenceConfig
from tuner.config.schema import Strict, strict_dataclass, validated
from tuner.config.yamlfile import YamlDocument, load_mapping
from tuner.errors import TunerError


class ConfigError(TunerError, ValueError):
    pass


# Metrics without _ms whose lower values are better: an SLO may limit them too.
LOWER_IS_BETTER = ("failed", "short_outputs", "duration_s")
# The SLO-goodput objective: request_goodput at the highest request rate that holds the SLO
# (tuner/bench/load_search.py).
GOODPUT = "goodput"
if TYPE_CHECKING:  # a Literal computed from LevelResult's fields is pydantic's to check; to mypy each is a str
    Metric = str
    ObjectiveMetric = str
else:
    # bench_serving's numbers per level, the names objectives and SLOs are given in.
    Metric = Literal[
        tuple(
            f.name
            for f in dataclasses.fields(LevelResult)
            if f.name
            not in ("concurrency", "input_len", "output_len", "request_rate", "repeat", "num_prompts", "errors")
        )
    ]
    ObjectiveMetric = Literal[(GOODPUT, *Metric.__args__)]
PositiveInt = Annotated[int, Field(ge=1)]
if TYPE_CHECKING:  # to mypy the field holds the dataclass itself, as it does once pydantic has checked its keys
    SharedPrefixField = SharedPrefix
    LoadSearchField = LoadSearch
else:
    SharedPrefixField = strict_dataclass(SharedPrefix)
    LoadSearchField = strict_dataclass(LoadSearch)


def _command(value: Any) -> Any:
    """``--server-command "python -m sglang.launch_server"`` or a YAML list."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"{value!r}: {str(exc).lower()}") from None
    return value


def _index_list(value: Any) -> Any:
    """``--gpus 0,1`` (or ``gpus: 0``) as the list of indices it means."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"expected whole numbers separated by commas (e.g. 0,1), got {value!r}") from None
    return value


def _env(value: Any) -> Any:
    """``OMP_NUM_THREADS: 10`` means the string "10"; true/false would be ambiguous ("True"? "1"?)."""
    if isinstance(value, dict):
        return {k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in value.items()}
    return value


def _plain_name(value: str) -> str:
    if not value or any(ch in value for ch in "/\\ ") or value.startswith("."):
        raise ValueError(f"{value!r} must be a plain name (letters, digits, - and _)")
    return value


def _distinct(value: list[int]) -> list[int]:
    if len(set(value)) != len(value):
        raise ValueError(f"{value} must be distinct NVML indices >= 0")
    return value


class ModelConfig(Strict):
    path: str = ""
    served_name: str | None = None


COMPILE_CACHE_DIR = "~/.cache/sglang-tuner/compile"


class LauncherConfig(Strict):
    kind: Literal["process", "docker", "replay"] = "process"
    # The command that starts SGLang; another venv's python or a wrapper script works too.
    command: Annotated[list[str], BeforeValidator(_command), Field(min_length=1)] = Field(
        default_factory=lambda: ["python", "-m", "sglang.launch_server"]
    )
    env: Annotated[dict[str, str], BeforeValidator(_env)] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(30000, ge=1, le=65535)
    startup_timeout_s: float = Field(600.0, gt=0)
    # Extra startup seconds when a flag is set: torch compile alone can take many minutes.
    startup_timeout_extra_s: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"enable-torch-compile": 1200.0}
    )
    # SGLang spends ~6 s draining on SIGTERM; a trial server holds nothing worth draining, so kill it sooner.
    stop_grace_s: float = Field(0.5, ge=0)
    # One folder of compiled kernels (triton, flashinfer, inductor, tvm-ffi JIT) shared by every trial on this
    # machine (tuner/serve/compile_cache.py); a variable launcher.env sets wins. Mounted at the same path in Docker.
    compile_cache: bool = True
    compile_cache_dir: str = COMPILE_CACHE_DIR
    # Process launcher, a `PYTHON -m MODULE` command: the next trial's interpreter does its imports (~20 s of
    # SGLang's startup) while this trial runs (tuner/serve/prestart.py).
    prestart: bool = True
    # With prestart: the processes SGLang spawns (scheduler, detokenizer) each on a stand-by that imported while
    # the trial before ran (tuner/serve/prestart_boot.py). Not named: on where prestart is.
    prestart_spawned: bool = True
    # Docker only
    image: str | None = None
    volumes: list[str] = Field(default_factory=list)
    hf_cache: str | None = None
    shm_size: str = "16g"
    gpu_runtime: bool = True
    # Replay only: a recorded surface (surfaces/*.json) that answers every trial instead of a server
    surface: str | None = None
    # Replay only: every sampled trial is a config the surface recorded (the sampler's proposal moved to the
    # nearest row not yet tried), so no answer is modelled: a recorded sweep replayed as the table it is.
    recorded_only: bool = False

    @model_validator(mode="before")
    @classmethod
    def _spawned_follows_prestart(cls, data: object) -> object:
        # `prestart: false` alone turns the stand-bys off too (they start beside the prestarted interpreter).
        if isinstance(data, dict) and "prestart_spawned" not in data and data.get("prestart") is False:
            return {**data, "prestart_spawned": False}
        return data

    @model_validator(mode="after")
    def _docker_needs_image(self) -> LauncherConfig:
        if self.kind == "docker" and not self.image:
            raise ValueError("image: the docker launcher needs an image (tag or digest)")
        if self.kind == "replay" and not self.surface:
            raise ValueError("surface: the replay launcher needs a recorded surface (surfaces/*.json)")
        if self.prestart_spawned and not self.prestart:
            raise ValueError("prestart_spawned: stand-bys start beside a prestarted interpreter; set prestart: true")
        if self.recorded_only and self.kind != "replay":
            raise ValueError(f"recorded_only: only a replay answers from recorded rows; launcher kind is {self.kind}")
        return self


class ArrivalConfig(Strict):
    process: Literal["poisson", "gamma"] = "poisson"  # gamma: bench_serving --burstiness
    burstiness: float = Field(1.0, gt=0)


DATASETS = ("random", "shared-prefix", "sharegpt", "request-log")
# What a request-log workload takes from the log instead (tuner/bench/request_log.py): the keys are refused with it.
FROM_THE_LOG = ("input_len", "output_len", "range_ratio", "preset", "shared_prefix", "arrival")


class WorkloadConfig(Strict):
    input_len: PositiveInt = 512
    output_len: PositiveInt = 128
    concurrency: Annotated[list[PositiveInt], BeforeValidator(_index_list), Field(min_length=1)] = Field(
        default_factory=lambda: [1, 16, 64]
    )
    num_prompts: PositiveInt | None = None  # per level; default: enough for a steady state at that concurrency
    request_rate: Annotated[float, Field(gt=0)] | None = None
    preset: Literal["seed-response-time", "seed-concurrency"] | None = None
    endpoint: Literal["completions", "chat", "generate"] = "completions"
    prompt_kind: Literal["ids", "text", "dataset"] = "ids"
    # random (default) | shared-prefix | sharegpt or request-log (with path); a file path: sharegpt
    dataset: str | None = None
    path: str | None = None  # the sharegpt file, or the request log (OpenAI-format JSONL or SGLang's JSON log)
    range_ratio: float = Field(1.0, ge=0, le=1)  # bench_serving --random-range-ratio
    shared_prefix: SharedPrefixField | None = None
    arrival: ArrivalConfig = Field(default_factory=ArrivalConfig)
    warmup_requests: int = Field(2, ge=0)
    # Before the first measured level: bursts at its batch size until two bursts' median TTFT and ITL agree
    # within warmup_tolerance, at most warmup_max_s (kernels built on first use are built before measuring).
    warmup_until_stable: bool = True
    warmup_tolerance: float = Field(0.2, gt=0)
    warmup_max_s: float = Field(60.0, gt=0)
    flush_cache: bool = True
    seed: int = 1
    request_timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        if self.dataset == "sharegpt" and not self.path:
            raise ValueError("path: dataset sharegpt needs the file, e.g. path: ShareGPT_V3.json")
        if self.dataset == "request-log":
            if not self.path:
                raise ValueError("path: dataset request-log needs the log, e.g. path: requests.jsonl")
            given = [k for k in FROM_THE_LOG if k in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{given[0]}: a request-log workload takes lengths and arrivals from the log (rates from "
                    f"request_rate or the load search): remove {', '.join(given)}"
                )
            if self.prompt_kind == "dataset":
                raise ValueError("prompt_kind: a request-log workload sends token ids or text (ids | text)")
            # the rest checked as any workload of this prompt kind and endpoint; the log itself before launch
            self.model_copy(update={"dataset": None, "path": None}).build(SLO()).validate()
            return self
        if self.path and self.dataset != "sharegpt":
            raise ValueError("path: only read with dataset: sharegpt or request-log")
        if (self.dataset == "shared-prefix") != (self.shared_prefix is not None):
            raise ValueError("dataset: shared-prefix goes with a shared_prefix: {groups: ..., ...} mapping")
        if self.arrival.process == "poisson" and self.arrival.burstiness != 1.0:
            raise ValueError(
                f"arrival: burstiness {self.arrival.burstiness:g} means gamma arrivals: write process: gamma"
            )
        self.build(SLO()).validate()  # its ValueErrors (chat with token ids, ...) are schema errors here
        return self

    def build(self, slo: SLO) -> Workload:
        from tuner.bench import workload as wl

        if self.shared_prefix is not None:
            sp = self.shared_prefix
            levels = tuple(
                Level(c, sp.input_len, sp.output_len, self.num_prompts or default_prompts(c), self.request_rate)
                for c in self.concurrency
            )
        elif self.request_log_path is not None:
            # a level's nominal lengths (records, the KV check) are the log's means; each request has its own
            t = log_traffic(self.request_log_path)
            mean_in, mean_out = round(float(t.input_lens.mean())), round(float(t.output_lens.mean()))
            levels = tuple(
                Level(c, mean_in, mean_out, self.num_prompts or default_prompts(c), self.request_rate)
                for c in self.concurrency
            )
        elif self.preset == "seed-response-time":
            levels = wl.seed_response_time()
        elif self.preset == "seed-concurrency":
            levels = wl.seed_concurrency(self.input_len, self.output_len)
        else:
            levels = tuple(
                Level(c, self.input_len, self.output_len, self.num_prompts or default_prompts(c), self.request_rate)
                for c in self.concurrency
            )
        return Workload(
            levels=levels,
            endpoint=self.endpoint,
            prompt_kind="dataset" if self.sharegpt_path else self.prompt_kind,
            dataset=self.sharegpt_path,
            seed=self.seed,
            warmup_requests=self.warmup_requests,
            stable_warmup=wl.StableWarmup(self.warmup_tolerance, self.warmup_max_s)
            if self.warmup_until_stable
            else None,
            flush_cache=self.flush_cache,
            slo=slo,
            request_timeout_s=self.request_timeout_s,
            range_ratio=self.range_ratio,
            burstiness=self.arrival.burstiness,
            shared_prefix=self.shared_prefix,
            request_log=self.request_log_path,
        )

    @property
    def sharegpt_path(self) -> str | None:
        # ``dataset: <file>`` is how earlier run files named a ShareGPT file: still accepted.
        if self.dataset is not None and self.dataset not in DATASETS:
            return self.dataset
        return self.path if self.dataset == "sharegpt" else None

    @property
    def request_log_path(self) -> str | None:
        return self.path if self.dataset == "request-log" else None


def default_prompts(concurrency: int) -> int:
    # Four waves at full concurrency: the first and last are ramp-up and drain, the middle ones are steady.
    return max(4 * concurrency, 8)


class ObjectiveConfig(Strict):
    # bench_serving metric names; *_ms metrics are minimised, the rest maximised.
    metrics: Annotated[list[ObjectiveMetric], Field(min_length=1, max_length=2)] = Field(
        default_factory=lambda: ["output_throughput"]
    )
    at_concurrency: PositiveInt | None = None  # the level the objective is read at; default: the highest concurrency
    # Limits, e.g. {p99_ttft_ms: 2000, median_tpot_ms: 50}; a limit of 0 or below could never be met.
    slo: dict[Metric, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    max_gpu_memory_fraction: Annotated[float, Field(gt=0, le=1)] | None = None  # peak used / total, e.g. 0.97
    early_stop: bool = True  # skip later levels once an SLO is broken or the config is clearly worse
    load_search: LoadSearchField | None = None  # with metrics [goodput]

    @model_validator(mode="after")
    def _consistent(self) -> ObjectiveConfig:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics: {self.metrics[0]} twice; one metric, or two different ones for a Pareto front")
        for metric in map(str, self.slo):
            # A limit is a maximum, checked at every level (and the load search assumes more load only makes it
            # harder to hold): a minimum on a throughput would fail at the lowest load by design, so refuse it.
            if not (metric.endswith("_ms") or metric in LOWER_IS_BETTER):
                raise ValueError(
                    f"slo.{metric}: an SLO limit is a maximum, and {metric} is higher-is-better (a minimum would "
                    f"fail at the lowest load level); limit a latency instead (p99_ttft_ms, median_tpot_ms, ...) "
                    f"and put {metric} in objective.metrics to maximise it"
                )
        if GOODPUT in self.metrics:
            if len(self.metrics) != 1:
                raise ValueError("metrics: goodput is a single objective: metrics: [goodput]")
            if not self.slo:
                raise ValueError("slo: goodput needs an SLO, e.g. slo: {p99_ttft_ms: 2000, p99_tpot_ms: 50}")
            search = self.search
            assert search is not None  # the objective is goodput
            try:
                search.validate()
            except ValueError as exc:
                raise ValueError(f"load_search: {exc}") from None
        elif self.load_search is not None:
            raise ValueError("load_search: only used with metrics: [goodput]")
        return self

    def request_slo(self) -> SLO:
        """The per-request limits that goodput counts against (bench_serving's --goodput), from the slo keys."""
        return SLO(
            ttft_ms=self.slo.get("p99_ttft_ms") or self.slo.get("median_ttft_ms"),
            tpot_ms=self.slo.get("median_tpot_ms") or self.slo.get("p99_tpot_ms"),
        )

    @property
    def search(self) -> LoadSearch | None:
        """The load search when the objective is goodput, else None (fixed concurrency levels)."""
        return (self.load_search or LoadSearch()) if GOODPUT in self.metrics else None


class SamplerConfig(Strict):
    # defaults-walk: from SGLang's defaults, one flag per trial, keeping what improves; sobol: a quasi-random
    # start. Both hand over to TPE after n_startup_trials (benchmarks/SAMPLERS.md compares them).
    name: Literal["tpe", "random", "gp", "defaults-walk", "sobol"] = "tpe"
    seed: int | None = 0
    n_startup_trials: int = Field(8, ge=0)
    # A surface of an earlier study (tune record) of the same model or GPU: its best configs, as far as this
    # space can draw them, are this study's first sampled trials (measured here, so they count as launches).
    warm_start: str | None = None


class ConfirmConfig(Strict):
    """Re-run the top trials (and the baseline and references) at the end of a study; rank by the 95% bound."""

    top: int = Field(3, ge=0)
    repeats: int = Field(3, ge=2)  # an interval needs two runs


class RunConfig(Strict):
    study: Annotated[str, AfterValidator(_plain_name)] = "default"
    storage: str | None = None  # default: sqlite:///studies/<study>.db beside the run file
    trials_dir: str = "trials"
    space: str = "search_spaces/default.yaml"
    trials: PositiveInt = 40  # the budget: launched trials (those predicted to fail before launch take none)
    baseline: bool = True  # trial 0 runs SGLang's defaults (the space's fixed flags only)
    gpus: Annotated[
        list[Annotated[int, Field(ge=0)]], BeforeValidator(_index_list), Field(min_length=1), AfterValidator(_distinct)
    ] = Field(default_factory=lambda: [0])
    # Measure on GPUs that other processes hold too (opt-in: their numbers are not a lone server's); each trial
    # records what else held its GPUs.
    gpus_shared: bool = False
    model: ModelConfig = Field(default_factory=ModelConfig)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    references: list[ReferenceConfig] = Field(default_factory=list)  # enqueued right after the baseline
    confirm: ConfirmConfig | None = Field(default_factory=ConfirmConfig)  # null: no re-runs at the end
    # RDB storages: a dead worker's trial is failed and retried after 2x this.
    heartbeat_s: Annotated[float, Field(ge=1)] | None = None
    artifacts: str | None = None  # artifact store folder; default: <trials_dir>/<study>/artifacts

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        w, o = self.workload, self.objective
        if o.search is not None:
            for key, value in (
                ("workload.request_rate", w.request_rate),
                ("workload.num_prompts", w.num_prompts),
                ("objective.at_concurrency", o.at_concurrency),
            ):
                if value is not None:
                    raise ValueError(
                        f"{key}: not used by the goodput objective, whose load_search sets rates and "
                        f"level sizes: remove it"
                    )
        if o.at_concurrency is not None and o.at_concurrency not in w.concurrency:
            raise ValueError(f"objective.at_concurrency: {o.at_concurrency} is not one of {w.concurrency}")

        seen = set()
        for i, ref in enumerate(self.references):
            if not ref.name or ref.name in seen:
                raise ValueError(f"references[{i}].name: give each reference a distinct name (e.g. seed-balanced-v2)")
            seen.add(ref.name)
            if not ref.flags and ref.name not in BUILTIN:
                raise ValueError(
                    f"references[{i}]: {ref.name!r} has no flags and is not a built-in reference "
                    f"({', '.join(sorted(BUILTIN))})"
                )
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.study}.db"

    @property
    def study_dir(self) -> Path:
        return Path(self.trials_dir) / self.study

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# Keys whose relative paths mean "beside the run file" when the run file gives them.
PATH_KEYS = (
    ("space",),
    ("trials_dir",),
    ("artifacts",),
    ("storage",),
    ("workload", "dataset"),
    ("workload", "path"),
    ("launcher", "hf_cache"),
    ("launcher", "compile_cache_dir"),
    ("launcher", "surface"),
    ("sampler", "warm_start"),
)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None, *, check: bool = True) -> RunConfig:
    """``check=False`` for commands that only read a study (status, export, report): they need no model."""
    doc: YamlDocument | None = None
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        doc = load_mapping(
            path,
            ConfigError,
            "run file",
            "a run file is a mapping (study, model, launcher, space, workload, ...)",
            directory_hint=f"give the run file's path, e.g. {path / 'run.yaml'}",
            empty_is_mapping=True,  # every key may come from the command line
        )
        raw = _beside(doc.data, path.parent)
    given = [tuple(dotted.split(".")) for dotted, value in (overrides or {}).items() if value is not None]
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[leaf] = value

    def from_file(loc) -> bool:
        return not any(loc[: len(o)] == o for o in given)

    config = validated(RunConfig, raw, doc, ConfigError, from_file)
    if path is not None:  # a run file's study and trials live beside it unless it says otherwise
        if config.storage is None:
            config.storage = "sqlite:///" + _join(path.parent, f"studies/{config.study}.db")
        if "trials_dir" not in raw:
            config.trials_dir = _join(path.parent, "trials")
    if check:
        _check(config)
    return config


def _beside(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The run file's relative paths, made relative to the current folder instead of the run file's."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for keys in PATH_KEYS:
        *parents, leaf = keys
        node = raw
        for p in parents:
            child = node.get(p)
            node = child if isinstance(child, dict) else {}
        value = node.get(leaf)
        if not isinstance(value, str) or not value or (leaf == "dataset" and value in DATASETS):
            continue
        if leaf == "storage":
            prefix = "sqlite:///"
            file = value[len(prefix) :]
            if value.startswith(prefix) and file and not file.startswith(("/", ":memory:")):
                node[leaf] = prefix + _join(folder, file)
        elif not value.startswith(("/", "~")):
            node[leaf] = _join(folder, value)
    return raw


def _join(folder: Path, relative: str) -> str:
    return os.path.normpath(folder / relative)


Direction = Literal["minimize", "maximize"]


def direction(metric: str) -> Direction:
    return "minimize" if metric.endswith("_ms") else "maximize"


def _check(c: RunConfig) -> None:
    """What a run needs beyond a well-formed file: a model, and files that exist."""
    if c.launcher.kind == "replay" and not (c.launcher.surface and Path(c.launcher.surface).is_file()):
        raise ConfigError(f"launcher.surface: {c.launcher.surface}: no such file")
    if c.sampler.warm_start and not Path(c.sampler.warm_start).is_file():
        raise ConfigError(
            f"sampler.warm_start: {c.sampler.warm_start}: no such file (a surface, as `tune record --out` writes)"
        )
    if not c.model.path and c.launcher.kind != "replay":  # a replay serves the surface's model
        raise ConfigError("model.path: which model to serve? (--model or model: {path: ...} in the run file)")
    path = c.workload.sharegpt_path
    where = "workload.path" if c.workload.dataset == "sharegpt" else "workload.dataset"
    if path and not Path(path).is_file():
        raise ConfigError(f"{where}: {path}: no such file (workload.dataset is random, shared-prefix or sharegpt)")
    if path:
        from tuner.bench.workload import DatasetError, read_dataset

        try:
            read_dataset(path)  # read and checked now, before any launch; kept for the trials
        except DatasetError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    log = c.workload.request_log_path
    if log:
        if not Path(log).is_file():
            raise ConfigError(f"workload.path: {log}: no such file (the request log of dataset request-log)")
        try:
            log_traffic(log)  # read and checked now, before any launch; kept for the trials
        except RequestLogError as exc:
            raise ConfigError(f"workload.path: {exc}") from None
