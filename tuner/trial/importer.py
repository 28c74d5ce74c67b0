"""Importing other tools' results as a surface (`tune import`): a CSV or JSONL of launches, or the JSONL that
SGLang's bench_serving appends to with ``--output-file``, read through a column mapping into the surface format
of docs/surface-format.md, so that a user's own sweep replays with the same sampler, views and export as a
recorded study.

A mapping says what each column means: ``flags`` (column -> SGLang flag), ``metrics`` (column -> bench_serving
metric, as LevelResult names it), ``failure`` (a column that is empty, false, 0 or ok where the launch ran, else
a failure class name or the failure's text), ``concurrency`` (a column, or one number for every line),
``startup_s`` and ``benchmark_s`` (columns of seconds). Lines with the same flags are one recorded trial, one
level per concurrency (a second line at the same concurrency is a repeat). What the data does not say is left
absent (Surface.absent()), never invented.

A bench_serving line carries no server flags: they are given per file (``--flags`` or the mapping's ``runs``),
its numbers are read under bench_serving's own names, ``max_concurrency`` is the level and ``duration`` its
seconds.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveInt

from tuner.bench.metrics import LevelResult
from tuner.config.schema import validated
from tuner.config.yamlfile import load_mapping
from tuner.sglang import failures
from tuner.sglang.catalog import FlagCatalog
from tuner.sglang.feasibility import ModelFacts
from tuner.sglang.flags import TUNER_FLAGS, FlagValue
from tuner.trial.surface import (
    LEVEL_METRICS,
    Header,
    RecordedObjective,
    RecordedWorkload,
    Row,
    Surface,
    SurfaceError,
    point_of,
)

# bench_serving's result keys that are LevelResult's under another name (its other numbers keep their names).
BENCH_SERVING_RENAMED = {"duration": "duration_s", "concurrency": "concurrency_achieved"}
# What a failure column holds where the launch ran.
_RAN = {"", "0", "false", "no", "ok", "success", "succeeded", "none", "null"}
_FAILED = {"1", "true", "yes", "failed", "fail", "error"}
_NOT_MEASURED = {"", "nan", "null", "none"}
_FLAG_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class MappingError(SurfaceError):
    """Data or a mapping that cannot become a surface; the message names the file, line and column."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeaderFacts(_Strict):
    """What the data does not say but its owner knows: each is recorded in the header, else left absent."""

    model: str | None = None
    model_path: str | None = None
    gpu_name: str | None = None
    gpu_memory_mib: float | None = None
    sglang_version: str | None = None
    command: list[str] | None = None
    input_len: int | None = None
    output_len: int | None = None
    # The model's context length (config.json's max_position_embeddings, SGLang's context_len): a replay then
    # predicts every --context-length above it before launch, as a run with the model's config.json does.
    context_len: PositiveInt | None = None
    date: str | None = None
    source: str | None = None
    space: str = ""  # a search space over the data's flags (benchmarks/sampler_efficiency.py samples it)
    notes: str = ""


class Run(_Strict):
    """One data file and the flags every line of it ran with (bench_serving's files: one server each)."""

    file: str
    flags: dict[str, FlagValue] = {}


class ColumnMapping(_Strict):
    """The mapping file of `tune import --mapping` (and what its command-line options build)."""

    format: Literal["csv", "jsonl", "bench-serving"] | None = None  # None: from the file
    runs: list[Run] = []  # files relative to the mapping file; the command line's files come first
    flags: dict[str, str] = {}  # column -> SGLang flag name (no dashes)
    metrics: dict[str, str] = {}  # column -> bench_serving metric (output_throughput, p99_ttft_ms, ...)
    failure: str | None = None  # a column, or COLUMN=VALUE: failed where the column holds VALUE
    concurrency: str | int | None = None
    startup_s: str | None = None
    benchmark_s: str | None = None
    objective: str | None = None  # the header's first metric (default: output_throughput where recorded)
    at_concurrency: int | None = None  # (default: the highest concurrency recorded)
    header: HeaderFacts = HeaderFacts()


