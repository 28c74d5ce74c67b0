"""Search-space files: conditional sampling, and every bad file refused with its line named."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tuner.flags import FlagCatalog
from tuner.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parent.parent
HELP = """usage: sglang serve [-h] ...
options:
  --model-path MODEL_PATH
  --host HOST
  --port PORT
  --schedule-policy {lpm,random,fcfs,dfs-weight,lof,priority,routing-key}
  --num-continuous-decode-steps NUM_CONTINUOUS_DECODE_STEPS
  --enable-torch-compile
                        Optimize the model with torch.compile.
  --torch-compile-max-bs TORCH_COMPILE_MAX_BS
  --triton-attention-num-kv-splits TRITON_ATTENTION_NUM_KV_SPLITS
  --mem-fraction-static MEM_FRACTION_STATIC
  --attention-backend {triton,torch_native,flashinfer,fa3}
  --disable-cuda-graph  Deprecated: use --cuda-graph-backend-decode=disabled.
  --cuda-graph-max-bs-decode CUDA_GRAPH_MAX_BS_DECODE
  --cuda-graph-max-bs-prefill CUDA_GRAPH_MAX_BS_PREFILL
  --disable-flashinfer
  --disable-custom-all-reduce
  --tp-size TP_SIZE, --tensor-parallel-size TP_SIZE
  --dp-size, --data-parallel-size DP_SIZE
"""


def write(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_shipped_spaces_load_and_validate():
    """Every shipped space, the H200 one included, against the --help of the stand-in (SGLang 0.5.17's flags)."""
    help_text = subprocess.run([sys.executable, str(ROOT / "tests/standin/sglang_standin.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    catalog = FlagCatalog.from_help(help_text)
    paths = sorted((ROOT / "search_spaces").glob("*.yaml"))
    assert "h200-qwen3-8b.yaml" in [p.name for p in paths]
    for path in paths:
        load_space(path).validate(catalog)


def test_conditional_params_are_sampled_only_when_they_matter():
    space = load_space(ROOT / "search_spaces/default.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_compile = seen_plain = 0
    for _ in range(40):
        trial = study.ask()
        flags = space.sample(trial).as_dict()
        study.tell(trial, 0.0)
        if flags["enable-torch-compile"]:
            assert "torch-compile-max-bs" in flags
            seen_compile += 1
        else:
            assert "torch-compile-max-bs" not in trial.params
            seen_plain += 1
        assert ("triton-attention-num-kv-splits" in flags) == (flags["attention-backend"] == "triton")
    assert seen_compile and seen_plain


def test_argv_of_sampled_flags():
    space = load_space(ROOT / "search_spaces/seed-rtx5090.yaml")
    argv = space.flags_from_params({"schedule-policy": "lof", "enable-torch-compile": True,
                                    "torch-compile-max-bs": 6, "mem-fraction-static": 0.87,
                                    "triton-attention-num-kv-splits": 12, "num-continuous-decode-steps": 2}).argv()
    assert argv[:2] == ["--attention-backend", "triton"]
    assert "--disable-cuda-graph" in argv
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.87"
    assert argv[argv.index("--enable-torch-compile") + 1] == "--torch-compile-max-bs"


@pytest.mark.parametrize("text, message", [
    ("params:\n  schedule-policy: {choices: [fcfs]}\nbogus: 1\n", ":3: unknown key 'bogus'"),
    ("params:\n  mem-fraction-static: {low: 0.9, high: 0.8}\n", ":2: mem-fraction-static: empty range"),
    ("params:\n  mem-fraction-static: {low: 0.7}\n", ":2: mem-fraction-static: a range needs both"),
    ("params:\n  schedule-policy: {choices: []}\n", ":2: schedule-policy: choices must be a non-empty list"),
    ("params:\n  schedule-policy: {choices: [fcfs], colour: red}\n", ":2: schedule-policy: unknown key 'colour'"),
    ("params:\n  --schedule-policy: {choices: [fcfs]}\n", ":2: write flags as SGLang spells them"),
    ("params:\n  mem_fraction_static: {low: 0.7, high: 0.9}\n", ":2: write flags as SGLang spells them"),
    ("params:\n  torch-compile-max-bs: {low: 1, high: 8, when: {enable-torch-compile: true}}\n",
     ":2: torch-compile-max-bs: 'when' names 'enable-torch-compile'"),
    ("params: {}\n", "'params' is empty"),
    ("fixed:\n  attention-backend: triton\n", "no 'params'"),
    ("params:\n  a: [1\n", "not valid YAML"),
    ("params:\n  x: {low: 1, high: 2}\n  x: {low: 1, high: 3}\n", ":3: 'x' appears twice"),
])
def test_bad_space_files_name_the_line(tmp_path, text, message):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_flags_sglang_does_not_have_are_refused_with_the_line(tmp_path):
    catalog = FlagCatalog.from_help(HELP, "python -m sglang.launch_server")
    path = write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs]}\n  cuda-graph-max-bs: {low: 8, high: 64}\n")
    with pytest.raises(SpaceError, match=r":3: --cuda-graph-max-bs is not a full flag name \(it could match"):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs, bogus]}\n")
    with pytest.raises(SpaceError, match=r":2: --schedule-policy bogus is not one of"):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  enable-turbo: {choices: [true, false]}\n")
    with pytest.raises(SpaceError, match=r":2: --enable-turbo is not a flag of this SGLang"):
        load_space(path).validate(catalog)
    path = write(tmp_path, "fixed:\n  disable-cuda-graph: 3\nparams:\n  schedule-policy: {choices: [fcfs]}\n")
    with pytest.raises(SpaceError, match=r"--disable-cuda-graph is a switch"):
        load_space(path).validate(catalog)


def test_catalog_reads_aliases_choices_and_deprecation():
    catalog = FlagCatalog.from_help(HELP)
    assert catalog.flags["tensor-parallel-size"].takes_value
    assert catalog.flags["dp-size"].takes_value  # Python 3.13's format: one metavar for all aliases
    assert "lof" in catalog.flags["schedule-policy"].choices
    assert catalog.flags["disable-cuda-graph"].deprecated and not catalog.flags["disable-cuda-graph"].takes_value


def test_no_op_parameters_are_flagged():
    warnings = load_space(ROOT / "search_spaces/default.yaml").no_op_warnings()
    assert any("num-continuous-decode-steps" in w for w in warnings)


def test_gpus_per_trial(tmp_path):
    space = load_space(write(tmp_path, "params:\n  tp-size: {choices: [1, 2]}\ngpus_per_trial: tp-size * dp-size\n"))
    assert space.gpus_needed(space.flags_from_params({"tp-size": 2})) == 2
    assert space.gpus_needed(space.flags_from_params({"tp-size": 1})) == 1
