"""Failures predicted before launch (tuner.feasibility): the estimate against SGLang 0.5.17's real numbers on an
H200, never rejecting a config that ran there, and a predicted trial that is recorded but never launched."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, STANDIN, write_run
from tests.test_gpu import FakeNvml
from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.serve import gpu
from tuner.sglang.feasibility import Feasibility, ModelFacts
from tuner.sglang.flags import ServerFlags

MODELS = ROOT / "tests" / "data" / "models"
H200_LOG = ROOT / "tests" / "data" / "sglang-0.5.17-h200-healthy.log"
# Real launches around the boundary (benchmarks/h200/kv_pool_check.sh, 2026-12-02): Qwen3-32B at 0.9/0.46/0.42/0.38,
# Qwen3-8B at 0.105, and --context-length 65536.
BOUNDARY_LOG = ROOT / "tests" / "data" / "sglang-0.5.17-h200-kv-boundary.log"
H200_MIB = 143_771  # NVML total of the H200 in docs/h200.md
WORKLOAD = 512 + 128  # docs/h200.md: ISL 512 / OSL 128


def h200(model: str = "qwen3-8b", env: dict | None = None, gpus: int = 1) -> Feasibility:
    return Feasibility(ModelFacts.from_folder(MODELS / model), H200_MIB, tuple(range(gpus)), WORKLOAD, env or {})


def test_architecture_weights_match_what_sglang_loaded():
    # "Load weight end. ... mem usage=15.28 GB" (GiB) in the real log; the estimate is the shapes in config.json.
    loaded = float(re.search(r"Load weight end\..*mem usage=([\d.]+) GB", H200_LOG.read_text()).group(1))
    facts = ModelFacts.from_folder(MODELS / "qwen3-8b")
    assert facts.weights_from == "architecture"
    assert facts.weight_bytes / 2**30 == pytest.approx(loaded, rel=0.005)
    assert ModelFacts.from_folder(MODELS / "qwen3-32b").weight_bytes / 1e9 == pytest.approx(65.5, rel=0.01)


def _boundary(n: int) -> str:
    return BOUNDARY_LOG.read_text().split(f"=== {n} ")[1].split("===")[0]


@pytest.mark.parametrize(
    "model, mfs, real_tokens",
    [
        ("qwen3-8b", 0.95, lambda: re.search(r"max_total_num_tokens=(\d+)", H200_LOG.read_text()).group(1)),  # 851,140
        ("qwen3-8b", 0.85, lambda: 749_782),  # ../shared/reference/sglang.md, "Seen on SGLang 0.5.17 on an H200"
        ("qwen3-32b", 0.9, lambda: re.search(r"#tokens: (\d+)", _boundary(2)).group(1)),  # 262,803
        ("qwen3-32b", 0.46, lambda: re.search(r"#tokens: (\d+)", _boundary(3)).group(1)),  # 11,943
    ],
)
def test_kv_pool_estimate_against_real_sglang(model, mfs, real_tokens):
    real = int(real_tokens())
    kv = h200(model).kv_estimate(ServerFlags.of({"mem-fraction-static": mfs}))
    # Above by 0.6-1.2 GiB: NVML's total (140.40 GiB) stands for the 139.13 GiB SGLang found free before loading.
    assert 0 < (kv.estimate_tokens - real) * kv.cell_bytes / 2**30 < 1.3
    assert kv.bound_tokens > real  # the bound the checks use never falls below the real pool


def test_sglang_default_memory_fraction():
    # /get_server_info of the H200 baseline: mem_fraction_static=0.903; the estimate leaves out the graph reserve.
    kv = h200().kv_estimate(ServerFlags())
    assert kv.mem_fraction_source == "SGLang's default" and 0.903 <= kv.mem_fraction_static <= 0.915


# Every config that started on the H200 (docs/h200.md trials 0-8, ../shared/gpu/README.md's table), Qwen3-8B.
STARTED = [
    {},
    {"mem-fraction-static": 0.84, "cuda-graph-max-bs-decode": 16, "chunked-prefill-size": 16384},
    {"mem-fraction-static": 0.91, "cuda-graph-max-bs-decode": 64, "chunked-prefill-size": 2048},
    {"mem-fraction-static": 0.7, "cuda-graph-max-bs-decode": 128, "chunked-prefill-size": 4096},
    {"mem-fraction-static": 0.76, "cuda-graph-max-bs-decode": 32, "chunked-prefill-size": 4096},
    {"mem-fraction-static": 0.8, "cuda-graph-max-bs-decode": 128, "chunked-prefill-size": 4096},
    {"mem-fraction-static": 0.95, "cuda-graph-max-bs-decode": 128, "chunked-prefill-size": 4096},
    {"mem-fraction-static": 0.85},
    {"mem-fraction-static": 0.9, "cuda-graph-max-bs-decode": 64, "disable-prefill-cuda-graph": True},
    {"mem-fraction-static": 0.99},  # started, then died of a CUDA OOM under load: not a launch failure
]
STARTED_32B = [{"mem-fraction-static": 0.9}, {"mem-fraction-static": 0.46}]  # the boundary log, launches 2 and 3


@pytest.mark.parametrize("model, flags", [("qwen3-8b", f) for f in STARTED] + [("qwen3-32b", f) for f in STARTED_32B])
def test_never_rejects_a_config_that_started_on_the_h200(model, flags):
    assert h200(model).predict(ServerFlags.of(flags), 1) is None


@pytest.mark.parametrize(
    "model, mfs, log",
    [
        ("qwen3-8b", 0.05, lambda: (ROOT / "docs" / "h200.md").read_text()),  # ../shared/gpu/README.md's table too
        ("qwen3-8b", 0.105, lambda: _boundary(6)),
        ("qwen3-32b", 0.42, lambda: _boundary(4)),
        ("qwen3-32b", 0.38, lambda: _boundary(5)),
    ],
)
def test_catches_every_recorded_kv_refusal(model, mfs, log):
    if mfs != 0.05:
        assert f"Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static={mfs}." in log()
    p = h200(model).predict(ServerFlags.of({"mem-fraction-static": mfs}), 1)
    assert p.failure.name == "predicted_oom_kv" and "GiB of weights per GPU (architecture)" in p.detail


@pytest.mark.parametrize("model, minimum", [("qwen3-8b", 0.1103), ("qwen3-32b", 0.4391)])
def test_the_rejection_threshold_stays_below_sglangs_real_minimum(model, minimum):
    # "minimum viable = 1 - available/pre = ..." in the refusals above: below it SGLang refuses, above it runs.
    # We reject only below 0.1054 (8B) and 0.4216 (32B): at least 0.004 of room under the real minimum.
    assert h200(model).predict(ServerFlags.of({"mem-fraction-static": round(minimum - 0.004, 4)}), 1) is None
    assert h200(model).predict(ServerFlags.of({"mem-fraction-static": round(minimum - 0.03, 3)}), 1) is not None


def test_qwen3_32b_memory_and_heads():
    f = h200("qwen3-32b", gpus=8)
    assert f.predict(ServerFlags.of({"mem-fraction-static": 0.35}), 1).failure.name == "predicted_oom_kv"
    assert f.predict(ServerFlags.of({"mem-fraction-static": 0.35, "tp-size": 2}), 2) is None  # weights halve
    assert f.predict(ServerFlags.of({"tp-size": 3}), 3).failure.name == "predicted_tp_heads"
    for tp in (1, 2, 4, 8, 16):  # 16 > 8 KV heads: replicated, allowed
        assert f.predict(ServerFlags.of({"tp-size": tp}), 1) is None, tp
    assert f.predict(ServerFlags.of({"tp-size": 2}), 9).failure.name == "too_many_gpus"


def test_context_length_above_the_model():
    assert "context_length (65536) is greater than the derived context_length (40960)" in _boundary(1)
    flags = ServerFlags.of({"context-length": 65536})
    assert h200().predict(flags, 1).failure.name == "predicted_context_length"
    assert h200(env={"SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN": "1"}).predict(flags, 1) is None
    assert h200().predict(ServerFlags.of({"context-length": 40960}), 1) is None
    short = h200().predict(ServerFlags.of({"context-length": 600}), 1)
    assert short.failure.name == "predicted_kv_too_small" and "640" in short.detail


def test_pool_capped_below_one_request():
    assert h200().predict(ServerFlags.of({"max-total-tokens": 639}), 1).failure.name == "predicted_kv_too_small"
    assert h200().predict(ServerFlags.of({"max-total-tokens": 640}), 1) is None
    # Rounded down to whole pages as SGLang does: 700 tokens in pages of 256 is 512.
    paged = ServerFlags.of({"max-total-tokens": 700, "page-size": 256})
    assert h200().predict(paged, 1).failure.name == "predicted_kv_too_small"
    fp8 = h200().kv_estimate(ServerFlags.of({"mem-fraction-static": 0.85, "kv-cache-dtype": "fp8_e4m3"}))
    assert fp8.bound_tokens == pytest.approx(
        2 * h200().kv_estimate(ServerFlags.of({"mem-fraction-static": 0.85})).bound_tokens, abs=2
    )


def test_unknown_facts_skip_the_check(tmp_path):
    assert ModelFacts.from_folder(tmp_path) is None  # no config.json: a hub id, nothing predicted
    mla = yaml.safe_load((MODELS / "qwen3-8b" / "config.json").read_text()) | {"kv_lora_rank": 512}
    (tmp_path / "config.json").write_text(yaml.safe_dump(mla))
    f = Feasibility(ModelFacts.from_folder(tmp_path), H200_MIB, (0,), WORKLOAD, {})
    assert f.predict(ServerFlags.of({"mem-fraction-static": 0.05}), 1) is None  # MLA: another pool formula
    assert (
        Feasibility(ModelFacts.from_folder(MODELS / "qwen3-8b"), None, (0,), WORKLOAD, {}).predict(
            ServerFlags.of({"mem-fraction-static": 0.05}), 1
        )
        is None
    )  # no NVML


def test_predicted_failure_is_recorded_and_never_launched(monkeypatch, tmp_path, unique_study):
    """A stand-in wrapped by a script that logs every command line it gets: the predicted trial never reaches it."""
    FakeNvml(n=1, study=unique_study).install(monkeypatch)  # 80 GiB, like the stand-in's default GPU
    model = tmp_path / "qwen3-8b"
    model.mkdir()
    shutil.copy(MODELS / "qwen3-8b" / "config.json", model)
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        f"import os, sys\nopen({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"os.execv(sys.executable, [sys.executable, {str(STANDIN)!r}, *sys.argv[1:]])\n"
    )
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"mem-fraction-static": {"choices": [0.05, 0.85]}}}))
    cfg = load_config(
        write_run(
            tmp_path,
            study=unique_study,
            space=space,
            trials=1,  # one launch: the predicted trial takes none of the budget
            baseline=False,
            model={"path": str(model)},
            launcher={"command": [sys.executable, str(wrapper)]},
            workload={"concurrency": [2], "num_prompts": 4},
        )
    )
    tuner = Tuner(cfg)
    study = tuner.prepare()
    study.enqueue_trial({"mem-fraction-static": 0.05})
    study.enqueue_trial({"mem-fraction-static": 0.85})
    try:
        tuner.run()
    finally:
        gpu.reset()
    by = {t.user_attrs["flags"].get("mem-fraction-static"): t for t in study.trials}
    bad = by[0.05]
    assert bad.state == optuna.trial.TrialState.COMPLETE and bad.user_attrs["feasible"] is False
    assert bad.user_attrs["failure_class"] == "predicted_oom_kv" and bad.user_attrs["launched"] is False
    assert bad.user_attrs["startup_s"] == 0 and not (Path(bad.user_attrs["trial_dir"]) / "server.log").exists()
    assert by[0.85].user_attrs["failure_class"] == "none"
    launches = [line for line in calls.read_text().splitlines() if "--help" not in line]
    assert len(launches) == 1 and "--mem-fraction-static 0.85" in launches[0]