def load_column_mapping(path: Path) -> ColumnMapping:
    doc = load_mapping(
        path,
        MappingError,
        "mapping file",
        "a mapping file is a mapping with flags, metrics, failure, concurrency (docs/surface-format.md)",
        directory_hint="give the mapping file's path",
        example="e.g. mapping.yaml",
    )
    mapping = validated(ColumnMapping, doc.data, doc, MappingError)
    for run in mapping.runs:
        run.file = str(path.parent / run.file)
    return mapping


@dataclass
class _Line:
    """One line of the data: where it came from, its values by column, the flags its file ran with."""

    where: str
    values: dict[str, Any]
    flags: dict[str, FlagValue]


def import_surface(mapping: ColumnMapping, catalog: FlagCatalog | None = None) -> Surface:
    """The surface the mapped files hold; ``catalog`` (an SGLang --help) checks the flags and is recorded."""
    if not mapping.runs:
        raise MappingError("no data file given: name a CSV or JSONL file (or runs: in the mapping file)")
    lines: list[_Line] = []
    kinds = set()
    for run in mapping.runs:
        kind, file_lines = _read(Path(run.file), mapping.format)
        kinds.add(kind)
        _check_flag_names(run.flags, catalog, f"flags of {run.file}")
        lines += [_Line(where, values, dict(run.flags)) for where, values in file_lines]
    if len(kinds) > 1:
        raise MappingError(f"the files are of different formats ({', '.join(sorted(kinds))}): import them apart")
    kind = kinds.pop()
    if not lines:
        raise MappingError(f"{mapping.runs[0].file}: no data lines")
    bench_serving = kind == "bench-serving"
    metrics = dict(mapping.metrics)
    if bench_serving:
        keys = {k for line in lines for k in line.values}
        metrics = {k: BENCH_SERVING_RENAMED.get(k, k) for k in keys if BENCH_SERVING_RENAMED.get(k, k) in LEVEL_METRICS}
        metrics.update(mapping.metrics)
    _check_mapping(mapping, metrics, lines, catalog, bench_serving)
    facts = mapping.header
    if bench_serving:
        facts = _bench_serving_facts(facts, lines)
    return _build(mapping, metrics, lines, facts, catalog, bench_serving)


def _read(path: Path, format: str | None) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    if not path.is_file():
        raise MappingError(f"{path}: no such data file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read it as text ({getattr(exc, 'strerror', None) or exc})") from None
    kind = format or ("csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl")
    if kind == "csv":
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        out = [(f"{path}:{i + 2}", dict(rec)) for i, rec in enumerate(reader)]
        if reader.fieldnames is None:
            raise MappingError(f"{path}: empty, no header line")
        return kind, out
    out = []
    for i, raw in enumerate(text.splitlines()):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MappingError(
                f"{path}:{i + 1}: not a JSON line ({exc.msg}); a JSONL file holds one object a line"
            ) from None
        if not isinstance(value, dict):
            raise MappingError(f"{path}:{i + 1}: a JSON {type(value).__name__}, not an object")
        out.append((f"{path}:{i + 1}", value))
    if format is None and out and {"backend", "max_concurrency", "output_throughput"} <= set(out[0][1]):
        kind = "bench-serving"  # what sglang.bench_serving --output-file appends
    return kind, out


def _check_flag_names(flags: dict[str, Any], catalog: FlagCatalog | None, where: str) -> None:
    for name in flags:
        if name.startswith("-") or not _FLAG_NAME.fullmatch(name):
            fixed = name.lstrip("-").replace("_", "-").lower()
            raise MappingError(f"{where}: {name!r} is not an SGLang flag name; write it as SGLang does: {fixed}")
        if name in TUNER_FLAGS:
            raise MappingError(f"{where}: --{name} says where a server runs, not how: leave it out")
        if catalog is not None and name not in catalog.flags:
            raise MappingError(f"{where}: {catalog.check(name, True)}")


