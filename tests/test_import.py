"""`tune import`: a CSV sweep and SGLang bench_serving's --output-file JSONL, written here, imported into surfaces
that a real `tune start` replays, and `tune status`, `report` and `export` read, each saying what the data did not
record. No GPU and no SGLang."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import jsonschema
import optuna
import pytest
import yaml

from conftest import ROOT, tune
from tuner.config.jsonschemas import SCHEMA_DIR
from tuner.trial.schema import NAME as SURFACE_SCHEMA
from tuner.trial.surface import Surface, SurfaceError
from tuner.views.dashboard import trial_note

# A grid a user measured with their own scripts: one line per (config, concurrency), an OOM, SGLang's defaults.
SWEEP = """chunk,mrr,policy,conc,tput,p99ttft,status,startup
2048,64,fcfs,8,1000.5,120,,30
2048,64,fcfs,32,2500,400,,30
4096,64,fcfs,8,1100,110,,31
4096,64,fcfs,32,2700,380,,31
8192,128,lpm,8,1150,100,,33
8192,128,lpm,32,2900,350,,33
16384,256,lpm,8,,,Loaded weights leave no GPU memory for the KV cache,12
,,,8,950,130,,29
,,,32,2300,450,,29
"""
SWEEP_ARGS = (
    "--flag", "chunk=chunked-prefill-size",
    "--flag", "mrr=max-running-requests",
    "--flag", "policy=schedule-policy",
    "--metric", "tput=output_throughput",
    "--metric", "p99ttft=p99_ttft_ms",
    "--failure", "status",
    "--concurrency", "conc",
    "--startup-s", "startup",
)  # fmt: skip


def bench_serving_line(concurrency: int, throughput: float, p99_ttft: float) -> dict:
    """One result as sglang.bench_serving appends it to --output-file (its keys, in its order)."""
    return {
        "backend": "sglang",
        "dataset_name": "random",
        "request_rate": math.inf,
        "max_concurrency": concurrency,
        "sharegpt_output_len": None,
        "random_input_len": 1024,
        "random_output_len": 128,
        "random_range_ratio": 1.0,
        "duration": 20.5,
        "completed": 200,
        "total_input_tokens": 204800,
        "total_output_tokens": 25600,
        "total_output_tokens_retokenized": 25590,
        "request_throughput": 9.7,
        "input_throughput": 9990.0,
        "output_throughput": throughput,
        "mean_e2e_latency_ms": 900.0,
        "median_e2e_latency_ms": 880.0,
        "std_e2e_latency_ms": 50.0,
        "p99_e2e_latency_ms": 1200.0,
        "mean_ttft_ms": 80.0,
        "median_ttft_ms": 70.0,
        "std_ttft_ms": 10.0,
        "p99_ttft_ms": p99_ttft,
        "mean_tpot_ms": 7.0,
        "median_tpot_ms": 6.9,
        "std_tpot_ms": 0.5,
        "p99_tpot_ms": 9.0,
        "mean_itl_ms": 7.0,
        "median_itl_ms": 6.8,
        "std_itl_ms": 1.0,
        "p95_itl_ms": 8.0,
        "p99_itl_ms": 12.0,
        "concurrency": concurrency * 0.97,
        "accept_length": None,
    }


def replay_run(tmp_path, surface: str, space: dict, workload: dict, trials: int = 6) -> str:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"params": space}))
    run = {
        "study": "imported",
        "storage": "sqlite:///studies/imported.db",
        "trials_dir": "trials",
        "space": "space.yaml",
        "trials": trials,
        "launcher": {"kind": "replay", "surface": surface},
        "workload": workload,
        "objective": {"metrics": ["output_throughput"], "at_concurrency": 32},
        "sampler": {"seed": 0, "n_startup_trials": 3},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    return "run.yaml"


def test_a_csv_sweep_imports_replays_and_every_view_says_what_it_did_not_record(tmp_path):
    (tmp_path / "sweep.csv").write_text(SWEEP)
    done = tune("import", "sweep.csv", "--out", "sweep.json", *SWEEP_ARGS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote sweep.json: 5 configs (1 failed) from 8 measured levels; not recorded: model" in done.stdout

    surface = Surface.load(tmp_path / "sweep.json")
    jsonschema.validate(
        json.loads((tmp_path / "sweep.json").read_text()), json.loads((SCHEMA_DIR / SURFACE_SCHEMA).read_text())
    )
    rows = {json.dumps(r.flags, sort_keys=True): r for r in surface.rows}
    defaults = rows["{}"]
    assert defaults.baseline and [lv.output_throughput for lv in defaults.levels] == [950, 2300]
    oom = rows[json.dumps({"chunked-prefill-size": 16384, "max-running-requests": 256, "schedule-policy": "lpm"})]
    assert oom.failure_class == "oom_kv" and not oom.levels and oom.startup_s == 12
    assert surface.header.workload.concurrency == [8, 32] and surface.header.metrics_recorded == [
        "output_throughput",
        "p99_ttft_ms",
    ]
    absent = surface.absent()
    assert {"model", "gpu_name", "sglang_version", "command", "catalog", "ISL/OSL", "stop_s"} <= set(absent)
    assert "startup_s" not in absent and "benchmark_s" in absent

    run = replay_run(
        tmp_path,
        "sweep.json",
        {
            "chunked-prefill-size": {"choices": [2048, 4096, 8192, 16384]},
            "max-running-requests": {"choices": [64, 128, 256]},
            "schedule-policy": {"choices": ["fcfs", "lpm"]},
        },
        {"concurrency": [8, 32]},
    )
    start = tune("start", "-c", run, cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    assert "recorded trials of model not recorded on GPU not recorded" in start.stdout
    assert "sweep.json does not record model, model_path, gpu_name" in start.stderr
    study = optuna.load_study(study_name="imported", storage=f"sqlite:///{tmp_path}/studies/imported.db")
    assert len(study.trials) == 6 and all(t.user_attrs["replayed"] for t in study.trials)
    assert study.trials[0].values[0] == 2300  # the baseline is the recorded defaults row

    said = "The surface does not record: model, model_path, gpu_name, sglang_version, command"
    for command in ("status", "report", "export"):
        done = tune(command, "-c", run, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        assert said in done.stdout, (command, done.stdout)
    script = (tmp_path / "deploy-best.sh").read_text()
    assert said in script and "The surface records no server command" in script
    assert "Replayed with ISL 512 / OSL 128 (the run file's: the surface records none)" in script
    assert '--model-path "${MODEL_PATH:?the surface records no model: set MODEL_PATH}"' in script


def test_metrics_an_imported_surface_does_not_record_read_not_recorded_in_every_view_never_nan(tmp_path):
    """The sweep maps only output tok/s and p99 TTFT: its median TTFT, median TPOT and request/s are NaN in the
    surface. The live progress, tune status, report (HTML, CSV, Markdown), deploy-best.sh and the dashboard's trial
    note say "not recorded" or leave them out."""
    (tmp_path / "sweep.csv").write_text(SWEEP)
    assert tune("import", "sweep.csv", "--out", "sweep.json", *SWEEP_ARGS, cwd=tmp_path).returncode == 0
    space = {"chunked-prefill-size": {"choices": [2048, 4096]}, "max-running-requests": {"choices": [64, 128]}}
    run = replay_run(tmp_path, "sweep.json", space, {"concurrency": [8, 32]}, trials=3)
    start = tune("start", "-c", run, "--progress", cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    said = {"start": start.stdout + start.stderr}
    assert "c=32 2300 tok/s, TTFT p50 not recorded / p99 450 ms, TPOT p50 not recorded" in said["start"]
    for command in ("status", "report", "export"):
        done = tune(command, "-c", run, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        said[command] = done.stdout
    report = tmp_path / "reports" / "imported"
    said["comparison.md"] = (report / "comparison.md").read_text()
    said["comparison.csv"] = (report / "comparison.csv").read_text()
    said["report.html"] = re.sub(r"<script.*?</script>", "", (report / "report.html").read_text(), flags=re.S)
    said["deploy-best.sh"] = (tmp_path / "deploy-best.sh").read_text()
    study = optuna.load_study(study_name="imported", storage=f"sqlite:///{tmp_path}/studies/imported.db")
    said["note"] = trial_note(0, study.trials[0].user_attrs)
    for where, text in said.items():
        assert not re.search(r"\bnan\b", text, re.I), (where, text)
    assert "median TTFT not recorded, median TPOT not recorded" in said["deploy-best.sh"]
    assert "| 2300.0 | not recorded | not recorded | 450.0 ms | not recorded |" in said["note"]
    assert "| 32 | 2300.0 | not recorded | 450.0 ms |" in said["note"]
    for table in ("comparison.md", "comparison.csv", "report.html"):
        assert "p99 TTFT (ms)" in said[table] and "median TTFT" not in said[table], table
        assert "median_ttft" not in said[table] and "p99_tpot_ms" not in said[table], table


def test_a_replay_of_a_surface_with_no_model_never_reads_a_config_json_from_the_current_folder(tmp_path):
    """With no model recorded, model.path is '': Path('') is the current folder, whose config.json (here a model of
    2048 tokens' context) must not predict the replayed configs' failures."""
    (tmp_path / "sweep.csv").write_text(
        "ctx,conc,tput\n4096,32,2000\n8192,32,2100\n16384,32,2200\n,32,1900\n"  # all ran: none failed
    )
    done = tune(
        "import", "sweep.csv", "--out", "ctx.json", "--concurrency", "conc",
        "--flag", "ctx=context-length", "--metric", "tput=output_throughput", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"num_attention_heads": 8, "num_hidden_layers": 2, "hidden_size": 512, "vocab_size": 1000}
            | {"max_position_embeddings": 2048}
        )
    )
    run = replay_run(tmp_path, "ctx.json", {"context-length": {"choices": [4096, 8192, 16384]}}, {"concurrency": [32]})
    start = tune("start", "-c", run, cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    assert "config.json" not in start.stdout + start.stderr
    study = optuna.load_study(study_name="imported", storage=f"sqlite:///{tmp_path}/studies/imported.db")
    assert len(study.trials) == 6 and all(t.user_attrs.get("replayed") for t in study.trials)
    assert {t.values[0] for t in study.trials} <= {1900, 2000, 2100, 2200}


def test_an_imported_context_length_predicts_longer_contexts_before_launch_in_a_replay(tmp_path):
    """`tune import --context-length 8192` records the model's limit in the header; a replay, whose model.path has
    no config.json, then predicts every --context-length above it (not launched, no trial of the budget), where a
    surface imported without it launches them."""
    (tmp_path / "sweep.csv").write_text("ctx,conc,tput\n4096,32,2000\n8192,32,2100\n16384,32,2200\n,32,1900\n")
    args = ("--concurrency", "conc", "--flag", "ctx=context-length", "--metric", "tput=output_throughput")
    launched = {}
    for name, extra in (("known", ("--context-length", "8192")), ("unknown", ())):
        tmp = tmp_path / name
        tmp.mkdir()
        (tmp / "sweep.csv").write_text((tmp_path / "sweep.csv").read_text())
        done = tune("import", "sweep.csv", "--out", "ctx.json", *args, *extra, cwd=tmp)
        assert done.returncode == 0, done.stderr
        facts = Surface.load(tmp / "ctx.json").header.model_facts
        assert (facts and facts.context_len) == (8192 if extra else None)
        run = replay_run(tmp, "ctx.json", {"context-length": {"choices": [4096, 8192, 16384]}}, {"concurrency": [32]})
        start = tune("start", "-c", run, cwd=tmp)
        assert start.returncode == 0, start.stderr
        assert ("model_facts" in start.stderr) == (not extra)  # the replay says it predicts nothing
        study = optuna.load_study(study_name="imported", storage=f"sqlite:///{tmp}/studies/imported.db")
        trials = [t for t in study.trials if t.params.get("context-length") == 16384]
        assert trials, "the sampler never drew the longer context: pick another seed"
        launched[name] = [t.user_attrs.get("launched") is not False for t in trials]
        assert sum(t.user_attrs.get("launched") is not False for t in study.trials) == 6  # the budget: 6 launches
        if extra:
            assert all(t.user_attrs["failure_class"] == "predicted_context_length" for t in trials)
            assert "above the model's 8192 (as given, no config.json read)" in trials[0].user_attrs["failure_detail"]
    assert not any(launched["known"]) and all(launched["unknown"])


def test_a_replay_whose_model_path_has_a_config_json_does_not_say_the_model_facts_are_missing(tmp_path):
    """Imported without --context-length, but replayed with model.path at the model's folder: its config.json gives
    the facts, so the start does not warn that nothing is checked against them, and the longer context is
    predicted."""
    (tmp_path / "sweep.csv").write_text("ctx,conc,tput\n4096,32,2000\n8192,32,2100\n16384,32,2200\n,32,1900\n")
    args = ("--concurrency", "conc", "--flag", "ctx=context-length", "--metric", "tput=output_throughput")
    assert tune("import", "sweep.csv", "--out", "ctx.json", *args, cwd=tmp_path).returncode == 0
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {"num_attention_heads": 8, "num_hidden_layers": 2, "hidden_size": 512, "vocab_size": 1000}
            | {"max_position_embeddings": 8192}
        )
    )
    run = replay_run(tmp_path, "ctx.json", {"context-length": {"choices": [4096, 8192, 16384]}}, {"concurrency": [32]})
    (tmp_path / run).write_text((tmp_path / run).read_text() + f"model: {{path: {model}}}\n")
    start = tune("start", "-c", run, cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    assert "does not record" in start.stderr and "model_facts" not in start.stderr, start.stderr
    study = optuna.load_study(study_name="imported", storage=f"sqlite:///{tmp_path}/studies/imported.db")
    longer = [t for t in study.trials if t.params.get("context-length") == 16384]
    assert longer and all(t.user_attrs["failure_class"] == "predicted_context_length" for t in longer)


def test_a_surface_whose_context_length_is_no_length_is_refused(tmp_path):
    """Every --context-length would be predicted to fail above 0: a hand-edited header says so before any trial."""
    (tmp_path / "sweep.csv").write_text(SWEEP)
    assert (
        tune("import", "sweep.csv", "--out", "s.json", *SWEEP_ARGS, "--context-length", "8192", cwd=tmp_path).returncode
        == 0
    )
    data = json.loads((tmp_path / "s.json").read_text())
    data["header"]["model_facts"]["context_len"] = 0
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(SurfaceError, match=r"header.model_facts.context_len: must be a whole number >= 1, got 0;"):
        Surface.load(tmp_path / "s.json")


def test_tune_start_imports_no_scipy_stats_until_a_confirmation_needs_it(tmp_path):
    """scipy.stats was ~1.2 s of every start (benchmarks/REPLAY_START.md); only the confirmation uses it."""
    (tmp_path / "sweep.csv").write_text(SWEEP)
    assert tune("import", "sweep.csv", "--out", "sweep.json", *SWEEP_ARGS, cwd=tmp_path).returncode == 0
    run = replay_run(tmp_path, "sweep.json", {"chunked-prefill-size": {"choices": [2048]}}, {"concurrency": [32]}, 1)
    start = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from tuner.cli import app; app()", "start", "-c", run],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0 and "tuner.search.confirm" in start.stderr, start.stderr[-2000:]
    assert not re.search(r"\| +scipy\.stats\b", start.stderr)


def test_bench_serving_output_files_import_directly_and_replay(tmp_path):
    for name, lines in (
        ("default.jsonl", [bench_serving_line(8, 1200.0, 150.0), bench_serving_line(32, 3000.0, 400.0)]),
        ("chunk.jsonl", [bench_serving_line(8, 1250.0, 140.0), bench_serving_line(32, 3300.0, 380.0)]),
    ):
        (tmp_path / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "mapping.yaml").write_text(
        yaml.safe_dump(
            {
                "runs": [{"file": "default.jsonl"}],
                "header": {"model": "Qwen/Qwen3-8B", "gpu_name": "NVIDIA H100 80GB HBM3"},
            }
        )
    )
    done = tune(
        "import",
        "chunk.jsonl",
        "--flags",
        "--chunked-prefill-size 4096 --enable-mixed-chunk",
        "--mapping",
        "mapping.yaml",
        "--out",
        "bs.json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    surface = Surface.load(tmp_path / "bs.json")
    h = surface.header
    assert (h.workload.input_len, h.workload.output_len, h.model, h.gpu_name) == (
        1024,
        128,
        "Qwen/Qwen3-8B",
        h.gpu_name,
    )
    by_flags = {json.dumps(r.flags, sort_keys=True): r for r in surface.rows}
    tuned = by_flags[json.dumps({"chunked-prefill-size": 4096, "enable-mixed-chunk": True}, sort_keys=True)]
    level = tuned.levels[1]
    assert (level.concurrency, level.output_throughput, level.p99_ttft_ms, level.duration_s) == (32, 3300, 380, 20.5)
    assert level.concurrency_achieved == 32 * 0.97 and math.isnan(level.p90_ttft_ms)  # bench_serving has no p90
    assert tuned.benchmark_s == 41.0 and by_flags["{}"].baseline
    assert "p90_ttft_ms" in " ".join(surface.absent()) and "ISL/OSL" not in surface.absent()

    run = replay_run(
        tmp_path,
        "bs.json",
        {"chunked-prefill-size": {"choices": [2048, 4096]}, "enable-mixed-chunk": {"choices": [False, True]}},
        {"input_len": 1024, "output_len": 128, "concurrency": [8, 32]},
        trials=4,
    )
    raw = yaml.safe_load((tmp_path / run).read_text())
    raw["model"] = {"path": "Qwen/Qwen3-8B"}
    (tmp_path / run).write_text(yaml.safe_dump(raw))
    start = tune("start", "-c", run, cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    assert "Qwen/Qwen3-8B on NVIDIA H100 80GB HBM3 with SGLang (version not recorded)" in start.stdout
    for command in ("report", "export"):
        done = tune(command, "-c", run, cwd=tmp_path)
        assert done.returncode == 0 and "The surface does not record: model_path, sglang_version" in done.stdout
    assert "--model-path Qwen/Qwen3-8B" in (tmp_path / "deploy-best.sh").read_text()


def test_the_committed_public_sweep_is_what_tune_import_makes_of_its_csv(tmp_path):
    """benchmarks/surfaces/llmsys-hpobench-sglang.json is reproducible from the source's CSV and its mapping file
    (its failed launches marked only by completed = 0: --failure COLUMN=VALUE)."""
    mapping = ROOT / "benchmarks/surfaces/llmsys-hpobench/mapping.yaml"
    done = tune("import", "--mapping", str(mapping), "--out", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    assert "189 configs (134 failed) from 55 measured levels" in done.stdout
    committed = (ROOT / "benchmarks/surfaces/llmsys-hpobench-sglang.json").read_text()
    assert (tmp_path / "s.json").read_text() == committed
    surface = Surface.load(tmp_path / "s.json")
    assert surface.header.model_facts and surface.header.model_facts.context_len == 8192  # mapping's header
    failed = [r for r in surface.rows if not r.ok]
    assert all(r.flags["context-length"] > 8192 and r.failure_detail.startswith("obj-completed+ = 0") for r in failed)
    assert all(r.flags["context-length"] <= 8192 and len(r.levels) == 1 for r in surface.rows if r.ok)
