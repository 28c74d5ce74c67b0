"""Recorded surfaces: the real trials of a finished study in one JSON file, and a model that answers any config.

A surface is what a study measured on one GPU with one SGLang build: per trial, the flags as passed to SGLang,
bench_serving's metrics per concurrency level (the rows of its benchmark.csv) or its failure class, and the
seconds its startup, benchmark and stop took. The header names the model, GPU, SGLang version, workload and
objective, and carries that SGLang's flag catalog (its parsed ``--help``) so a replay validates search spaces
exactly as the real study did, with no SGLang installed. docs/surface-format.md documents the file and
schemas/surface.schema.json is its JSON Schema (tuner/trial/schema.py).

What the data cannot know may be absent (a surface imported from another tool's results, trial/importer.py):
the model, GPU, SGLang version, command, date, catalog, ISL/OSL, durations, metrics nobody measured.
``Surface.absent()`` names them, and every view of a replay says so rather than inventing them; without a
recorded catalog, the flags the rows set are the catalog (``Surface.flag_catalog``).

``Surface.answer`` replays a config: a recorded trial with the same flags is answered by its own row
(``modelled=False``); any other config by inverse-distance-weighted k-nearest neighbours over the recorded rows
(``modelled=True``, see ``Surface.answer`` for the distance). A weighted majority of failed neighbours predicts
a failure of the nearest failed neighbour's class. benchmarks/surface_model.py measures the model's
leave-one-out error.

A surface of an SLO-goodput study (the header's ``objective.load_search`` and ``slo``) keeps each trial's curve:
the levels of its load search, one per request rate measured. A replay runs the same search
(tuner.load_search.Search) and ``Answer.at_rate`` answers each rate it asks for from the curve (``curve_at``):
the recorded level at a recorded rate; between two recorded rates every number linear in the rate; above the
highest recorded rate that level's numbers when it broke the SLO (a higher rate breaks it too), else nothing
measured (NaN: the level fails); below the lowest, nothing measured. A config with no row of its own gets the
inverse-distance-weighted mean of its neighbours' curves at that rate.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from tuner.bench.load_search import best_level, broken
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import Level, LoadSearch
from tuner.errors import TunerError
from tuner.sglang.catalog import FlagCatalog, FlagInfo
from tuner.sglang.feasibility import ModelFacts
from tuner.sglang.flag_types import FLAG_TYPES
from tuner.sglang.flags import TUNER_FLAGS, FlagValue, format_value
from tuner.trial.files import write_whole
from tuner.trial.record import StudyRecord, records

if TYPE_CHECKING:
    import optuna

FORMAT = 1
# Run-file workload keys that change what a trial measures, beyond ISL, OSL and the concurrency levels.
SHAPE_KEYS = (
    "num_prompts",
    "request_rate",
    "preset",
    "endpoint",
    "prompt_kind",
    "dataset",
    "path",
    "range_ratio",
    "shared_prefix",
    "arrival",
)
NEIGHBOURS = 3
# bench_serving's numbers in a level, by LevelResult's names: what a surface may record (the rest say which level).
LEVEL_METRICS = tuple(
    f.name
    for f in fields(LevelResult)
    if f.name not in ("concurrency", "input_len", "output_len", "request_rate", "num_prompts", "repeat", "errors")
)
# Recorded numeric values spanning more than this ratio (cuda-graph batch sizes, chunk sizes) are compared on a
# log scale: 16 -> 32 is as far as 2048 -> 4096, and much farther than 128 -> 160.
LOG_SCALE_RATIO = 4.0
# Flag weights tried, per flag, when learning which flags matter (Surface.flag_weights).
WEIGHT_STEPS = (0.0, 0.25, 1.0, 4.0)


class SurfaceError(TunerError, ValueError):
    """A surface file or study that cannot be used; the message says which and why, in one line."""


class _Model(BaseModel):
    # NaN (a statistic with no sample) is written as the NaN Python's json reads back, not as null.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class RecordedWorkload(_Model):
    """The workload a surface's trials measured (bench.workload.Workload is the one a study runs)."""

    input_len: int | None = None  # None: not recorded, so a replay cannot check the run file's
    output_len: int | None = None
    concurrency: list[int]
    description: str = ""  # prompts, warm-up, cache flush: what a reader needs to compare surfaces
    # The run file's other workload keys that change the numbers (prompts, arrivals, shapes): a replay must match.
    shape: dict[str, Any] = {}


class RecordedObjective(_Model):
    """The objective a surface's trials were scored by (search.objective.Objective is the one a study uses)."""

    metrics: list[str]
    at_concurrency: int
    # The SLO-goodput objective's search and SLO: a replay must use the same ones (its verdicts are these).
    slo: dict[str, float] = {}
    load_search: LoadSearch | None = None