def _check_mapping(
    mapping: ColumnMapping,
    metrics: dict[str, str],
    lines: list[_Line],
    catalog: FlagCatalog | None,
    bench_serving: bool,
) -> None:
    columns = {k for line in lines for k in line.values}
    mapped = [
        *(("--flag", c) for c in mapping.flags),
        *(("--metric", c) for c in mapping.metrics),
        *((("--failure", mapping.failure.partition("=")[0]),) if mapping.failure else ()),
        *(("--" + opt.replace("_", "-"), c) for opt in ("startup_s", "benchmark_s") if (c := getattr(mapping, opt))),
        *((("--concurrency", mapping.concurrency),) if isinstance(mapping.concurrency, str) else ()),
    ]
    source = mapping.runs[0].file
    for option, column in mapped:
        if column not in columns:
            near = difflib.get_close_matches(column, sorted(columns), n=1)
            hint = f" (did you mean {near[0]}?)" if near else f" (it has {', '.join(sorted(columns)[:12])})"
            raise MappingError(f"{option} {column}: no such column in {source}{hint}")
    for column, flag in mapping.flags.items():
        _check_flag_names({flag: None}, catalog, f"--flag {column}={flag}")
    for column, metric in metrics.items():
        if metric not in LEVEL_METRICS:
            near = difflib.get_close_matches(metric, LEVEL_METRICS, n=1)
            hint = f"did you mean {near[0]}?" if near else f"one of {', '.join(LEVEL_METRICS)}"
            raise MappingError(f"--metric {column}={metric}: not a bench_serving metric ({hint})")
    if not metrics:
        raise MappingError("no metric mapped: give --metric COLUMN=METRIC, e.g. --metric tput=output_throughput")
    if mapping.concurrency is None and not bench_serving:
        raise MappingError(
            "no concurrency: give --concurrency COLUMN (the column of each line's concurrency) or --concurrency N"
        )
    if mapping.objective is not None and mapping.objective not in metrics.values():
        raise MappingError(
            f"--objective {mapping.objective}: not a mapped metric (mapped: {', '.join(sorted(set(metrics.values())))})"
        )


def _bench_serving_facts(facts: HeaderFacts, lines: list[_Line]) -> HeaderFacts:
    """ISL/OSL from bench_serving's random dataset where every line agrees and the mapping does not say."""
    updates: dict[str, int] = {}
    for name, key in (("input_len", "random_input_len"), ("output_len", "random_output_len")):
        values = {line.values.get(key) for line in lines}
        datasets = {line.values.get("dataset_name") for line in lines}
        if getattr(facts, name) is None and len(values) == 1 and datasets <= {"random", "random-ids"}:
            (value,) = values
            if isinstance(value, int):
                updates[name] = value
    return facts.model_copy(update=updates)


def _flag_value(raw: Any) -> FlagValue | None:
    """A CSV cell or JSON value as SGLang's flag value: numbers as numbers, true/false as a switch, empty unset."""
    if raw is None or isinstance(raw, bool | int | float):
        return raw
    text = str(raw).strip()
    if text == "":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _number(raw: Any, where: str) -> float | None:
    """A metric or seconds cell as a number; None where it says nothing was measured."""
    if isinstance(raw, bool):
        raise MappingError(f"{where}: {raw!r} is not a number")
    if raw is None or isinstance(raw, int | float):
        return None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else float(raw)
    text = str(raw).strip()
    if text.lower() in _NOT_MEASURED:
        return None
    try:
        return float(text)
    except ValueError:
        raise MappingError(f"{where}: {text!r} is not a number") from None


