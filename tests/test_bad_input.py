"""User mistakes through the real CLI: each gets one ``error:`` line on stderr that says what to fix, a non-zero
exit, and no traceback. Almost all fail before any server launch, and they run in parallel, so this is quick.

``python tests/test_bad_input.py`` runs the cases and rewrites docs/bad-inputs.md from what they print.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, write_run, write_space

if TYPE_CHECKING:
    import optuna  # imported where a case needs it: collecting these tests does not pay for it

CLI = "from tuner.cli import app; app()"
# A machine whose NVML sees exactly one GPU (index 0): what `--gpus 7` meets on a real one-GPU host.
ONE_GPU_NVML = (
    "import pynvml\n"
    "def _handle(i):\n"
    "    if not 0 <= i < 1: raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)\n"
    "    return ('gpu', i)\n"
    "pynvml.nvmlInit = lambda: None\n"
    "pynvml.nvmlDeviceGetCount = lambda: 1\n"
    "pynvml.nvmlDeviceGetHandleByIndex = _handle\n"
)


@dataclass
class Case:
    id: str
    mistake: str
    command: str  # as a user would type it (run.yaml: the run file, space.yaml: its search space)
    setup: Callable[[Path], list[str]]  # writes the files into a fresh folder, returns the CLI arguments
    words: tuple[str, ...]  # what the message must say (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    prelude: str = ""  # Python run before the CLI (a fake NVML)
    needs: Callable[[], bool] | None = None  # skipped when this returns False


def _space(tmp: Path, text: str) -> Path:
    path = tmp / "space.yaml"
    path.write_text(text)
    return path


def _run_text(tmp: Path, text: str) -> list[str]:
    (tmp / "run.yaml").write_text(text)
    return ["start", "-c", str(tmp / "run.yaml")]


def _start(**run) -> Callable[[Path], list[str]]:
    return lambda tmp: ["start", "-c", str(write_run(tmp, **run))]


def _start_space(text: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["start", "-c", str(write_run(tmp, space=_space(tmp, text)))]


def _start_args(*args: str, **run) -> Callable[[Path], list[str]]:
    return lambda tmp: ["start", "-c", str(write_run(tmp, **run)), *args]


def _on_missing_study(command: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [command, "--study", "nope", "--storage", _existing_study(tmp)]


def _existing_study(tmp: Path) -> str:
    import optuna

    storage = f"sqlite:///{tmp}/studies.db"
    optuna.create_study(storage=storage, study_name="t")
    return storage


def _feasible_study(tmp: Path) -> str:
    import optuna

    storage = f"sqlite:///{tmp}/studies.db"
    study = optuna.create_study(storage=storage, study_name="t", direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            value=100.0,
            user_attrs={"feasible": True, "flags": {"model-path": "m", "port": 30000, "schedule-policy": "lof"}},
        )
    )
    return storage


def _not_executable(tmp: Path) -> list[str]:
    script = tmp / "serve.sh"
    script.write_text('#!/bin/sh\nexec python -m sglang.launch_server "$@"\n')
    script.chmod(0o644)
    return ["start", "-c", str(write_run(tmp)), "--server-command", str(script)]


def _file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("mine\n")
    return tmp / "notes.txt"


def _other_app_db(tmp: Path) -> Path:
    """Another application's SQLite database: tables, none of them Optuna's."""
    import sqlite3

    with sqlite3.connect(tmp / "app.db") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER)")
    db.close()
    return tmp / "app.db"


def _config_twice(tmp: Path) -> list[str]:
    run = write_run(tmp)
    other = tmp / "other.yaml"
    other.write_text(run.read_text())
    return ["start", "-c", str(run), "-c", str(other)]


def _module_missing(name: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return importlib.util.find_spec(name) is None

    return check


_HELD: list[socket.socket] = []  # listening sockets that make a port "in use" for the whole run


def _held_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _HELD.append(s)
    return s.getsockname()[1]


def _port_in_use(tmp: Path) -> list[str]:
    return ["start", "-c", str(write_run(tmp)), "--port", str(_held_port()), "--quiet"]


def _no_feasible_trial(tmp: Path) -> list[str]:
    import optuna

    storage = f"sqlite:///{tmp}/studies.db"
    study = optuna.create_study(storage=storage, study_name="t", direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(value=0.0, user_attrs={"feasible": False, "failure_class": "oom_kv_startup"})
    )
    return ["export", "--study", "t", "--storage", storage, "--out", str(tmp / "out")]


def _dashboard_port_in_use(tmp: Path) -> list[str]:
    import optuna

    storage = f"sqlite:///{tmp}/studies.db"
    optuna.create_study(storage=storage, study_name="t")
    return ["dashboard", "--study", "t", "--storage", storage, "--port", str(_held_port())]


def _docker_up() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _dashboard_installed() -> bool:
    try:
        import optuna_dashboard  # noqa: F401 - only whether it is installed

        return True
    except ImportError:
        return False


def _replay(surface: str, **run) -> Callable[[Path], list[str]]:
    """A replay of a committed surface (copied beside the run file, as in the repository); ``run``'s sections
    replace the stand-in run file's whole."""

    def setup(tmp: Path) -> list[str]:
        (tmp / "surfaces").mkdir()
        shutil.copy(ROOT / "surfaces" / surface, tmp / "surfaces" / surface)
        raw = yaml.safe_load(
            write_run(
                tmp,
                model={"path": "Qwen/Qwen3-8B"},
                space=ROOT / REPLAY_SPACE[surface],
                launcher={"kind": "replay", "surface": f"surfaces/{surface}"},
            ).read_text()
        )
        raw.update(run)
        (tmp / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["start", "-c", str(tmp / "run.yaml")]

    return setup


def _replay_edited(surface: str, edit: Callable[[dict], None], **run) -> Callable[[Path], list[str]]:
    """``_replay`` of the surface as ``edit`` changes it (its JSON, in place)."""
    import json

    def setup(tmp: Path) -> list[str]:
        args = _replay(surface, **run)(tmp)
        path = tmp / "surfaces" / surface
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return args

    return setup


def _set(*path_value) -> Callable[[dict], None]:
    *path, value = path_value

    def edit(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


RANDOM, CHAT = "h200-qwen3-8b-random.json", "h200-qwen3-8b-chat.json"  # fixed concurrency; an SLO-goodput search
REPLAY_SPACE = {RANDOM: "search_spaces/h200-qwen3-8b.yaml", CHAT: "search_spaces/h200-qwen3-8b-chat.yaml"}
RANDOM_WORKLOAD = {"input_len": 512, "output_len": 128, "concurrency": [1, 16, 64]}
CHAT_WORKLOAD = {
    "dataset": "shared-prefix",
    "shared_prefix": {
        "groups": 16,
        "prompts_per_group": 16,
        "system_prompt_len": 2048,
        "question_len": 128,
        "output_len": 256,
    },
}
CHAT_SEARCH = {
    "start_rate": 4,
    "max_rate": 64,
    "factor": 2,
    "bisect_steps": 2,
    "level_duration_s": 15,
    "min_prompts": 48,
}
CHAT_OBJECTIVE = {"metrics": ["goodput"], "slo": {"p99_ttft_ms": 2000, "p99_tpot_ms": 40}, "load_search": CHAT_SEARCH}


def _recorded_only_no_row(tmp: Path) -> list[str]:
    """A replay on recorded rows whose space offers a chunk size no recorded trial of the surface ran."""
    args = _replay(
        RANDOM,
        workload=RANDOM_WORKLOAD,
        launcher={"kind": "replay", "surface": f"surfaces/{RANDOM}", "recorded_only": True},
    )(tmp)
    text = (ROOT / REPLAY_SPACE[RANDOM]).read_text()
    (tmp / "space.yaml").write_text(text.replace("{choices: [2048, 4096, 8192, 16384]}", "{choices: [1024]}"))
    run = yaml.safe_load((tmp / "run.yaml").read_text())
    (tmp / "run.yaml").write_text(yaml.safe_dump({**run, "space": "space.yaml"}, sort_keys=False))
    return args


def _not_a_surface(tmp: Path) -> list[str]:
    (tmp / "surface.json").write_text('{"format": 1, "header": {}}')
    return _start(launcher={"kind": "replay", "surface": "surface.json"})(tmp)


def _warm_from_not_a_surface(tmp: Path) -> list[str]:
    (tmp / "surface.json").write_text('{"format": 1, "header": {}}')
    return _start(sampler={"warm_start": "surface.json"})(tmp)


SWEEP_CSV = "chunk,conc,tput,status\n2048,8,1000,\n4096,8,fast,\n"


# A mapping file (for _import's sweep) whose context length is no length.
_NEGATIVE_CONTEXT = "metrics: {tput: output_throughput}\nheader:\n  context_len: -8192\n"


def _import(*args: str, csv: str = SWEEP_CSV, mapping: str = "") -> Callable[[Path], list[str]]:
    """`tune import` of a small CSV sweep (chunk: --chunked-prefill-size, conc, tput, status) with ``args``, and
    ``mapping`` as mapping.yaml."""

    def setup(tmp: Path) -> list[str]:
        (tmp / "sweep.csv").write_text(csv)
        if mapping:
            (tmp / "mapping.yaml").write_text(mapping)
        return ["import", "sweep.csv", "--out", "s.json", *args]

    return setup


def _replay_imported(tmp: Path) -> list[str]:
    """A replay, by a p99-TTFT objective, of a surface imported with output_throughput only."""
    (tmp / "sweep.csv").write_text("chunk,conc,tput\n2048,8,1000\n4096,8,1100\n")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "import",
            "sweep.csv",
            "--out",
            "s.json",
            "--concurrency",
            "conc",
            "--flag",
            "chunk=chunked-prefill-size",
            "--metric",
            "tput=output_throughput",
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    space = _space(tmp, "params:\n  chunked-prefill-size: {choices: [2048, 4096]}\n")
    raw = yaml.safe_load(write_run(tmp, space=space, launcher={"kind": "replay", "surface": "s.json"}).read_text())
    raw.pop("model")
    raw["workload"] = {"concurrency": [8]}
    raw["objective"] = {"metrics": ["p99_ttft_ms"], "at_concurrency": 8}
    (tmp / "run.yaml").write_text(yaml.safe_dump(raw))
    return ["start", "-c", str(tmp / "run.yaml")]


def _sharegpt(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "chats.json").write_text(text)
        return ["start", "-c", str(write_run(tmp, workload={"dataset": "sharegpt", "path": "chats.json"}))]

    return setup


def _request_log(text: str | None, **workload) -> Callable[[Path], list[str]]:
    """A run file with a request-log workload (without write_run's lengths, which the log gives); ``text`` the
    log's content (None: no file)."""

    def setup(tmp: Path) -> list[str]:
        if text is not None:
            (tmp / "log.jsonl").write_text(text)
        run = write_run(tmp, workload={"dataset": "request-log", "path": "log.jsonl", **workload})
        raw = yaml.safe_load(run.read_text())
        for key in ("input_len", "output_len"):
            if key not in workload:
                del raw["workload"][key]
        run.write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["start", "-c", str(run)]

    return setup


_USAGE = '"usage": {"prompt_tokens": 5, "completion_tokens": 2}'


def _recordable_study(tmp: Path) -> str:
    """A finished real study `tune record` can turn into a surface: one trial that failed at startup."""
    import optuna

    storage = f"sqlite:///{tmp}/studies.db"
    study = optuna.create_study(storage=storage, study_name="t", direction="maximize")
    study.set_user_attr("run_config", {"model": {"path": "m"}, "workload": {"input_len": 8, "output_len": 8}})
    study.set_user_attr("metrics", ["output_throughput"])
    study.add_trial(
        optuna.trial.create_trial(
            value=0.0,
            user_attrs={"feasible": False, "failure_class": "oom_kv_startup", "flags": {"schedule-policy": "lof"}},
        )
    )
    return storage


def _record(
    out: Callable[[Path], str], sglang_help: Callable[[Path], Path] | None = None
) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        if sglang_help is None:
            help_file = tmp / "help.txt"
            help_file.write_text(
                subprocess.run(
                    [sys.executable, str(ROOT / "tests" / "standin" / "sglang_standin.py"), "--help"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout
            )
        else:
            help_file = sglang_help(tmp)
        storage = _recordable_study(tmp)
        return [
            "record",
            "--study",
            "t",
            "--storage",
            storage,
            "--out",
            out(tmp),
            "--gpu-name",
            "g",
            "--sglang-help",
            str(help_file),
        ]

    return setup


def _binary(tmp: Path) -> Path:
    """A binary file where a text one belongs: an Optuna SQLite database (what `studies/t.db` is)."""
    import optuna

    optuna.create_study(storage=f"sqlite:///{tmp}/t.db", study_name="t")
    return tmp / "t.db"


def _resumed(
    setup: Callable[[Path], list[str]], trial: Callable[[], optuna.trial.FrozenTrial]
) -> Callable[[Path], list[str]]:
    """A study already in the run file's storage holding ``trial``, as an earlier `tune start` left it."""

    def with_study(tmp: Path) -> list[str]:
        import optuna

        args = setup(tmp)
        (tmp / "studies").mkdir(exist_ok=True)
        study = optuna.create_study(storage=f"sqlite:///{tmp}/studies/t.db", study_name="t", direction="maximize")
        study.add_trial(trial())
        return args

    return with_study


def _float_range_trial():
    import optuna

    return optuna.trial.create_trial(
        params={"mem-fraction-static": 0.8},
        value=100.0,
        distributions={"mem-fraction-static": optuna.distributions.FloatDistribution(0.7, 0.9)},
    )


def _baseline_refused_trial():
    import optuna

    return optuna.trial.create_trial(
        value=0.0,
        user_attrs={
            "baseline": True,
            "feasible": False,
            "failure_class": "invalid_flag",
            "failure_detail": "launch_server: error: argument --max-running-requests: invalid int value: 'lots'",
        },
    )


CASES = [
    # -- the run file
    Case(
        "run-missing",
        "run file missing",
        "tune start -c nope.yaml",
        lambda tmp: ["start", "-c", str(tmp / "nope.yaml")],
        ("nope.yaml", "no such run file"),
    ),
    Case(
        "run-twice",
        "`-c` given twice",
        "tune start -c run.yaml -c other.yaml",
        _config_twice,
        ("-c given twice", "run.yaml, then", "other.yaml"),
    ),
    Case(
        "run-not-yaml",
        "run file not YAML",
        "tune start -c run.yaml  # a: [1",
        lambda tmp: _run_text(tmp, "a: [1\nb: 2\n"),
        ("run.yaml:2", "not valid yaml"),
    ),
    Case(
        "run-not-mapping",
        "run file not a mapping",
        "tune start -c run.yaml  # - a",
        lambda tmp: _run_text(tmp, "- a\n- b\n"),
        ("run.yaml", "mapping"),
    ),
    Case(
        "unknown-key",
        "unknown top-level key",
        "tune start -c run.yaml  # trails: 3",
        _start(trails=3),
        ("trails", "unknown key", "trials"),
    ),
    Case(
        "unknown-nested-key",
        "unknown nested key",
        "tune start -c run.yaml  # workload: {concurency: [1]}",
        _start(workload={"concurency": [1]}),
        ("workload.concurency", "unknown key", "concurrency"),
    ),
    Case(
        "trials-ten",
        "trials not a number",
        "tune start -c run.yaml  # trials: ten",
        _start(trials="ten"),
        ("run.yaml:5: trials", "whole number", "ten"),
    ),
    Case(
        "trials-true",
        "trials a boolean",
        "tune start -c run.yaml  # trials: yes",
        _start(trials=True),
        ("trials", "whole number", "true"),
    ),
    Case(
        "trials-inf",
        "trials infinite",
        "tune start -c run.yaml  # trials: .inf",
        _start(trials=float("inf")),
        ("trials", "whole number", "inf"),
    ),
    Case(
        "gpus-letters",
        "gpus not numbers",
        'tune start -c run.yaml  # gpus: "a,b"',
        _start(gpus="a,b"),
        ("gpus", "whole numbers", "a,b"),
    ),
    Case(
        "concurrency-zero",
        "concurrency level 0",
        "tune start -c run.yaml  # workload: {concurrency: [0]}",
        _start(workload={"concurrency": [0]}),
        ("workload.concurrency[0]", "must be >= 1"),
    ),
    Case(
        "concurrency-word",
        "concurrency not a list of numbers",
        "tune start -c run.yaml  # workload: {concurrency: many}",
        _start(workload={"concurrency": "many"}),
        ("workload.concurrency", "whole numbers"),
    ),
    Case(
        "num-prompts-zero",
        "num_prompts 0",
        "tune start -c run.yaml  # workload: {num_prompts: 0}",
        _start(workload={"num_prompts": 0}),
        ("workload.num_prompts", "must be >= 1"),
    ),
    Case(
        "endpoint",
        "unknown endpoint",
        "tune start -c run.yaml  # workload: {endpoint: foo}",
        _start(workload={"endpoint": "foo"}),
        ("endpoint", "completions"),
    ),
    Case(
        "startup-timeout",
        "startup timeout 0",
        "tune start -c run.yaml  # launcher: {startup_timeout_s: 0}",
        _start(launcher={"startup_timeout_s": 0}),
        ("launcher.startup_timeout_s", "must be > 0"),
    ),
    Case(
        "model-not-mapping",
        "section not a mapping",
        "tune start -c run.yaml  # model: foo",
        _start(model="foo"),
        ("model", "expected a mapping"),
    ),
    Case(
        "model-empty",
        "no model given",
        'tune start -c run.yaml  # model: {path: ""}',
        _start(model={"path": ""}),
        ("model.path", "--model"),
    ),
    Case(
        "objective-typo",
        "objective metric misspelled",
        "tune start -c run.yaml  # objective: {metrics: [output_througput]}",
        _start(objective={"metrics": ["output_througput"]}),
        ("output_througput", "output_throughput"),
    ),
    Case(
        "slo-unknown",
        "SLO on an unknown metric",
        "tune start -c run.yaml  # objective: {slo: {p99_ttft: 100}}",
        _start(objective={"slo": {"p99_ttft": 100}}),
        ("p99_ttft", "p99_ttft_ms"),
    ),
    Case(
        "at-concurrency",
        "at_concurrency not among the levels",
        "tune start -c run.yaml  # objective: {at_concurrency: 4}, concurrency [1, 8]",
        _start(objective={"at_concurrency": 4}),
        ("at_concurrency", "4", "[1, 8]"),
    ),
    Case(
        "dataset-missing",
        "dataset file missing",
        "tune start -c run.yaml  # workload: {dataset: /nope.jsonl}",
        _start(workload={"dataset": "/nope.jsonl"}),
        ("workload.dataset", "/nope.jsonl", "no such file"),
    ),
    Case(
        "sharegpt-no-path",
        "dataset sharegpt without its file",
        "tune start -c run.yaml  # workload: {dataset: sharegpt}",
        _start(workload={"dataset": "sharegpt"}),
        ("workload.path", "sharegpt"),
    ),
    Case(
        "sharegpt-plain-text",
        "ShareGPT file that is plain text",
        "tune start -c run.yaml  # workload: {dataset: sharegpt, path: chats.json}, chats.json: hello there",
        _sharegpt("hello there\nhow are you\n"),
        ("workload.path", "chats.json:1: not json", "one json record a line", '"messages"'),
    ),
    Case(
        "sharegpt-empty-list",
        "ShareGPT file that is an empty list",
        "tune start -c run.yaml  # workload: {dataset: sharegpt, path: chats.json}, chats.json: []",
        _sharegpt("[]"),
        ("workload.path", "chats.json: no conversation with a prompt and a reply", '"conversations"', '"messages"'),
    ),
    Case(
        "request-log-no-path",
        "dataset request-log without its file",
        "tune start -c run.yaml  # workload: {dataset: request-log}",
        _start(workload={"dataset": "request-log"}),
        ("workload.path", "request-log", "requests.jsonl"),
    ),
    Case(
        "request-log-with-lengths",
        "request-log workload that also sets input_len",
        "tune start -c run.yaml  # workload: {dataset: request-log, path: log.jsonl, input_len: 512}",
        _request_log(f'{{"timestamp": 1, {_USAGE}}}\n{{"timestamp": 2, {_USAGE}}}\n', input_len=512),
        ("workload.input_len", "from the log", "remove input_len"),
    ),
    Case(
        "request-log-missing",
        "request log missing",
        "tune start -c run.yaml  # workload: {dataset: request-log, path: log.jsonl}, no log.jsonl",
        _request_log(None),
        ("workload.path", "log.jsonl", "no such file"),
    ),
    Case(
        "request-log-plain-text",
        "request log that is plain text",
        "tune start -c run.yaml  # workload: {dataset: request-log, path: log.jsonl}, log.jsonl: hello there",
        _request_log("hello there\n"),
        ("workload.path", "log.jsonl: 0 requests", "usage", "request.finished"),
    ),
    Case(
        "request-log-no-usage",
        "request log with a record without token counts",
        'tune start -c run.yaml  # workload: {dataset: request-log, path: log.jsonl}, line 2: {"timestamp": 2}',
        _request_log(f'{{"timestamp": 1, {_USAGE}}}\n{{"timestamp": 2}}\n'),
        ("workload.path", "log.jsonl:2", "no usage"),
    ),
    Case(
        "request-log-sglang-text",
        "SGLang's plain-text request log",
        "tune start -c run.yaml  # workload: {dataset: request-log, path: log.jsonl}, log.jsonl: Finish: obj=...",
        _request_log("[2026-01-01 00:00:00] Finish: obj=GenerateReqInput(text='hi'), out={'text': 'yo'}\n"),
        ("workload.path", "--log-requests-format json"),
    ),
    Case(
        "shared-prefix-no-shape",
        "shared-prefix dataset without its shape",
        "tune start -c run.yaml  # workload: {dataset: shared-prefix}",
        _start(workload={"dataset": "shared-prefix"}),
        ("shared-prefix", "shared_prefix", "groups"),
    ),
    Case(
        "shared-prefix-typo",
        "shared_prefix key misspelled",
        "tune start -c run.yaml  # workload: {dataset: shared-prefix, shared_prefix: {group: 4}}",
        _start(workload={"dataset": "shared-prefix", "shared_prefix": {"group": 4}}),
        ("workload.shared_prefix.group", "unknown key", "groups"),
    ),
    Case(
        "range-ratio",
        "range ratio above 1",
        "tune start -c run.yaml  # workload: {range_ratio: 2}",
        _start(workload={"range_ratio": 2}),
        ("workload.range_ratio", "must be <= 1"),
    ),
    Case(
        "burstiness-poisson",
        "burstiness with Poisson arrivals",
        "tune start -c run.yaml  # workload: {arrival: {burstiness: 0.5}}",
        _start(workload={"arrival": {"burstiness": 0.5}}),
        ("burstiness 0.5", "process: gamma"),
    ),
    Case(
        "goodput-no-slo",
        "goodput objective without an SLO",
        "tune start -c run.yaml  # objective: {metrics: [goodput]}",
        _start(objective={"metrics": ["goodput"]}),
        ("objective.slo", "goodput", "p99_ttft_ms"),
    ),
    Case(
        "slo-higher-is-better",
        "an SLO limit on a higher-is-better metric",
        "tune start -c run.yaml  # objective: {slo: {output_throughput: 100}}",
        _start(objective={"slo": {"output_throughput": 100}}),
        ("objective.slo.output_throughput", "maximum", "higher-is-better", "metrics"),
    ),
    Case(
        "goodput-fixed-rate",
        "a fixed request rate with the goodput objective",
        "tune start -c run.yaml  # workload: {request_rate: 8}, objective: {metrics: [goodput], slo: {...}}",
        _start(workload={"request_rate": 8}, objective={"metrics": ["goodput"], "slo": {"p99_ttft_ms": 2000}}),
        ("workload.request_rate", "goodput", "load_search"),
    ),
    Case(
        "load-search-alone",
        "load_search without the goodput objective",
        "tune start -c run.yaml  # objective: {load_search: {start_rate: 1}}",
        _start(objective={"load_search": {"start_rate": 1}}),
        ("objective.load_search", "goodput"),
    ),
    Case(
        "load-search-rates",
        "load search that starts above its maximum",
        "tune start -c run.yaml  # objective: {metrics: [goodput], slo: {...}, "
        "load_search: {start_rate: 64, max_rate: 8}}",
        _start(
            workload={"num_prompts": None},
            objective={
                "metrics": ["goodput"],
                "slo": {"p99_ttft_ms": 2000},
                "load_search": {"start_rate": 64, "max_rate": 8},
            },
        ),
        ("objective.load_search", "start_rate 64", "max_rate 8"),
    ),
    Case(
        "run-duplicate-key",
        "a key twice in the run file",
        "tune start -c run.yaml  # trials: 3 ... trials: 4",
        lambda tmp: _run_text(tmp, "study: t\ntrials: 3\nmodel: {path: m}\ntrials: 4\n"),
        ("run.yaml:4", "'trials' appears twice", "line 2"),
    ),
    Case(
        "run-directory",
        "run file that is a directory",
        "tune start -c runs/",
        lambda tmp: ["start", "-c", str(tmp)],
        ("is a directory", "not a run file"),
    ),
    Case(
        "run-binary",
        "run file that is a binary file",
        "tune start -c studies/t.db",
        lambda tmp: ["start", "-c", str(_binary(tmp))],
        ("t.db", "a binary file, not a run file", "give the yaml run file"),
    ),
    Case(
        "slo-negative",
        "a negative SLO limit",
        "tune start -c run.yaml  # objective: {slo: {p99_ttft_ms: -5}}",
        _start(objective={"slo": {"p99_ttft_ms": -5}}),
        ("objective.slo.p99_ttft_ms", "must be > 0", "-5"),
    ),
    Case(
        "metrics-twice",
        "the same metric twice",
        "tune start -c run.yaml  # objective: {metrics: [output_throughput, output_throughput]}",
        _start(objective={"metrics": ["output_throughput", "output_throughput"]}),
        ("objective.metrics", "output_throughput twice"),
    ),
    Case(
        "sampler",
        "unknown sampler",
        "tune start -c run.yaml  # sampler: {name: cmaes}",
        _start(sampler={"name": "cmaes"}),
        ("sampler.name", "tpe"),
    ),
    # -- references (run beside the baseline; their flags are checked against the server's --help like the space)
    Case(
        "reference-twice",
        "two references with one name",
        "tune start -c run.yaml  # references: [{name: a, flags: {...}}, {name: a, flags: {...}}]",
        _start(
            references=[
                {"name": "a", "flags": {"schedule-policy": "lof"}},
                {"name": "a", "flags": {"schedule-policy": "fcfs"}},
            ]
        ),
        ("references[1].name", "distinct name"),
    ),
    Case(
        "reference-unknown-builtin",
        "a reference with no flags that is not a built-in",
        "tune start -c run.yaml  # references: [{name: mine}]",
        _start(references=[{"name": "mine"}]),
        ("references[0]", "'mine' has no flags", "seed-balanced-v2"),
    ),
    Case(
        "reference-builtin-with-flags",
        "a built-in reference's name given flags",
        "tune start -c run.yaml  # references: [{name: seed-balanced-v2, flags: {schedule-policy: fcfs}}]",
        _start(references=[{"name": "seed-balanced-v2", "flags": {"schedule-policy": "fcfs"}}]),
        ("references[0].name", "seed-balanced-v2", "built-in", "another name", "drop flags"),
    ),
    Case(
        "reference-flag-dashes",
        "a reference flag written with dashes",
        "tune start -c run.yaml  # references: [{name: x, flags: {--schedule-policy: lof}}]",
        _start(references=[{"name": "x", "flags": {"--schedule-policy": "lof"}}]),
        ("references[0].flags.--schedule-policy", "without dashes", "schedule-policy"),
    ),
    Case(
        "reference-flag-owned",
        "a reference setting a flag the tuner sets itself",
        "tune start -c run.yaml  # references: [{name: x, flags: {port: 8000}}]",
        _start(references=[{"name": "x", "flags": {"port": 8000}}]),
        ("references[0].flags.port", "set by the tuner itself", "remove it from the reference"),
    ),
    Case(
        "reference-flag-list",
        "a reference flag given a list",
        "tune start -c run.yaml  # references: [{name: x, flags: {schedule-policy: [lof]}}]",
        _start(references=[{"name": "x", "flags": {"schedule-policy": ["lof"]}}]),
        ("references[0].flags.schedule-policy",),
    ),
    Case(
        "reference-flag-unknown",
        "a reference flag SGLang does not have",
        "tune start -c run.yaml  # references: [{name: x, flags: {schedule-polcy: lof}}]",
        _start(references=[{"name": "x", "flags": {"schedule-polcy": "lof"}}]),
        ("references[0].flags.schedule-polcy", "--schedule-polcy is not a flag"),
    ),
    Case(
        "reference-flag-word",
        "a reference's number flag given a word",
        "tune start -c run.yaml  # references: [{name: x, flags: {mem-fraction-static: high}}]",
        _start(references=[{"name": "x", "flags": {"mem-fraction-static": "high"}}]),
        ("references[0].flags.mem-fraction-static", "takes a number", "high"),
    ),
    # -- command-line options
    Case(
        "study-slash",
        "study name with a slash",
        "tune start -c run.yaml --study a/b",
        _start_args("--study", "a/b"),
        ("study", "a/b", "plain name"),
    ),
    Case(
        "trials-zero",
        "--trials 0",
        "tune start -c run.yaml --trials 0",
        _start_args("--trials", "0"),
        ("trials", "must be >= 1"),
    ),
    Case(
        "trials-negative",
        "--trials -3",
        "tune start -c run.yaml --trials -3",
        _start_args("--trials", "-3"),
        ("trials", "must be >= 1", "-3"),
    ),
    Case(
        "trials-option-word",
        "--trials not a number",
        "tune start --trials ten",
        lambda tmp: ["start", "--trials", "ten"],
        ("--trials", "integer", "--help"),
    ),
    Case(
        "unknown-option",
        "option misspelled",
        "tune start --gpu 0",
        lambda tmp: ["start", "--gpu", "0"],
        ("no such option", "--gpus"),
    ),
    Case(
        "gpus-option-letters",
        "--gpus not numbers",
        "tune start -c run.yaml --gpus a,b",
        _start_args("--gpus", "a,b"),
        ("gpus", "whole numbers"),
    ),
    Case(
        "gpus-negative",
        "--gpus negative",
        "tune start -c run.yaml --gpus -1",
        _start_args("--gpus", "-1"),
        ("gpus", ">= 0"),
    ),
    Case(
        "gpus-duplicate",
        "--gpus repeated",
        "tune start -c run.yaml --gpus 0,0",
        _start_args("--gpus", "0,0"),
        ("gpus", "distinct"),
    ),
    Case(
        "port-range",
        "port out of range",
        "tune start -c run.yaml --port 70000",
        _start_args("--port", "70000"),
        ("launcher.port", "must be <= 65535", "70000"),
    ),
    Case(
        "port-word",
        "port not a number",
        "tune start -c run.yaml --port abc",
        _start_args("--port", "abc"),
        ("--port", "integer"),
    ),
    Case(
        "launcher-kind",
        "unknown launcher",
        "tune start -c run.yaml --launcher podman",
        _start_args("--launcher", "podman"),
        ("launcher.kind", "podman", "docker"),
    ),
    Case(
        "docker-no-image",
        "docker launcher without an image",
        "tune start -c run.yaml --launcher docker",
        _start_args("--launcher", "docker"),
        ("launcher.image", "image"),
    ),
    # -- the search space (checked against the server's own --help, before any launch)
    Case(
        "space-missing",
        "search-space file missing",
        "tune start -c run.yaml  # space: nospace.yaml",
        lambda tmp: ["start", "-c", str(write_run(tmp, space=tmp / "nospace.yaml"))],
        ("nospace.yaml", "no such search-space file"),
    ),
    Case(
        "space-not-yaml",
        "search space not YAML",
        "tune start -c run.yaml  # space.yaml: params: [",
        _start_space("params: [\n"),
        ("space.yaml:2", "not valid yaml"),
    ),
    Case(
        "space-unknown-key",
        "unknown parameter key",
        "space.yaml: schedule-policy: {choises: [fcfs]}",
        _start_space("params:\n  schedule-policy: {choises: [fcfs]}\n"),
        ("space.yaml:2", "choises", "choices"),
    ),
    Case(
        "space-empty-range",
        "empty range",
        "space.yaml: mem-fraction-static: {low: 0.9, high: 0.9}",
        _start_space("params:\n  mem-fraction-static: {low: 0.9, high: 0.9}\n"),
        ("space.yaml:2", "empty range"),
    ),
    Case(
        "space-empty-choices",
        "empty choices",
        "space.yaml: schedule-policy: {choices: []}",
        _start_space("params:\n  schedule-policy: {choices: []}\n"),
        ("space.yaml:2", "params.schedule-policy.choices", "must not be empty"),
    ),
    Case(
        "space-unknown-flag",
        "a flag SGLang does not have",
        "space.yaml: schedule-polcy: {choices: [fcfs, lof]}",
        _start_space("params:\n  schedule-polcy: {choices: [fcfs, lof]}\n"),
        ("space.yaml:2", "--schedule-polcy", "not a flag"),
    ),
    Case(
        "space-flag-prefix",
        "a flag name cut short",
        "space.yaml: fixed: {disable-radix-cach: true}",
        _start_space("fixed:\n  disable-radix-cach: true\nparams:\n  schedule-policy: {choices: [fcfs, lof]}\n"),
        ("--disable-radix-cach", "--disable-radix-cache"),
    ),
    Case(
        "space-bad-choice",
        "an invalid choice value",
        "space.yaml: schedule-policy: {choices: [fcfs, fastest]}",
        _start_space("params:\n  schedule-policy: {choices: [fcfs, fastest]}\n"),
        ("space.yaml:2", "fastest", "not one of"),
    ),
    Case(
        "space-when-unknown",
        "`when` on an unknown flag",
        "space.yaml: torch-compile-max-bs: {low: 1, high: 8, when: {enable-torch-compil: true}}",
        _start_space("params:\n  torch-compile-max-bs: {low: 1, high: 8, when: {enable-torch-compil: true}}\n"),
        ("space.yaml:2", "enable-torch-compil", "neither fixed nor a parameter"),
    ),
    Case(
        "space-when-scalar",
        "`when` not a mapping",
        "space.yaml: schedule-policy: {choices: [fcfs], when: enable}",
        _start_space("params:\n  schedule-policy: {choices: [fcfs], when: enable}\n"),
        ("space.yaml:2", "when"),
    ),
    Case(
        "space-log-word",
        "`log` not true/false",
        "space.yaml: mem-fraction-static: {low: 0.7, high: 0.9, log: maybe}",
        _start_space("params:\n  mem-fraction-static: {low: 0.7, high: 0.9, log: maybe}\n"),
        ("space.yaml:2", "log", "true or false"),
    ),
    Case(
        "space-owned-port",
        "a flag the tuner sets itself, fixed",
        "space.yaml: fixed: {port: 30001}",
        _start_space("fixed:\n  port: 30001\nparams:\n  schedule-policy: {choices: [fcfs, lof]}\n"),
        ("space.yaml:2", "fixed.port", "set by the tuner itself"),
    ),
    Case(
        "space-owned-model",
        "a flag the tuner sets itself, tuned",
        "space.yaml: served-model-name: {choices: [a, b]}",
        _start_space("params:\n  served-model-name: {choices: [a, b]}\n"),
        ("space.yaml:2", "--served-model-name", "set by the tuner itself"),
    ),
    Case(
        "space-step-too-big",
        "a step larger than the range",
        "space.yaml: mem-fraction-static: {low: 0.1, high: 0.2, step: 0.3}",
        _start_space("params:\n  mem-fraction-static: {low: 0.1, high: 0.2, step: 0.3}\n"),
        ("space.yaml:2", "step: 0.3 is larger than the range"),
    ),
    Case(
        "space-low-above-high",
        "low above high",
        "space.yaml: mem-fraction-static: {low: 0.9, high: 0.8}",
        _start_space("params:\n  mem-fraction-static: {low: 0.9, high: 0.8}\n"),
        ("space.yaml:2", "empty range", "below high"),
    ),
    Case(
        "space-int-float-bounds",
        "a whole-number flag given fractional bounds",
        "space.yaml: torch-compile-max-bs: {low: 1.5, high: 8}",
        _start_space("params:\n  torch-compile-max-bs: {low: 1.5, high: 8}\n"),
        ("space.yaml:2", "params.torch-compile-max-bs.low", "takes a whole number", "1.5"),
    ),
    Case(
        "space-int-float-step",
        "a whole-number flag given a fractional step",
        "space.yaml: torch-compile-max-bs: {low: 1, high: 8, step: 0.5}",
        _start_space("params:\n  torch-compile-max-bs: {low: 1, high: 8, step: 0.5}\n"),
        ("params.torch-compile-max-bs.step", "takes a whole number", "0.5"),
    ),
    Case(
        "space-fixed-word",
        "a number flag given a word",
        "space.yaml: fixed: {mem-fraction-static: high}",
        _start_space("fixed:\n  mem-fraction-static: high\nparams:\n  schedule-policy: {choices: [fcfs, lof]}\n"),
        ("space.yaml:2", "fixed.mem-fraction-static", "takes a number", "high"),
    ),
    Case(
        "space-int-choice-word",
        "a whole-number flag given a word among its choices",
        "space.yaml: torch-compile-max-bs: {choices: [big, 64]}",
        _start_space("params:\n  torch-compile-max-bs: {choices: [big, 64]}\n"),
        ("space.yaml:2", "choices[0]", "takes a whole number", "big"),
    ),
    Case(
        "space-duplicate-flag",
        "a flag twice in the space",
        "space.yaml: schedule-policy twice under params",
        _start_space("params:\n  schedule-policy: {choices: [fcfs]}\n  schedule-policy: {choices: [lof]}\n"),
        ("space.yaml:3", "'schedule-policy' appears twice"),
    ),
    # -- storage
    Case(
        "storage-no-scheme",
        "storage URL without a scheme",
        "tune start -c run.yaml --storage studies/x.db",
        _start(storage="studies/x.db"),
        ("--storage", "not a database url", "sqlite:///"),
    ),
    Case(
        "storage-dialect",
        "unknown database dialect",
        "tune start -c run.yaml --storage foo://bar",
        _start(storage="foo://bar"),
        ("--storage foo://bar", "cannot open it"),
    ),
    Case(
        "storage-postgres-down",
        "PostgreSQL unreachable",
        "tune start -c run.yaml --storage postgresql://tuner:pw@127.0.0.1:1/db",
        _start(storage="postgresql://tuner:pw@127.0.0.1:1/db"),
        ("--storage postgresql://***@127.0.0.1:1/db", "cannot open it"),
    ),
    Case(
        "storage-sqlite-folder",
        "SQLite folder that cannot be created",
        "tune start -c run.yaml --storage sqlite:////proc/x/y.db",
        _start(storage="sqlite:////proc/x/y.db"),
        ("--storage", "cannot create its folder", "/proc/x"),
    ),
    Case(
        "storage-sqlite-readonly",
        "SQLite in a read-only place",
        "tune start -c run.yaml --storage sqlite:////sys/x.db",
        _start(storage="sqlite:////sys/x.db"),
        ("--storage sqlite:////sys/x.db", "cannot write /sys", "a writable disk"),
    ),
    Case(
        "storage-sqlite-nofile",
        "SQLite storage without a file",
        "tune start -c run.yaml --storage sqlite://",
        _start_args("--storage", "sqlite://"),
        ("--storage sqlite://", "in memory", "file", "server"),
    ),
    Case(
        "storage-sqlite-memory",
        "SQLite storage in memory",
        "tune start -c run.yaml --storage sqlite:///:memory:",
        _start_args("--storage", "sqlite:///:memory:"),
        ("--storage sqlite:///:memory:", "in memory", "file", "server"),
    ),
    Case(
        "status-sqlite-memory",
        "`tune status` on an SQLite storage in memory",
        "tune status --storage sqlite:///:memory:",
        lambda tmp: ["status", "--storage", "sqlite:///:memory:"],
        ("--storage sqlite:///:memory:", "in memory", "file", "server"),
    ),
    Case(
        "storage-other-app",
        "SQLite storage that is another application's database",
        "tune start -c run.yaml --storage sqlite:///app.db  # app.db: tables users, orders",
        lambda tmp: ["start", "-c", str(write_run(tmp)), "--storage", f"sqlite:///{_other_app_db(tmp).name}"],
        ("--storage sqlite:///app.db", "not an optuna", "orders, users", "another file"),
    ),
    Case(
        "trials-dir-unwritable",
        "a trials folder that cannot be created",
        "tune start -c run.yaml  # trials_dir: /proc/nope",
        _start(trials_dir="/proc/nope"),
        ("trials_dir", "/proc/nope", "cannot create"),
    ),
    Case(
        "artifacts-unwritable",
        "an artifacts folder that cannot be created",
        "tune start -c run.yaml  # artifacts: /proc/nope",
        _start(artifacts="/proc/nope"),
        ("artifacts", "/proc/nope", "cannot create"),
    ),
    Case(
        "storage-mysql-driver",
        "MySQL storage without its driver",
        "tune status --study t --storage mysql://tuner:pw@127.0.0.1/db",
        lambda tmp: ["status", "--study", "t", "--storage", "mysql://tuner:pw@127.0.0.1/db"],
        ("mysql driver is not installed", "mysqldb", "pip install mysqlclient"),
        needs=_module_missing("MySQLdb"),
    ),
    # -- model and server
    Case(
        "model-missing",
        "model path that does not exist",
        "tune start -c run.yaml --model ./models/nope",
        _start_args("--model", "./models/nope"),
        ("./models/nope", "no such folder"),
    ),
    Case(
        "server-missing",
        "server command that does not exist",
        "tune start -c run.yaml --server-command /nonexistent/python",
        _start_args("--server-command", "/nonexistent/python"),
        ("/nonexistent/python", "cannot run"),
    ),
    Case(
        "server-not-sglang",
        "server command that is not SGLang",
        'tune start -c run.yaml --server-command "python -c pass"',
        _start_args("--server-command", "python -c pass"),
        ("no --port", "sglang"),
    ),
    Case(
        "server-not-executable",
        "server command without the run bit",
        "tune start -c run.yaml --server-command ./serve.sh  # chmod 644",
        _not_executable,
        ("serve.sh is not executable", "chmod +x"),
    ),
    Case(
        "server-directory",
        "server command that is a directory",
        "tune start -c run.yaml --server-command /tmp",
        lambda tmp: ["start", "-c", str(write_run(tmp)), "--server-command", str(tmp)],
        ("is a directory",),
    ),
    Case(
        "server-quote",
        "server command with an unbalanced quote",
        'tune start -c run.yaml --server-command "python3 -c \'print(1)"',
        _start_args("--server-command", "python3 -c 'print(1)"),
        ("launcher.command", "no closing quotation"),
    ),
    Case(
        "server-ignores-help",
        "server command that ignores --help",
        "tune start -c run.yaml --server-command \"python3 -c 'import time; time.sleep(1000)'\"",
        _start_args("--server-command", "python3 -c 'import time; time.sleep(1000)'"),
        ("--help printed nothing in 30 s", "stopped", "sglang"),
    ),
    Case(
        "server-true",
        "server command `true`",
        "tune start -c run.yaml --server-command true",
        _start_args("--server-command", "true"),
        ("true --help", "no --port", "sglang"),
    ),
    Case(
        "port-in-use",
        "port in use",
        "tune start -c run.yaml --port 30000  # something listens on 30000",
        _port_in_use,
        ("port", "in use", "--port"),
    ),
    Case(
        "docker-down",
        "Docker daemon down",
        "DOCKER_HOST=unix:///nonexistent.sock tune start -c run.yaml --launcher docker --image x",
        _start_args("--launcher", "docker", "--image", "x"),
        ("docker daemon", "/nonexistent.sock"),
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
    ),
    Case(
        "docker-image-missing",
        "Docker image missing",
        "tune start -c run.yaml --launcher docker --image sglang-tuner-no-such-image:0",
        _start_args("--launcher", "docker", "--image", "sglang-tuner-no-such-image:0"),
        ("sglang-tuner-no-such-image:0", "not found", "docker pull"),
        needs=_docker_up,
    ),
    Case(
        "gpu-index",
        "GPU index NVML does not have (one-GPU machine)",
        "tune start -c run.yaml --gpus 7",
        _start_args("--gpus", "7"),
        ("--gpus 7", "no gpu 7", "nvml sees 1 gpu"),
        prelude=ONE_GPU_NVML,
    ),
    Case(
        "gpu-none",
        "NVML loaded but no GPU",
        "tune start -c run.yaml --gpus 0",
        _start_args("--gpus", "0"),
        ("--gpus 0", "no gpu 0", "nvml sees 0 gpus"),
        prelude=ONE_GPU_NVML.replace("< 1", "< 0").replace("lambda: 1", "lambda: 0"),
    ),
    # -- replaying a recorded surface (launcher: {kind: replay}): only what the surface recorded can be answered
    Case(
        "replay-surface-missing",
        "surface file missing",
        "tune start -c run.yaml  # launcher: {kind: replay, surface: nope.json}",
        _start(launcher={"kind": "replay", "surface": "nope.json"}),
        ("launcher.surface", "nope.json", "no such file"),
    ),
    Case(
        "replay-not-a-surface",
        "surface file that is not one",
        'tune start -c run.yaml  # launcher: {kind: replay, surface: surface.json}  # {"format": 1, "header": {}}',
        _not_a_surface,
        ("surface.json", "not a surface file", "header.workload"),
    ),
    Case(
        "warm-start-missing",
        "warm-start surface missing",
        "tune start -c run.yaml  # sampler: {warm_start: nope.json}",
        _start(sampler={"warm_start": "nope.json"}),
        ("sampler.warm_start", "nope.json", "no such file"),
    ),
    Case(
        "warm-start-not-a-surface",
        "warm-start file that is not a surface",
        'tune start -c run.yaml  # sampler: {warm_start: surface.json}  # {"format": 1, "header": {}}',
        _warm_from_not_a_surface,
        ("sampler.warm_start", "surface.json", "not a surface file", "header.workload"),
    ),
    Case(
        "prestart-spawned-without-prestart",
        "stand-bys for SGLang's spawned processes asked with prestart off",
        "tune start -c run.yaml  # launcher: {prestart: false, prestart_spawned: true}",
        _start(launcher={"prestart": False, "prestart_spawned": True}),
        ("launcher.prestart_spawned", "prestarted interpreter", "prestart: true"),
    ),
    Case(
        "recorded-only-not-replay",
        "recorded rows asked of a launcher that is no replay",
        "tune start -c run.yaml  # launcher: {kind: process, recorded_only: true}",
        _start(launcher={"recorded_only": True}),
        ("launcher.recorded_only", "only a replay", "process"),
    ),
    Case(
        "recorded-only-no-row",
        "a replay on recorded rows whose space can draw none of them",
        "tune start -c run.yaml  # launcher: {kind: replay, recorded_only: true}, "
        "space.yaml: chunked-prefill-size: {choices: [1024]}",
        _recorded_only_no_row,
        ("launcher.recorded_only", "no recorded row", "space.yaml", "without recorded_only"),
    ),
    Case(
        "recorded-only-all-tried",
        "a replay on recorded rows asking more trials than the surface has rows for its space",
        "tune start -c run.yaml  # trials: 12, launcher: {kind: replay, recorded_only: true}, "
        "surface h200-qwen3-8b-random.json",
        _replay(
            RANDOM,
            workload=RANDOM_WORKLOAD,
            trials=12,
            launcher={"kind": "replay", "surface": f"surfaces/{RANDOM}", "recorded_only": True},
        ),
        ("launcher.recorded_only", "trials: 12 samples up to 11 configs", "records 6", "set trials: 7 or fewer"),
    ),
    Case(
        "replay-no-gpu-memory",
        "a surface recorded without GPU memory, replayed with a memory-fraction objective",
        "tune start -c run.yaml  # objective: {max_gpu_memory_fraction: 0.9}, surface header gpu_memory_mib: 0",
        _replay_edited(
            RANDOM,
            _set("header", "gpu_memory_mib", 0),
            workload=RANDOM_WORKLOAD,
            objective={"max_gpu_memory_fraction": 0.9},
        ),
        ("objective.max_gpu_memory_fraction", "gpu_memory_mib: 0", "remove max_gpu_memory_fraction"),
    ),
    Case(
        "replay-nan",
        "a surface with NaN where a measurement belongs",
        "tune start -c run.yaml  # surface rows[0].levels[0].output_throughput: NaN",
        _replay_edited(
            RANDOM, _set("rows", 0, "levels", 0, "output_throughput", float("nan")), workload=RANDOM_WORKLOAD
        ),
        ("rows[0] (trial 0).levels[0].output_throughput", "got NaN", "fix or drop that row"),
    ),
    Case(
        "replay-negative",
        "a surface with a negative number",
        "tune start -c run.yaml  # surface rows[2].startup_s: -3",
        _replay_edited(RANDOM, _set("rows", 2, "startup_s", -3.0), workload=RANDOM_WORKLOAD),
        ("rows[2] (trial", ".startup_s", ">= 0, got -3"),
    ),
    Case(
        "replay-model",
        "a model the surface did not record",
        "tune start -c run.yaml  # model: {path: other/model}, surface h200-qwen3-8b-random.json",
        _replay(RANDOM, model={"path": "other/model"}, workload=RANDOM_WORKLOAD),
        ("model.path 'other/model'", "recorded Qwen/Qwen3-8B", "leave model out"),
    ),
    Case(
        "replay-lengths",
        "input/output lengths the surface did not record",
        "tune start -c run.yaml  # workload: {input_len: 64, output_len: 16, ...}, surface h200-qwen3-8b-random.json",
        _replay(RANDOM, workload={**RANDOM_WORKLOAD, "input_len": 64, "output_len": 16}),
        ("workload: isl 64 / osl 16", "recorded isl 512 / osl 128"),
    ),
    Case(
        "replay-concurrency",
        "a concurrency level the surface did not record",
        "tune start -c run.yaml  # workload: {concurrency: [1, 8]}, surface h200-qwen3-8b-random.json",
        _replay(RANDOM, workload={**RANDOM_WORKLOAD, "concurrency": [1, 8]}),
        ("workload.concurrency: [8] not recorded", "1, 16, 64"),
    ),
    Case(
        "replay-workload-shape",
        "a workload shape the surface did not record",
        "tune start -c run.yaml  # workload: {num_prompts: 16}, surface h200-qwen3-8b-random.json",
        _replay(RANDOM, workload={**RANDOM_WORKLOAD, "num_prompts": 16}),
        ("workload.num_prompts: 16", "recorded none"),
    ),
    Case(
        "replay-slo",
        "another SLO than the surface's load search",
        "tune start -c run.yaml  # objective: {slo: {p99_ttft_ms: 1000, ...}}, surface h200-qwen3-8b-chat.json",
        _replay(
            CHAT, workload=CHAT_WORKLOAD, objective={**CHAT_OBJECTIVE, "slo": {"p99_ttft_ms": 1000, "p99_tpot_ms": 40}}
        ),
        ("objective.slo:", "recorded slo", "a replay answers only that search"),
    ),
    Case(
        "replay-load-search",
        "another load search than the surface's",
        "tune start -c run.yaml  # objective: {load_search: {bisect_steps: 3, ...}}, surface h200-qwen3-8b-chat.json",
        _replay(
            CHAT,
            workload=CHAT_WORKLOAD,
            objective={**CHAT_OBJECTIVE, "load_search": {**CHAT_SEARCH, "bisect_steps": 3}},
        ),
        ("objective.load_search:", "'bisect_steps': 2", "a replay answers only that search"),
    ),
    Case(
        "replay-goodput-on-fixed",
        "a goodput objective against a fixed-concurrency surface",
        "tune start -c run.yaml  # objective: {metrics: [goodput], ...}, surface h200-qwen3-8b-random.json",
        _replay(
            RANDOM, workload={k: v for k, v in RANDOM_WORKLOAD.items() if k != "concurrency"}, objective=CHAT_OBJECTIVE
        ),
        ("objective.metrics [goodput]", "did not record", "fixed concurrency"),
    ),
    Case(
        "replay-fixed-on-goodput",
        "a fixed-concurrency objective against a goodput surface",
        "tune start -c run.yaml  # objective: {metrics: [output_throughput]}, surface h200-qwen3-8b-chat.json",
        _replay(CHAT, workload=CHAT_WORKLOAD, objective={"metrics": ["output_throughput"]}),
        ("objective.metrics:", "recorded an slo-goodput load search", "metrics: [goodput]"),
    ),
    # -- resuming a study (the same run file, started again)
    Case(
        "resume-kind-changed",
        "a parameter whose kind changed since the study began",
        "tune start -c run.yaml  # space.yaml: mem-fraction-static: {choices: [0.8, 0.85]}, was {low: 0.7, high: 0.9}",
        _resumed(_start_space("params:\n  mem-fraction-static: {choices: [0.8, 0.85]}\n"), _float_range_trial),
        ("space.yaml:2", "choices [0.8, 0.85] here but a float range 0.7..0.9", "new --study name"),
    ),
    Case(
        "resume-baseline-refused",
        "a study whose baseline SGLang refused (invalid_flag), started again",
        "tune start -c run.yaml  # its trial 0 failed as invalid_flag",
        _resumed(_start(), _baseline_refused_trial),
        ("baseline (trial 0", "invalid_flag", "every later trial would fail too", "--study name"),
    ),
    # -- reading a study
    Case(
        "status-no-file",
        "`tune status` on an SQLite file that does not exist",
        "tune status --storage sqlite:///new/dir/x.db",
        lambda tmp: ["status", "--storage", "sqlite:///new/dir/x.db"],
        ("no study", "new/dir/x.db does not exist"),
    ),
    Case(
        "confirm-no-study",
        "`tune confirm` before any `tune start`",
        "tune confirm -c run.yaml  # no tune start yet",
        lambda tmp: ["confirm", "-c", str(write_run(tmp))],
        ("no study 't'", "does not exist"),
    ),
    Case(
        "record-out-no-folder",
        "`tune record --out` where no folder can be made",
        "tune record --out /proc/nope/s.json",
        _record(lambda tmp: "/proc/nope/s.json"),
        ("--out /proc/nope/s.json", "cannot write the surface", "nothing written"),
    ),
    Case(
        "record-out-folder",
        "`tune record --out` naming a folder",
        "tune record --out surfaces/",
        _record(lambda tmp: str(tmp)),
        ("is a folder", "surface.json"),
    ),
    Case(
        "record-out-device",
        "`tune record --out` naming a device",
        "tune record --out /dev/full",
        _record(lambda tmp: "/dev/full"),
        ("--out /dev/full", "not a regular file"),
    ),
    Case(
        "record-help-binary",
        "`tune record --sglang-help` given a binary file",
        "tune record --sglang-help studies/t.db",
        _record(lambda tmp: str(tmp / "s.json"), _binary),
        ("--sglang-help", "binary file", "launch_server --help"),
    ),
    Case(
        "record-help-folder",
        "`tune record --sglang-help` given a folder",
        "tune record --sglang-help studies",
        _record(lambda tmp: str(tmp / "s.json"), lambda tmp: tmp),
        ("--sglang-help", "a folder", "launch_server --help"),
    ),
    Case(
        "import-unknown-column",
        "`tune import` mapping a column the data does not have",
        "tune import sweep.csv --metric throughput=output_throughput ...  # the column is tput",
        _import(
            "--flag", "chunk=chunked-prefill-size", "--metric", "throughput=output_throughput", "--concurrency", "conc"
        ),
        ("--metric throughput", "no such column in sweep.csv", "it has chunk, conc, status, tput"),
    ),
    Case(
        "import-unknown-flag",
        "`tune import` mapping a column to a flag SGLang does not have",
        "tune import sweep.csv --flag chunk=chunked-prefil-size --sglang-help help.txt ...  # SGLang 0.5.17's",
        lambda tmp: _import(
            "--flag",
            "chunk=chunked-prefil-size",
            "--metric",
            "tput=output_throughput",
            "--concurrency",
            "conc",
            "--sglang-help",
            str(shutil.copy(ROOT / "benchmarks/h200/sglang-0.5.17-help.txt", tmp / "help.txt")),
        )(tmp),
        ("--flag chunk=chunked-prefil-size", "--chunked-prefil-size is not a flag of this SGLang"),
    ),
    Case(
        "import-flag-underscores",
        "`tune import` naming a flag as a Python attribute",
        "tune import sweep.csv --flag chunk=chunked_prefill_size ...",
        _import("--flag", "chunk=chunked_prefill_size", "--metric", "tput=output_throughput", "--concurrency", "conc"),
        ("'chunked_prefill_size' is not an SGLang flag name", "chunked-prefill-size"),
    ),
    Case(
        "import-unknown-metric",
        "`tune import` mapping a column to a metric bench_serving does not have",
        "tune import sweep.csv --metric tput=output_tput ...",
        _import("--flag", "chunk=chunked-prefill-size", "--metric", "tput=output_tput", "--concurrency", "conc"),
        ("--metric tput=output_tput", "not a bench_serving metric", "did you mean output_throughput?"),
    ),
    Case(
        "import-not-a-number",
        "`tune import` of a metric column holding text",
        "tune import sweep.csv --metric tput=output_throughput ...  # a line says fast",
        _import("--flag", "chunk=chunked-prefill-size", "--metric", "tput=output_throughput", "--concurrency", "conc"),
        ("sweep.csv:3", "column tput", "'fast' is not a number"),
    ),
    Case(
        "import-no-concurrency",
        "`tune import` with no concurrency mapped",
        "tune import sweep.csv --flag chunk=chunked-prefill-size --metric tput=output_throughput",
        _import("--flag", "chunk=chunked-prefill-size", "--metric", "tput=output_throughput"),
        ("no concurrency", "--concurrency COLUMN", "--concurrency N"),
    ),
    Case(
        "import-context-length-zero",
        "`tune import --context-length` not a positive whole number",
        "tune import sweep.csv --context-length 0 ...",
        _import("--flag", "chunk=chunked-prefill-size", "--metric", "tput=output_throughput", "--context-length", "0"),
        ("--context-length", "greater than or equal to 1"),
    ),
    Case(
        "import-mapping-context-length",
        "a mapping file's context length not a positive whole number",
        "tune import --mapping mapping.yaml ...  # header: {context_len: -8192}",
        _import("--mapping", "mapping.yaml", "--flag", "chunk=chunked-prefill-size", mapping=_NEGATIVE_CONTEXT),
        ("mapping.yaml:3", "header.context_len", "must be > 0, got -8192"),
    ),
    Case(
        "replay-unrecorded-metric",
        "a replay by a metric the imported surface does not record",
        "tune start -c run.yaml  # objective: {metrics: [p99_ttft_ms]}, surface imported with output_throughput only",
        _replay_imported,
        ("objective.metrics: p99_ttft_ms not recorded in", "s.json (it records output_throughput)"),
    ),
    Case(
        "export-out-unwritable",
        "`tune export --out` where no folder can be made",
        "tune export --out /proc/nope",
        lambda tmp: ["export", "--study", "t", "--storage", _feasible_study(tmp), "--out", "/proc/nope"],
        ("--out /proc/nope", "cannot create this folder"),
    ),
    Case(
        "report-out-file",
        "`tune report --out` naming a file",
        "tune report --out notes.txt  # an existing file",
        lambda tmp: ["report", "--study", "t", "--storage", _existing_study(tmp), "--out", str(_file(tmp))],
        ("--out", "notes.txt", "is a file, not a folder"),
    ),
    Case(
        "status-no-study",
        "`tune status` on a study that does not exist",
        "tune status --study nope",
        _on_missing_study("status"),
        ("no study 'nope'", "studies there: t"),
    ),
    Case(
        "export-no-study",
        "`tune export` on a study that does not exist",
        "tune export --study nope",
        _on_missing_study("export"),
        ("no study 'nope'",),
    ),
    Case(
        "report-no-study",
        "`tune report` on a study that does not exist",
        "tune report --study nope",
        _on_missing_study("report"),
        ("no study 'nope'",),
    ),
    Case(
        "export-nothing",
        "`tune export` with no feasible trial",
        "tune export --study t  # every trial failed",
        _no_feasible_trial,
        ("no feasible trial",),
    ),
    Case(
        "dashboard-port",
        "`tune dashboard` on a port in use",
        "tune dashboard --study t --port 8080  # in use",
        _dashboard_port_in_use,
        ("cannot listen", "in use"),
        needs=_dashboard_installed,
    ),
    Case(
        "bench-down",
        "`tune bench` at a server that is not there",
        "tune bench --url http://127.0.0.1:1",
        lambda tmp: ["bench", "--url", "http://127.0.0.1:1"],
        ("benchmark of http://127.0.0.1:1 failed",),
    ),
]


def run_case(case: Case, tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    args = case.setup(tmp)
    env = {**os.environ, **case.env}
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", case.prelude + CLI, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=240
    )
    return done, time.monotonic() - t0


class _Results:
    """The selected cases' runs, made on demand in chunks: the first case a test asks for starts it and the next
    pending ones side by side (each a fresh interpreter, mostly import time), so no one test waits for more than
    one chunk and its time limit holds on a loaded machine, while the cases still run in parallel."""

    CHUNK = 12

    def __init__(self, todo: list[Case], mktemp: Callable[[str], Path]):
        self.pending = list(todo)
        self.mktemp = mktemp
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def get(self, case_id: str) -> subprocess.CompletedProcess | None:
        if case_id not in self.done and any(c.id == case_id for c in self.pending):
            first = next(c for c in self.pending if c.id == case_id)
            chunk = [first, *[c for c in self.pending if c is not first][: self.CHUNK - 1]]
            self.pending = [c for c in self.pending if c not in chunk]
            with ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1)) as pool:
                futures = {c.id: pool.submit(run_case, c, self.mktemp(c.id)) for c in chunk}
                self.done.update({cid: f.result()[0] for cid, f in futures.items()})
        return self.done.get(case_id)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    chosen = {
        item.callspec.params["case"].id
        for item in request.session.items
        if "case" in getattr(getattr(item, "callspec", None), "params", {})
    }
    yield _Results([c for c in CASES if c.id in chosen and (c.needs is None or c.needs())], tmp_path_factory.mktemp)
    for s in _HELD:
        s.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line(case: Case, results: _Results) -> None:
    done = results.get(case.id)
    if done is None:
        pytest.skip(f"{case.id}: not available on this machine")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in case.words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


def test_without_nvml_gpus_are_not_checked_but_said_so(tmp_path) -> None:
    """A CPU machine (no NVML) runs the stand-in: not an error, but a warning that --gpus could not be checked."""
    from tuner.serve import gpu

    gpu.reset()
    cli = CLI
    if gpu.nvml_available(quiet=True):  # a GPU host: NVML fails to load the way it does on a CPU machine
        cli = (
            "import pynvml\ndef no_library(): raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)\n"
            "pynvml.nvmlInit = no_library\n" + CLI
        )
    gpu.reset()
    run = write_run(
        tmp_path,
        trials=1,
        space=write_space(tmp_path / "space.yaml", params={"schedule-policy": {"choices": ["fcfs"]}}),
    )
    done = subprocess.run(
        [sys.executable, "-c", cli, "start", "-c", str(run), "--gpus", "7", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning: NVML is not available")]
    assert warning and "--gpus 7 not checked" in warning[0], done.stderr


def _children_running_help(pid: int) -> bool:
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"--help" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


# Ctrl-C in a terminal reaches a process whose SIGINT is at its default. A test run started in the background
# (``pytest &``, nohup, some CI runners) ignores SIGINT, and an ignored signal stays ignored across exec: Python then
# installs no KeyboardInterrupt handler, so the tuner would never see this Ctrl-C and run its whole study. The
# tuner is given the handler Python installs for a terminal's process.
AS_FROM_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


def test_ctrl_c_before_the_first_trial(tmp_path) -> None:
    # `--help` printing nothing for 25 s (SGLang's slow imports, slowed down): the Ctrl-C lands inside it however
    # late a loaded machine lets this test see it, and the tuner stops it rather than waiting it out. (Past the
    # tuner's own 30 s of silence, --help would be given up on as not SGLang's.)
    run = write_run(tmp_path, launcher={"env": {"SGLANG_STANDIN_IMPORT_DELAY": "25"}})
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL + CLI, "start", "-c", str(run), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _children_running_help(proc.pid):  # inside the server's --help
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the tuner never ran the server's --help: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["interrupted: stopped while checking the setup, before any trial ran"]


def test_run_file_paths_are_relative_to_the_run_file(tmp_path) -> None:
    """The run file's relative paths (and its default study) are found beside it, whatever the current folder."""
    from tuner.config.run import load_config

    project = tmp_path / "project"
    project.mkdir()
    (project / "run.yaml").write_text(
        yaml.safe_dump(
            {
                "study": "rel",
                "space": "spaces/s.yaml",
                "artifacts": "art",
                "workload": {"dataset": "data/d.jsonl"},
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    try:
        cfg = load_config(Path("../project/run.yaml"), {"space": "cli.yaml"}, check=False)
        assert (cfg.storage_url, cfg.trials_dir, cfg.artifacts, cfg.workload.dataset, cfg.space) == (
            "sqlite:///../project/studies/rel.db",
            "../project/trials",
            "../project/art",
            "../project/data/d.jsonl",
            "cli.yaml",
        )  # the command line's paths are the current folder's
        (project / "run.yaml").write_text("storage: sqlite:///db/x.db\ntrials_dir: /abs/trials\n")
        cfg = load_config(project / "run.yaml", check=False)
        assert (cfg.storage_url, cfg.trials_dir) == (f"sqlite:///{project}/db/x.db", "/abs/trials")
    finally:
        os.chdir(ROOT)


def test_reading_a_study_creates_nothing(tmp_path) -> None:
    """status/report/export/dashboard find a run file's study from another folder, and never create a database."""
    import optuna

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "studies").mkdir(parents=True)
    elsewhere.mkdir()
    optuna.create_study(storage=f"sqlite:///{project}/studies/rel.db", study_name="rel")
    (project / "run.yaml").write_text("study: rel\n")
    (project / "other.yaml").write_text("study: other\n")
    before = sorted(tmp_path.rglob("*"))

    def tune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args], cwd=elsewhere, capture_output=True, text=True, timeout=120
        )

    found = tune("status", "-c", "../project/run.yaml")
    assert found.returncode == 0 and "study 'rel' has no trials yet" in found.stdout, found.stderr
    for command in ("status", "report", "export", "dashboard"):
        missing = tune(command, "-c", "../project/other.yaml")
        assert missing.returncode != 0 and "no study 'other'" in missing.stderr, (command, missing.stderr)
    assert tune("status", "--storage", "sqlite:///new/dir/x.db").returncode != 0
    assert tune("dashboard", "--storage", "sqlite:///new/dir/x.db").returncode != 0
    assert sorted(tmp_path.rglob("*")) == before


def test_refusals_create_and_touch_nothing(tmp_path) -> None:
    """`tune confirm` before `tune start`, another application's database as storage, -c twice, a trials folder
    that cannot be made: no file made, and the other application's database is left byte for byte as it was."""
    for case_id in ("confirm-no-study", "storage-other-app", "run-twice", "trials-dir-unwritable"):
        case = next(c for c in CASES if c.id == case_id)
        tmp = tmp_path / case_id
        tmp.mkdir()
        args = case.setup(tmp)
        before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
        done = subprocess.run([sys.executable, "-c", CLI, *args], cwd=tmp, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and done.stderr.startswith("error: "), (case_id, done.stderr)
        after = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
        assert after == before, (case_id, sorted(set(after) - set(before)))


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, filled: every write there fails with ENOSPC (a real mount: root's writes ignore modes)."""
    disk = tmp_path / "full"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with open(disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def read_only_disk(tmp_path):
    """A tmpfs, writable until ``read_only()`` remounts it read-only: a real EROFS (root ignores modes)."""
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    try:
        yield disk, read_only
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _start_quietly(tmp: Path, run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, "start", "-c", str(run), "--quiet"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert line.startswith("error: "), line
    return line


def test_resuming_a_study_on_a_read_only_disk(tmp_path, read_only_disk) -> None:
    """The study's SQLite file on a read-only disk: refused before any launch, the study untouched."""
    disk, read_only = read_only_disk
    made = f"import optuna; optuna.create_study(storage='sqlite:///{disk}/t.db', study_name='t', direction='maximize')"
    subprocess.run([sys.executable, "-c", made], check=True, capture_output=True, timeout=120)  # and closed
    read_only()
    before = (disk / "t.db").read_bytes()
    line = _one_error(_start_quietly(tmp_path, write_run(tmp_path, storage=f"sqlite:///{disk}/t.db")))
    assert line == (
        f"error: --storage sqlite:///{disk}/t.db: cannot write {disk}/t.db (Read-only file system): tune start "
        f"records every trial there; copy the study to a writable disk and point --storage at it (tune status, "
        f"report and export only read it)"
    )
    assert (disk / "t.db").read_bytes() == before and not (tmp_path / "trials").exists()


def test_trials_dir_on_a_read_only_disk(tmp_path, read_only_disk) -> None:
    """trials_dir whose study folder is there already, on a read-only disk: refused before the study is made."""
    disk, read_only = read_only_disk
    (disk / "t").mkdir()
    read_only()
    line = _one_error(_start_quietly(tmp_path, write_run(tmp_path, trials_dir=str(disk))))
    assert line == (
        f"error: trials_dir {disk}/t: cannot write in this folder (Read-only file system): point trials_dir at a "
        f"writable one"
    )
    assert not list(tmp_path.rglob("*.db"))  # no empty study left behind


@pytest.mark.parametrize("command", ["export", "report"])
def test_export_and_report_onto_a_full_disk(tmp_path, full_disk, command) -> None:
    """No 0-byte or half-written file: each is written under a temporary name and renamed; one line says why."""
    before = sorted(p.name for p in full_disk.iterdir())
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            command,
            "--study",
            "t",
            "--storage",
            _feasible_study(tmp_path),
            "--out",
            str(full_disk),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {full_disk}: cannot write ") and "(No space left on device)" in line, line
    assert "no file was left half-written: free space there or give another --out" in line
    assert sorted(p.name for p in full_disk.iterdir()) == before  # nothing left behind, not even a temporary file


def _markdown() -> str:
    """The table of docs/bad-inputs.md, from running every case here."""
    rows = []
    with tempfile.TemporaryDirectory() as base, ThreadPoolExecutor(max_workers=4) as pool:
        todo = [c for c in CASES if c.needs is None or c.needs()]
        dirs = {c.id: Path(base) / c.id for c in todo}
        for d in dirs.values():
            d.mkdir()
        futures = {c.id: pool.submit(run_case, c, dirs[c.id]) for c in todo}
        for case in CASES:
            if case.id not in futures:
                rows.append((case, "(not run here: needs a Docker daemon or optuna-dashboard)"))
                continue
            done, _ = futures[case.id].result()
            message = done.stderr.strip().replace(f"{dirs[case.id]}/", "").replace(str(dirs[case.id]), ".")
            message = message.replace(
                f"{sys.executable} {ROOT}/tests/standin/sglang_standin.py", "python tests/standin/sglang_standin.py"
            )
            for s in _HELD:
                message = message.replace(str(s.getsockname()[1]), "30000" if case.id == "port-in-use" else "8080")
            message = re.sub(r"\(see .*? --help\)", "(see tune start --help)", message)
            rows.append((case, message))
    for s in _HELD:
        s.close()

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    out = [
        "# Bad input: what the tuner says",
        "",
        "Every mistake below is caught before any server is launched (the search space is checked against the",
        "server's own `--help`), and answered with one `error:` line on stderr and a non-zero exit, never a",
        "traceback. `run.yaml` is the run file, `space.yaml` its search space; `# ...` shows what was in them.",
        "",
        "Generated by `python tests/test_bad_input.py` from the cases of `tests/test_bad_input.py`, which assert",
        "these messages; regenerate it after changing one.",
        "",
        "| mistake | command | message |",
        "|---|---|---|",
    ]
    for case, message in rows:
        out.append(f"| {cell(case.mistake)} | `{cell(case.command)}` | {cell(message)} |")
    out += [
        "| no NVML at all (a CPU machine) | `tune start -c run.yaml --gpus 7` | not an error: `warning: NVML is "
        "not available (NVML Shared Library Not Found): --gpus 7 not checked, no GPU memory numbers, no wait for "
        "free GPUs`, and the trials run (the stand-in tests rely on it) |",
        "| Ctrl-C before the first trial | `tune start -c run.yaml`, then Ctrl-C | `interrupted: stopped while "
        "checking the setup, before any trial ran` (exit 130) |",
        "| the terminal or ssh session closed mid-trial (SIGHUP) | `tune start -c run.yaml`, then close the terminal "
        "| not an error: like Ctrl-C, the server is stopped and the trial recorded `interrupted` and queued to run "
        "again (exit 130); nothing more is written to the closed terminal |",
        "| the terminal closed under `nohup` | `nohup tune start -c run.yaml`, then close the terminal | not an "
        "error: SIGHUP stays ignored as nohup asked, and the study runs on |",
        "| the trials folder's disk fills mid-study (ENOSPC) | `tune start -c run.yaml  # trials_dir on a disk that "
        "fills during trial 0` | error: trial 0: cannot write its files to trials/t/0 (No space left on device): it "
        "is recorded in the study without them; free space there (or set trials_dir / artifacts elsewhere) and run "
        "the same command to resume (exit 2; the server stopped, the trial kept with its numbers and "
        "`artifacts_missing`, no file half-written) |",
        "| the study's SQLite file on a read-only disk, resumed | `tune start -c run.yaml  # storage: "
        "sqlite:////mnt/ro/t.db, mounted read-only` | error: --storage sqlite:////mnt/ro/t.db: cannot write "
        "/mnt/ro/t.db (Read-only file system): tune start records every trial there; copy the study to a "
        "writable disk and point --storage at it (tune status, report and export only read it) (exit 2, before "
        "any launch; the study untouched) |",
        "| trials_dir on a read-only disk | `tune start -c run.yaml  # trials_dir: /mnt/ro, mounted read-only` "
        "| error: trials_dir /mnt/ro/t: cannot write in this folder (Read-only file system): point trials_dir "
        "at a writable one (exit 2; no study created) |",
        "| Ctrl-C during the end-of-study confirmation | `tune start -c run.yaml  # confirm: {top: 1}, then "
        "Ctrl-C while it confirms` | `interrupted during the end-of-study confirmation: none of it recorded; "
        "run the same command to confirm study 't'` (exit 130); the same command then says `study 't' has its "
        "N trials; its end-of-study confirmation has not finished: running it` and runs it |",
        "| `tune export` / `tune report` onto a full disk | `tune export --out full/` | error: --out full: cannot "
        "write deploy-best.sh there (No space left on device); no file was left half-written: free space there or "
        "give another --out (`tune report`: the same, naming comparison.csv; every file is written under a "
        "temporary name and renamed, so none is left 0-byte) |",
        "| the study's SQLite disk fills mid-trial | `tune start -c run.yaml  # storage on a disk that fills during "
        "trial 0` | error: the study's storage sqlite:///studies/t.db cannot be written (database or disk is full): "
        "the running trial was stopped, not recorded; free space on its disk, then run the same command to resume "
        "(the trial is run again) (exit 2) |",
        "| a space almost none of whose configs can start here | `tune start -c run.yaml --gpus 0  # space.yaml: "
        "{tp-size: {choices: [2, 4]}}` | error: the sampler proposed 100 configs in a row that are predicted to fail "
        "(too_many_gpus 100; the last: needs 4 GPUs (tp x dp) but --gpus 0 gives 1), none launched: most of the "
        "space cannot start here. Give more --gpus, or narrow tp-size/dp-size in the search space to what this "
        "machine has. Then run the same command to resume (exit 2; each prediction recorded, nothing launched, "
        "none of the budget used; tests/test_budget.py) |",
        "",
        "GPU indices are checked against NVML when NVML is there: on a GPU machine, an index it does not have is",
        "an error before any launch (the `gpu-index` and `gpu-none` rows fake a one-GPU and a no-GPU NVML). Without",
        "NVML nothing can be checked, so the tuner says so in a warning and goes on.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    target = ROOT / "docs" / "bad-inputs.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(_markdown())
    print(f"wrote {target}")