class Header(_Model):
    # What the data does not know may be absent (None): Surface.absent() names it and every view says so.
    model: str | None = None  # what a person calls it (Qwen/Qwen3-8B); model_path is what SGLang was given
    model_path: str | None = None
    gpu_name: str | None = None
    gpu_memory_mib: float | None = None  # None or 0: not recorded (no NVML)
    sglang_version: str | None = None
    command: list[str] | None = None  # how the recorded servers were started: deploy-best.sh of a replay uses it
    workload: RecordedWorkload
    objective: RecordedObjective
    date: str | None = None  # when the trials ran (ISO date)
    source: str  # the study (or document) the rows come from
    space: str = ""  # the search-space file the study sampled (benchmarks/sampler_efficiency.py samples it again)
    notes: str = ""
    catalog: list[FlagInfo] | None = None  # the recorded SGLang's --help, parsed
    # The level metrics the rows record (LevelResult's field names); None: all of them (`tune record`'s surfaces).
    # Any other is NaN in every level (0 for counts): not measured, never read as a number.
    metrics_recorded: list[str] | None = None
    # What the pre-launch checks read from the model's config.json (search/checks.py): a replay predicts from
    # these where the run file's model.path has none. An import may give only context_len (--context-length).
    model_facts: ModelFacts | None = None


class Row(_Model):
    trial: int  # the trial's number in its source study
    baseline: bool = False
    flags: dict[str, FlagValue]  # SGLang flag names without dashes, as passed; place flags left out
    levels: list[LevelResult] = []  # benchmark.csv, one entry per level run
    failure_class: str | None = None
    failure_detail: str = ""
    stopped_early: str | None = None
    startup_s: float | None = None  # None: not recorded (counted as 0 s of GPU time in a replay)
    benchmark_s: float | None = None
    stop_s: float | None = None
    # The launching process's imports (launch to SGLang's first log line): what a prestarted interpreter saves a
    # replayed trial (tuner/trial/replay.py). Part of startup_s, unless imports_ahead: the trial was prestarted and
    # they ran before its launch (then they are the interpreter's own count). None: not recorded.
    imports_s: float | None = None
    imports_ahead: bool = False
    # The imports of SGLang's first spawned process (its scheduler), as its stand-by measured them: what a stand-by
    # saves a replayed trial (launcher.prestart_spawned). Part of startup_s (its stand-by was not used), unless
    # spawn_ahead: the scheduler ran on its stand-by. None: not recorded (its trial had no stand-by).
    spawn_imports_s: float | None = None
    spawn_ahead: bool = False
    # The warm-up until stable latencies before its first level, part of benchmark_s: a replayed trial pays it once,
    # whatever number of levels its search runs (tuner/trial/replay.py). None: not recorded.
    warmup_s: float | None = None
    gpu_peak_used_mib: float | None = None  # NVML, over the whole trial

    @property
    def ok(self) -> bool:
        return self.failure_class is None

    @property
    def fresh_startup_s(self) -> float:
        """Its startup as a fresh launch would have had it: with the imports that ran ahead of it put back (what a
        replay takes off again where its own prestart and stand-bys would have run them). Not recorded: 0."""
        ahead = [(self.imports_ahead, self.imports_s), (self.spawn_ahead, self.spawn_imports_s)]
        return (self.startup_s or 0.0) + sum(s or 0.0 for on, s in ahead if on)