def _line_failure(failure: str, line: _Line) -> tuple[str, str] | None:
    """(failure class, detail) of a line by the mapping's ``failure``: a column, or COLUMN=VALUE (the launch failed
    where that column holds that value, for data that marks a failure only by, say, ``completed`` = 0)."""
    column, sep, value = failure.partition("=")
    if not sep:
        return _failure(line.values.get(column))
    if str(line.values.get(column, "")).strip() == value:
        return failures.CRASHED.name, f"{column} = {value} (how the source marks a failed launch)"
    return None


def _failure(raw: Any) -> tuple[str, str] | None:
    """(failure class, detail) of a failure cell, None where the launch ran."""
    text = "" if raw is None else str(raw).strip()
    if isinstance(raw, bool):
        text = str(raw).lower()
    if text.lower() in _RAN:
        return None
    if text in failures.ALL:
        return text, text
    if text.lower() in _FAILED:
        return failures.CRASHED.name, f"failed ({text})"
    # a log line or error text: SGLang's own words name the class where they can
    cls = failures.classify(phase=failures.Phase.STARTUP, exit_code=1, log=text)
    return cls.name, text


def _build(
    mapping: ColumnMapping,
    metrics: dict[str, str],
    lines: list[_Line],
    facts: HeaderFacts,
    catalog: FlagCatalog | None,
    bench_serving: bool,
) -> Surface:
    groups: dict[str, list[tuple[_Line, dict[str, FlagValue]]]] = {}
    for line in lines:
        flags = dict(line.flags)
        for column, flag in mapping.flags.items():
            value = _flag_value(line.values.get(column))
            if value is not None:
                flags[flag] = value
            if catalog is not None and value is not None and (problem := catalog.check(flag, value)):
                raise MappingError(f"{line.where}: column {column}: {problem}")
        key = json.dumps(sorted(point_of(flags).items()), default=str)
        groups.setdefault(key, []).append((line, flags))
    kinds = {f.name: f.type for f in fields(LevelResult)}
    rows = []
    for number, members in enumerate(groups.values()):
        levels: list[LevelResult] = []
        failure: tuple[str, str] | None = None
        startup: list[float] = []
        bench: list[float] = []
        for line, _ in members:
            for seconds_column, out in ((mapping.startup_s, startup), (mapping.benchmark_s, bench)):
                if seconds_column is not None:
                    seconds = _number(line.values.get(seconds_column), f"{line.where}: column {seconds_column}")
                    out += [seconds] if seconds is not None else []
            if mapping.failure is not None and (failed := _line_failure(mapping.failure, line)):
                failure = failure or failed
                continue
            concurrency = _concurrency(mapping, line, bench_serving)
            values: dict[str, Any] = {}
            for name, kind in kinds.items():
                values[name] = 0 if kind in ("int", int) else float("nan")
            for column, metric in metrics.items():
                v = _number(line.values.get(column), f"{line.where}: column {column}")
                if v is None:
                    raise MappingError(
                        f"{line.where}: column {column} ({metric}) is empty, and no --failure column says the "
                        f"launch failed: give its number or map the failure column"
                    )
                values[metric] = round(v) if kinds[metric] in ("int", int) else v
            rate = _number(line.values.get("request_rate"), line.where) if bench_serving else None
            repeat = sum(lv.concurrency == concurrency for lv in levels)
            values.update(
                concurrency=concurrency,
                input_len=facts.input_len or 0,
                output_len=facts.output_len or 0,
                request_rate=rate if rate is not None and math.isfinite(rate) else None,
                repeat=repeat,
                errors="",
            )
            levels.append(LevelResult(**values))
        durations = [lv.duration_s for lv in levels if math.isfinite(lv.duration_s)]
        benchmark_s = (
            sum(bench) if bench else (sum(durations) if "duration_s" in metrics.values() and durations else None)
        )
        flags = point_of(members[0][1])
        rows.append(
            Row(
                trial=number,
                baseline=not flags,  # SGLang's defaults: no flag set
                flags=flags,
                levels=sorted(levels, key=lambda lv: (lv.concurrency, lv.repeat)),
                failure_class=failure[0] if failure else None,
                failure_detail=failure[1] if failure else "",
                startup_s=max(startup) if startup else None,
                benchmark_s=benchmark_s,
                stop_s=None,
            )
        )
    recorded = sorted(set(metrics.values()), key=LEVEL_METRICS.index)
    concurrencies = sorted({lv.concurrency for r in rows for lv in r.levels})
    if not concurrencies:
        raise MappingError(f"{mapping.runs[0].file}: every line failed: nothing measured to replay")
    objective = mapping.objective or ("output_throughput" if "output_throughput" in recorded else recorded[0])
    at = mapping.at_concurrency if mapping.at_concurrency is not None else concurrencies[-1]
    if at not in concurrencies:
        raise MappingError(f"--at-concurrency {at}: no line ran at it (recorded: {', '.join(map(str, concurrencies))})")
    files = ", ".join(Path(r.file).name for r in mapping.runs)
    header = Header(
        model=facts.model,
        model_path=facts.model_path,
        gpu_name=facts.gpu_name,
        gpu_memory_mib=facts.gpu_memory_mib,
        sglang_version=facts.sglang_version,
        command=facts.command,
        workload=RecordedWorkload(
            input_len=facts.input_len,
            output_len=facts.output_len,
            concurrency=concurrencies,
            description=f"imported from {files}" + (" (sglang.bench_serving --output-file)" if bench_serving else ""),
        ),
        objective=RecordedObjective(metrics=[objective], at_concurrency=at),
        date=facts.date,
        source=facts.source or f"imported from {files}",
        space=facts.space,
        notes=facts.notes,
        catalog=list(catalog.flags.values()) if catalog is not None else None,
        metrics_recorded=recorded,
        model_facts=ModelFacts(facts.context_len) if facts.context_len else None,
    )
    surface = Surface(header=header, rows=rows)
    if problem := surface.bad_number():
        raise MappingError(f"{files}: {problem}")
    return surface


def _concurrency(mapping: ColumnMapping, line: _Line, bench_serving: bool) -> int:
    where = f"{line.where}: column {mapping.concurrency}"
    if isinstance(mapping.concurrency, int):
        return mapping.concurrency
    if mapping.concurrency is None and bench_serving:
        where = f"{line.where}: max_concurrency"
        raw = line.values.get("max_concurrency")
        if raw is None:
            raise MappingError(f"{where} is null (no --max-concurrency): give --concurrency N for these lines")
    else:
        raw = line.values.get(mapping.concurrency or "")
    value = _number(raw, where)
    if value is None or value != int(value) or value < 1:
        raise MappingError(f"{where}: {raw!r} is not a concurrency (a whole number >= 1)")
    return int(value)


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """``COLUMN=NAME`` options as a mapping; one line naming the bad one otherwise."""
    out = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            example = "tput=output_throughput" if option == "--metric" else "chunk=chunked-prefill-size"
            raise MappingError(f"{option} {pair!r}: give COLUMN=NAME, e.g. {option} {example}")
        out[column] = name
    return out


def parse_flags(text: str) -> dict[str, FlagValue]:
    """SGLang's command-line flags (``--chunked-prefill-size 4096 --enable-mixed-chunk``) as a mapping."""
    out: dict[str, FlagValue] = {}
    words = shlex.split(text)
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise MappingError(f"--flags {text!r}: {word!r} is not a --flag (SGLang's flags, e.g. --tp-size 2)")
        name, sep, given = word[2:].partition("=")
        if not sep and i + 1 < len(words) and not words[i + 1].startswith("--"):
            given, sep = words[i + 1], "="
            i += 1
        value = _flag_value(given) if sep else True
        out[name] = "" if value is None else value
        i += 1
    return out