class Surface(_Model):
    format: int = FORMAT
    header: Header
    rows: list[Row]
    _weights: dict[str, float] | None = PrivateAttr(default=None)

    # -- files
    @classmethod
    def load(cls, path: str | Path) -> Surface:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SurfaceError(f"{path}: cannot read the surface ({exc.strerror})") from None
        try:
            surface = cls.model_validate_json(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SurfaceError(f"{path}: not a surface file ({where}: {err['msg']})") from None
        if surface.format != FORMAT:
            raise SurfaceError(f"{path}: surface format {surface.format}, this tuner reads format {FORMAT}")
        if not surface.rows:
            raise SurfaceError(f"{path}: the surface has no rows")
        if problem := surface.bad_number():
            raise SurfaceError(f"{path}: {problem}; fix or drop that row (a surface is `tune record`'s output)")
        return surface

    def bad_number(self) -> str | None:
        """The first number no measurement can give (negative, NaN where a statistic always has a value, infinite),
        named by its row and field; None when every number is one a run can record."""
        h = self.header
        if h.gpu_memory_mib is not None and not (math.isfinite(h.gpu_memory_mib) and h.gpu_memory_mib >= 0):
            return f"header.gpu_memory_mib: must be a number >= 0, got {h.gpu_memory_mib}"
        if h.model_facts is not None and h.model_facts.context_len < 1:
            return f"header.model_facts.context_len: must be a whole number >= 1, got {h.model_facts.context_len}"
        if unknown := sorted(set(h.metrics_recorded or ()) - set(LEVEL_METRICS)):
            return (
                f"header.metrics_recorded: {', '.join(unknown)}: not bench_serving metrics ({', '.join(LEVEL_METRICS)})"
            )
        for i, row in enumerate(self.rows):
            where = f"rows[{i}] (trial {row.trial})"
            for name in (
                "startup_s",
                "benchmark_s",
                "stop_s",
                "imports_s",
                "spawn_imports_s",
                "warmup_s",
                "gpu_peak_used_mib",
            ):
                if (problem := _bad(getattr(row, name), nan_ok=False)) is not None:
                    return f"{where}.{name}: {problem}"
            for ahead, seconds in (("imports_ahead", "imports_s"), ("spawn_ahead", "spawn_imports_s")):
                if getattr(row, ahead) and getattr(row, seconds) is None:
                    return f"{where}.{ahead}: true says {seconds} ran before the launch, but {seconds} is not recorded"
            for j, level in enumerate(row.levels):
                for f in fields(level):
                    value = getattr(level, f.name)
                    if f.name == "request_rate" and value is not None and math.isinf(value) and value > 0:
                        continue  # every request at once
                    # a latency statistic with no sample (no request completed, one-token outputs) is NaN, and so are
                    # a metric the surface does not record and the SLO attainment of a level that finished no request
                    # (one cut short before any did: tuner/bench/metrics.py)
                    nan_ok = (
                        f.name.endswith("_ms")
                        or not self.records(f.name)
                        or (f.name == "slo_attainment" and level.num_prompts == 0)
                    )
                    if (problem := _bad(value, nan_ok=nan_ok)) is not None:
                        return f"{where}.levels[{j}].{f.name}: {problem}"
        return None

    def records(self, metric: str) -> bool:
        """Whether the rows' levels measured ``metric`` (a LevelResult field)."""
        recorded = self.header.metrics_recorded
        return recorded is None or metric in recorded or metric not in LEVEL_METRICS

    def absent(self) -> list[str]:
        """What this surface does not record, by field name: header fields, the rows' durations, level metrics
        (when only some are recorded); empty for a surface `tune record` wrote on a GPU."""
        h = self.header
        out = [
            name
            for name in (
                "model",
                "model_path",
                "gpu_name",
                "sglang_version",
                "command",
                "date",
                "catalog",
                "model_facts",
            )
            if getattr(h, name) is None
        ]
        if not h.gpu_memory_mib:
            out.append("gpu_memory_mib")
        if h.workload.input_len is None or h.workload.output_len is None:
            out.append("ISL/OSL")
        out += [n for n in ("startup_s", "benchmark_s", "stop_s") if all(getattr(r, n) is None for r in self.rows)]
        if h.metrics_recorded is not None:
            missing = [m for m in LEVEL_METRICS if m not in h.metrics_recorded]
            short = len(missing) <= len(h.metrics_recorded)
            out.append(
                f"the level metrics {', '.join(missing)}"
                if short
                else f"every level metric but {', '.join(h.metrics_recorded)}"
            )
        return out

    def flag_catalog(self) -> FlagCatalog:
        """The recorded SGLang's --help; without one, the flags the rows set (so a space may tune only those)."""
        h = self.header
        if h.catalog is not None:
            source = f"SGLang {h.sglang_version or '(version not recorded)'} --help (recorded in the surface)"
            return FlagCatalog({f.name: f for f in h.catalog}, source=source)
        seen: dict[str, list[FlagValue]] = {}
        for row in self.rows:
            for name, value in row.flags.items():
                seen.setdefault(name, []).append(value)
        flags = {name: FlagInfo(name, True) for name in TUNER_FLAGS}
        for name, values in seen.items():
            takes_value = any(not isinstance(v, bool) for v in values)
            flags[name] = FlagInfo(name, takes_value, value_type=FLAG_TYPES.get(name) if takes_value else None)
        return FlagCatalog(flags, source=f"the flags set in {h.source} (the surface records no SGLang --help)")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_whole(path, self.model_dump_json(indent=1) + "\n")

    # -- the model
    def answer(
        self, flags: dict[str, FlagValue], exclude: int | None = None, flag_weights: dict[str, float] | None = None
    ) -> Answer:
        """The recorded outcome of ``flags``, or a modelled one.

        Exact match: the first recorded row with the same flags (place flags ignored). Otherwise the ``NEIGHBOURS``
        nearest rows by a weighted Euclidean distance over every flag any row or the query sets, each dimension in
        [0, 1]: numbers min-max normalised over the recorded values (log scale past ``LOG_SCALE_RATIO``), anything
        else (choices, switches, a flag one side leaves at SGLang's default) 0 when equal and 1 when not; each
        flag's square weighted by ``flag_weights`` (default: learned from the rows, ``flag_weights()``). The
        neighbours count 1/d^2. ``exclude`` leaves one row out (the leave-one-out benchmark).
        """
        point = point_of(flags)
        rows = [r for r in self.rows if r.trial != exclude]
        for row in rows:
            if point_of(row.flags) == point:
                return Answer(
                    row,
                    row.levels,
                    row.failure_class,
                    row.failure_detail,
                    row.fresh_startup_s,  # not recorded: no GPU time counted
                    row.benchmark_s or 0.0,
                    row.stop_s or 0.0,
                    row.gpu_peak_used_mib,
                    (row.trial,),
                    False,
                    ((1.0, row),) if row.ok else (),
                    row.imports_s,
                    row.warmup_s,
                    row.spawn_imports_s,
                )
        fw = self.flag_weights() if flag_weights is None else flag_weights
        near = _nearest(point, rows, _scales([r.flags for r in rows] + [point]), fw)
        weights = [1.0 / d**2 for d, _ in near]
        total = sum(weights)
        failed_weight = sum(w for w, (_, r) in zip(weights, near, strict=True) if not r.ok)
        sources = tuple(r.trial for _, r in near)
        if failed_weight > total / 2:
            first = next(r for _, r in near if not r.ok)
            detail = (
                f"modelled: the nearest recorded trials ({', '.join(map(str, sources))}) mostly failed; "
                f"nearest failure, trial {first.trial}: {first.failure_detail}"
            )
            return Answer(
                first,
                [],
                first.failure_class,
                detail,
                _mean(near, weights, "fresh_startup_s"),
                0.0,
                _mean(near, weights, "stop_s"),
                None,
                sources,
                True,
                imports_s=_recorded_mean(near, weights, "imports_s"),
                spawn_imports_s=_recorded_mean(near, weights, "spawn_imports_s"),
            )
        good = [(w, r) for w, (_, r) in zip(weights, near, strict=True) if r.ok]
        # A load search's levels are rates, not concurrencies: they are answered per rate (Answer.at_rate).
        levels = _blend_levels(good) if self.header.objective.load_search is None else []
        gw = [(w, r.gpu_peak_used_mib) for w, r in good if r.gpu_peak_used_mib is not None]
        peak = sum(w * v for w, v in gw) / sum(w for w, _ in gw) if gw else None
        bench = sum(w * (r.benchmark_s or 0.0) for w, r in good) / sum(w for w, _ in good)
        return Answer(
            good[0][1],
            levels,
            None,
            "",
            _mean(near, weights, "fresh_startup_s"),
            bench,
            _mean(near, weights, "stop_s"),
            peak,
            sources,
            True,
            tuple(good),
            _recorded_mean(near, weights, "imports_s"),
            _recorded_mean(near, weights, "warmup_s"),
            _recorded_mean(near, weights, "spawn_imports_s"),
        )

    def nearest(self, flags: dict[str, FlagValue], candidates: list[dict[str, FlagValue]]) -> int:
        """The index of the config of ``candidates`` nearest ``flags`` by ``answer``'s distance (its scales over
        the recorded rows, its learned flag weights); the first of equals."""
        point = point_of(flags)
        scales = _scales([r.flags for r in self.rows] + [point])
        weights = self.flag_weights()
        return min(range(len(candidates)), key=lambda i: _distance(point, point_of(candidates[i]), scales, weights))

    @property
    def weights_learned(self) -> bool:
        """Whether this surface's flag weights are learned already (the first modelled answer learns them)."""
        return self._weights is not None

    def flag_weights(self, exclude: int | None = None) -> dict[str, float]:
        """How much each flag counts in the distance, learned from the rows: coordinate search over
        ``WEIGHT_STEPS`` (two passes, flags in name order, from all 1) for the least leave-one-out loss, where a
        row costs 1 when its failure or success is mispredicted and |log(predicted / recorded)| (at most 1) of the
        objective otherwise. Flags that do not move the numbers get weight 0, so they stop choosing neighbours.
        ``exclude`` learns without that row (for an honest leave-one-out of the whole model)."""
        if exclude is None and self._weights is not None:
            return self._weights
        rows = [r for r in self.rows if r.trial != exclude]
        points = [point_of(r.flags) for r in rows]
        names = sorted({k for p in points for k in p if len({str(q.get(k)) for q in points}) > 1})
        # A flag outside ``names`` has one value everywhere: it adds nothing to any distance.
        gaps = _gaps(points, names, _scales([r.flags for r in rows]))
        ok = np.array([r.ok for r in rows], dtype=bool)
        # 0 stands for no value: such a row's error is not counted, nor is it a neighbour's prediction.
        values = np.array([v or 0.0 for v in map(self.value, rows)], dtype=float)

        def loss(w: dict[str, float]) -> float:
            return _loo_loss(gaps, np.array([w[k] for k in names], dtype=float), ok, values)

        w = dict.fromkeys(names, 1.0)
        best = loss(w)
        for _ in range(2):
            for k in names:
                for step in WEIGHT_STEPS:
                    trial = {**w, k: step}
                    if step != w[k] and any(trial.values()) and (value := loss(trial)) < best - 1e-9:
                        best, w = value, trial
        if exclude is None:
            self._weights = w
        return w

    def value(self, row: Row) -> float | None:
        """A row's recorded value of the header's first objective metric: at its concurrency, or for a load
        search the goodput at its highest rate holding the SLO (None: not measured, or no rate held it)."""
        o = self.header.objective
        if o.load_search is not None:
            curve = tuple(lv for lv in row.levels if lv.repeat == 0)
            top = best_level(curve, tuple(broken(lv, o.slo) is None for lv in curve))
            return top.request_goodput if top else None
        return next((getattr(lv, o.metrics[0]) for lv in row.levels if lv.concurrency == o.at_concurrency), None)

    def best(self) -> float:
        """The best recorded value of the header's first objective metric (feasible rows)."""
        metric = self.header.objective.metrics[0]
        values = [v for r in self.rows if r.ok and (v := self.value(r)) is not None and math.isfinite(v)]
        if not values:
            raise SurfaceError(f"surface from {self.header.source}: no feasible row measured {metric}")
        return max(values) if not metric.endswith("_ms") else min(values)


@dataclass(frozen=True)
class Answer:
    """What a replayed trial gets: ``row`` is the recorded trial it came from (the nearest one when modelled)."""

    row: Row
    levels: list[LevelResult]
    failure_class: str | None
    failure_detail: str
    startup_s: float  # as a fresh launch would have had it (Row.fresh_startup_s): what ran ahead put back
    benchmark_s: float
    stop_s: float
    gpu_peak_used_mib: float | None
    sources: tuple[int, ...]  # recorded trial numbers the answer came from
    modelled: bool
    curves: tuple[tuple[float, Row], ...] = ()  # the feasible rows a load search's rates are read from, weighted
    imports_s: float | None = None  # of startup_s; None: no recorded trial it came from recorded its imports
    warmup_s: float | None = None  # of benchmark_s, once a trial; None: no recorded trial it came from recorded one
    spawn_imports_s: float | None = None  # of startup_s: the scheduler's imports (None: as imports_s)

    def at_rate(self, level: Level, slo: dict[str, float]) -> tuple[LevelResult, str]:
        """The load search's ``level`` (its rate, size and concurrency) answered from the recorded curves, and
        how: ``recorded`` (that very level) or what it was modelled from. One curve: ``curve_at``. Several: a
        rate one curve did not measure is not measured; otherwise the neighbours vote by weight. Where those
        that broke the SLO at this rate hold half the weight or more, the level breaks as the heaviest of them
        did; else each number is the weighted mean of the passing answers, which passes too. Averaging p99s
        across the vote would not: a neighbour broken on TTFT and one broken on TPOT average to a pass."""
        answers = [(w, row, *curve_at(row.levels, level, slo)) for w, row in self.curves]
        if len(answers) == 1:
            return answers[0][2], answers[0][3]
        unmeasured = next((lv for _, _, lv, how in answers if how.startswith("not measured")), None)
        if unmeasured is not None:
            return unmeasured, "not measured by a neighbour: fails"
        verdicts = [broken(lv, slo) is not None for _, _, lv, _ in answers]
        broke = [a for a, b in zip(answers, verdicts, strict=True) if b]
        passing = [a for a, b in zip(answers, verdicts, strict=True) if not b]
        if 2 * sum(w for w, *_ in broke) >= sum(w for w, *_ in answers):
            _, row, lv, how = max(broke, key=lambda a: a[0])
            return _with_numbers(lv, level, {}), (
                f"broke at {len(broke)} of {len(answers)} neighbours, half the "
                f"weight or more: as trial {row.trial} ({how})"
            )
        total = sum(w for w, *_ in passing)
        values = {f: sum(w * getattr(lv, f) for w, _, lv, _ in passing) / total for f in _CURVE_FIELDS}
        blended = _with_numbers(passing[0][2], level, values)
        return blended, (
            "weighted mean of trials "
            + ", ".join(f"{row.trial} ({how})" for _, row, _, how in passing)
            + "".join(f"; trial {row.trial} broke ({how}), outvoted" for _, row, _, how in broke)
        )


# LevelResult fields that say which level it is, not what it measured: a modelled level takes them from the search.
_IDENTITY = ("concurrency", "input_len", "output_len", "request_rate", "num_prompts", "repeat")


def _bad(value: object, *, nan_ok: bool) -> str | None:
    """Why ``value`` is no recorded measurement, or None (not a number at all is pydantic's to say)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value):
        return None if nan_ok else "must be a number, got NaN"
    if math.isinf(value) or value < 0:
        return f"must be a finite number >= 0, got {value}"
    return None


def _is_number(f) -> bool:
    return f.type in ("int", "float", int, float) and f.name not in _IDENTITY


def curve_at(levels: list[LevelResult], level: Level, slo: dict[str, float]) -> tuple[LevelResult, str]:
    """One recorded load-search curve (its repeat-0 levels) answering ``level``'s rate.

    A recorded rate: its level as recorded (``recorded``). Between the neighbouring recorded rates r0 < r < r1:
    every number x0 + (r - r0) / (r1 - r0) * (x1 - x0), counts rounded (``interpolated``). Above the highest
    recorded rate: its numbers when they broke ``slo`` (a server that broke the SLO at a lower rate breaks it
    here too; ``beyond``); otherwise, and below the lowest rate, nothing measured: every number NaN, so
    load_search.broken fails the level (``not measured``: conservative, never a pass that was not seen).
    """
    curve: dict[float, LevelResult] = {}
    for lv in levels:
        if lv.repeat == 0 and lv.request_rate is not None:
            curve.setdefault(lv.request_rate, lv)
    rate = level.request_rate
    assert rate is not None, "a load search's levels have a rate"
    at = sorted(curve)
    for r in at:
        if math.isclose(r, rate, rel_tol=1e-9):
            return curve[r], "recorded"
    if at and at[0] < rate < at[-1]:
        r0 = max(r for r in at if r < rate)
        r1 = min(r for r in at if r > rate)
        t = (rate - r0) / (r1 - r0)
        lo, hi = curve[r0], curve[r1]
        values = {f: getattr(lo, f) + t * (getattr(hi, f) - getattr(lo, f)) for f in _CURVE_FIELDS}
        return _with_numbers(lo, level, values), f"interpolated between {r0:g} and {r1:g} req/s"
    if at and rate > at[-1] and broken(curve[at[-1]], slo):
        return _with_numbers(curve[at[-1]], level, {}), f"beyond {at[-1]:g} req/s, where the SLO broke"
    values = {f: float("nan") for f in _CURVE_FIELDS}
    unmeasured = _with_numbers(levels[0] if levels else None, level, values)
    return replace(unmeasured, errors=f"not recorded at {rate:g} req/s"), f"not measured at {rate:g} req/s: fails"


def _with_numbers(base: LevelResult | None, level: Level, values: dict[str, float]) -> LevelResult:
    """``base`` as the search's ``level`` (rate, size, concurrency) with ``values`` for its measured numbers."""
    out: dict[str, Any] = {f.name: getattr(base, f.name) if base else 0 for f in fields(LevelResult)}
    out.update(
        concurrency=level.concurrency,
        input_len=level.input_len,
        output_len=level.output_len,
        request_rate=level.request_rate,
        num_prompts=level.num_prompts,
        errors="",
    )
    for name, v in values.items():
        out[name] = (0 if math.isnan(v) else round(v)) if name in _INT_FIELDS else v
    return LevelResult(**out)


def point_of(flags: dict[str, FlagValue]) -> dict[str, FlagValue]:
    """A config as a surface point: place flags dropped, switches left off dropped, floats as typed."""
    out: dict[str, FlagValue] = {}
    for name, value in flags.items():
        if name in TUNER_FLAGS or value is False or value is None:
            continue
        out[name] = float(format_value(value)) if isinstance(value, float) else value
    return out


def _numeric(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scales(points: list[dict[str, FlagValue]]) -> dict[str, tuple[float, float, bool]]:
    """Per numeric flag: (low, high, log) over the values seen."""
    seen: dict[str, list[float]] = {}
    for p in points:
        for k, v in p.items():
            if _numeric(v):
                seen.setdefault(k, []).append(float(v))
    out = {}
    for k, vs in seen.items():
        lo, hi = min(vs), max(vs)
        log = lo > 0 and hi / lo > LOG_SCALE_RATIO
        out[k] = (math.log(lo), math.log(hi), True) if log else (lo, hi, False)
    return out


def _distance(a: dict, b: dict, scales: dict, weights: dict[str, float]) -> float:
    total = 0.0
    for k in set(a) | set(b):
        x, y = a.get(k), b.get(k)
        w = weights.get(k, 1.0)
        if k in scales and _numeric(x) and _numeric(y):
            lo, hi, log = scales[k]
            if hi > lo:
                fx, fy = (math.log(x), math.log(y)) if log else (float(x), float(y))
                total += w * ((fx - fy) / (hi - lo)) ** 2
        elif x != y:
            total += w
    return max(math.sqrt(total), 1e-9)


def _gaps(points: list[dict[str, FlagValue]], names: list[str], scales: dict) -> np.ndarray:
    """Per flag of ``names``, every pair of points' term of ``_distance`` before weighting: shape (flags, n, n)."""
    n = len(points)
    out = np.zeros((len(names), n, n))
    for f, k in enumerate(names):
        column = [p.get(k) for p in points]
        # Codes compare as ``!=`` does (1 == 1.0); None (left at SGLang's default) is a value of its own.
        codes: dict[object, int] = {}
        code = np.array([codes.setdefault(v, len(codes)) for v in column])
        out[f] = code[:, None] != code[None, :]
        if k in scales:
            lo, hi, log = scales[k]
            numeric = np.array([_numeric(v) for v in column])
            x = np.array([float(v) if _numeric(v) else 0.0 for v in column])
            x = np.log(x, where=numeric, out=np.zeros(n)) if log else x
            both = numeric[:, None] & numeric[None, :]
            span = ((x[:, None] - x[None, :]) / (hi - lo)) ** 2 if hi > lo else np.zeros((n, n))
            out[f] = np.where(both, span, out[f])
    return out


def _loo_loss(gaps: np.ndarray, weights: np.ndarray, ok: np.ndarray, values: np.ndarray) -> float:
    """``Surface.flag_weights``' leave-one-out loss of ``weights`` (one per flag of ``gaps``), as ``answer``
    would predict each row from its ``NEIGHBOURS`` nearest others: the same distances, ties broken alike."""
    n = len(ok)
    k = min(NEIGHBOURS, n - 1)
    dist = np.maximum(np.sqrt(np.tensordot(weights, gaps, axes=1)), 1e-9)
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1, kind="stable")[:, :k]
    w = 1.0 / np.take_along_axis(dist, near, axis=1) ** 2
    wrong = ((w * ~ok[near]).sum(axis=1) > w.sum(axis=1) / 2) != ~ok
    good = ok[near] & (values[near] != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted = np.where(good, w * values[near], 0.0).sum(axis=1) / np.where(good, w, 0.0).sum(axis=1)
        error = np.minimum(1.0, np.abs(np.log(predicted / values)))
    scored = ~wrong & ok & (values != 0) & good.any(axis=1)
    # NaN (a metric with no sample) misses by the most, as min(1.0, nan) did.
    return float(wrong.sum() + np.where(np.isnan(error), 1.0, error)[scored].sum())


def _nearest(point: dict, rows: list[Row], scales: dict, weights: dict[str, float]) -> list[tuple[float, Row]]:
    near = sorted(((_distance(point, point_of(r.flags), scales, weights), r) for r in rows), key=lambda x: x[0])
    return near[:NEIGHBOURS]


def _mean(near, weights, attr: str) -> float:
    return sum(w * (getattr(r, attr) or 0.0) for w, (_, r) in zip(weights, near, strict=True)) / sum(weights)


def _recorded_mean(near, weights, attr: str) -> float | None:
    """The weighted mean over the neighbours that recorded ``attr``; None when none did."""
    known = [(w, v) for w, (_, r) in zip(weights, near, strict=True) if (v := getattr(r, attr)) is not None]
    return sum(w * v for w, v in known) / sum(w for w, _ in known) if known else None


_INT_FIELDS = {f.name for f in fields(LevelResult) if f.type in ("int", int)}
_CURVE_FIELDS = tuple(f.name for f in fields(LevelResult) if _is_number(f))


def _blend_levels(good: list[tuple[float, Row]]) -> list[LevelResult]:
    """Per concurrency level, each number the weighted mean over the neighbours that ran that level."""
    out = []
    for lv in good[0][1].levels:
        same = [
            (w, next(x for x in r.levels if x.concurrency == lv.concurrency))
            for w, r in good
            if any(x.concurrency == lv.concurrency for x in r.levels)
        ]
        values = {}
        for f in fields(LevelResult):
            v = getattr(lv, f.name)
            if _numeric(v) and f.name not in ("concurrency", "input_len", "output_len", "request_rate"):
                finite = [(w, getattr(x, f.name)) for w, x in same if math.isfinite(getattr(x, f.name))]
                if finite:
                    v = sum(w * x for w, x in finite) / sum(w for w, _ in finite)
                    v = round(v) if f.name in _INT_FIELDS else v
            values[f.name] = v
        values["errors"] = ""
        out.append(LevelResult(**values))
    return out


# -- building surfaces --------------------------------------------------------------------------------------


def read_levels(path: Path) -> list[LevelResult]:
    """A trial's benchmark.csv (tuner.bench.client writes it) back into its levels."""
    kinds = {f.name: f.type for f in fields(LevelResult)}
    out = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            values: dict[str, Any] = {}
            for name, kind in kinds.items():
                raw = rec.get(name, "")
                if kind in ("int", int):
                    values[name] = int(float(raw)) if raw else 0
                elif kind in ("str", str):
                    values[name] = raw
                elif raw == "":
                    values[name] = None if name == "request_rate" else float("nan")
                else:
                    values[name] = float(raw)
            out.append(LevelResult(**values))
    return out


def from_study(
    study: optuna.Study,
    *,
    gpu_name: str,
    catalog: FlagCatalog,
    sglang_version: str,
    model: str | None = None,
    notes: str = "",
    trials_dir: Path | None = None,
) -> Surface:
    """Every finished real trial of ``study`` as a row (interrupted and over-budget ones left out: they say
    nothing about their config). Levels come from each trial's benchmark.csv; ``trials_dir`` if they moved: the
    trials folder that holds the study's folder (as a run file's trials_dir), or that study folder itself."""
    from optuna.trial import TrialState

    sr = StudyRecord.of(study)
    run = sr.run
    if not run:
        raise SurfaceError(f"study {study.study_name!r} has no recorded run config: not a tuner study")
    moved = trials_dir
    if trials_dir is not None and (trials_dir / study.study_name).is_dir():
        moved = trials_dir / study.study_name
    rows = []
    dates = []
    for r in records(study, (TrialState.COMPLETE,)):
        if r.replay:
            raise SurfaceError(
                f"study {study.study_name!r} is a replay (trial {r.number} is replayed): "
                f"record only studies of real trials"
            )
        if r.failure is None or r.failure.name == "too_many_gpus" or r.number is None:
            continue  # never launched on this machine
        trial_dir = r.trial_dir if moved is None else moved / str(r.number)
        levels: list[LevelResult] = []
        if r.levels:
            csv_path = trial_dir / "benchmark.csv" if trial_dir else None
            if csv_path is None or not csv_path.is_file():
                raise SurfaceError(
                    f"trial {r.number}: {csv_path} is missing (pass --trials-dir: the trials folder that now "
                    f"holds {study.study_name}/, or that folder itself)"
                )
            levels = read_levels(csv_path)
        if r.started_at:
            dates.append(r.started_at[:10])
        scheduler = next((s for s in r.spawned or () if s.process == 1), None)  # the spawn the server waits for
        rows.append(
            Row(
                trial=r.number,
                baseline=r.is_baseline,
                flags=point_of(r.flag_values),
                levels=levels,
                failure_class=r.failure.name if r.failed else None,
                failure_detail=r.failure.detail or "",
                stopped_early=r.stopped_early,
                startup_s=r.times.startup_s or 0.0,
                benchmark_s=r.times.benchmark_s or 0.0,
                stop_s=r.times.stop_s or 0.0,
                # A prestarted trial's log shows only what was left of its imports: its interpreter counted them.
                imports_s=r.startup.imports_s if r.prestarted_s is None else r.prestart_imports_s,
                imports_ahead=r.prestarted_s is not None and r.prestart_imports_s is not None,
                spawn_imports_s=scheduler.imports_s if scheduler else None,
                spawn_ahead=bool(scheduler and scheduler.on_standby and scheduler.imports_s is not None),
                warmup_s=r.warmup_s,
                gpu_peak_used_mib=r.gpu.peak_used_mib,
            )
        )
    if not rows:
        raise SurfaceError(f"study {study.study_name!r} has no finished real trial to record")
    totals = [r.gpu.total_mib for r in records(study) if r.gpu.total_mib is not None]
    wl = run.get("workload", {})
    launcher = run.get("launcher", {})
    model_path = run.get("model", {}).get("path", "")
    header = Header(
        model=model or model_path,
        model_path=model_path,
        gpu_name=gpu_name,
        gpu_memory_mib=max(totals) if totals else 0.0,
        sglang_version=sglang_version,
        command=launcher.get("command") or ["python", "-m", "sglang.launch_server"],
        workload=RecordedWorkload(
            input_len=wl.get("input_len", 0),
            output_len=wl.get("output_len", 0),
            concurrency=list(wl.get("concurrency", [])),
            description=_describe_workload(wl, sr.load_search),
            shape={k: wl[k] for k in SHAPE_KEYS if k in wl},
        ),
        objective=RecordedObjective(
            metrics=list(sr.metrics or ()),
            at_concurrency=int(sr.at_concurrency or 0),
            slo=dict(sr.slo or {}) if sr.load_search else {},
            load_search=LoadSearch(**sr.load_search) if sr.load_search else None,
        ),
        date=min(dates) if dates else datetime.now(UTC).date().isoformat(),
        source=f"study {study.study_name}",
        space=str(run.get("space", "")),
        notes=notes,
        catalog=list(catalog.flags.values()),
        # None where the model is a hub id (or its folder is gone): record on the machine that ran the study
        model_facts=ModelFacts.from_folder(model_path) if model_path else None,
    )
    surface = Surface(header=header, rows=rows)
    if problem := surface.bad_number():  # what load would refuse is never written
        raise SurfaceError(
            f"study {study.study_name!r} cannot be recorded: {problem} (from that trial's benchmark.csv or its "
            f"record); fix or remove that trial's file"
        )
    return surface


def _describe_workload(wl: Mapping[str, Any], search: Mapping[str, Any] | None) -> str:
    prompts = wl.get("dataset") or ("random token ids" if wl.get("prompt_kind", "ids") == "ids" else "random text")
    size = (
        f"max({search['min_prompts']}, rate x {search['level_duration_s']:g} s) prompts per load-search level"
        if search
        else f"{wl.get('num_prompts') or '4 x concurrency (at least 8)'} prompts per level"
    )
    return (
        f"{prompts}, ignore_eos, {size}, "
        f"{wl.get('warmup_requests', 2)} warm-up requests"
        f"{', cache flush' if wl.get('flush_cache', True) else ''} before each level"
        f"{', Poisson rate ' + str(wl['request_rate']) if wl.get('request_rate') else ''}"
    )
