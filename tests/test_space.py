"""Search-space files: conditional sampling, and every bad file refused with its line named."""

from pathlib import Path

import optuna
import pytest

from tuner.flags import FlagCatalog
from tuner.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parent.parent
HELP = """usage: sglang serve [-h] ...
options:
  --model-path MODEL_PATH, --model MODEL_PATH
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
  --max-total-tokens MAX_TOTAL_TOKENS
"""


def write(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_shipped_spaces_load_and_validate():
    catalog = FlagCatalog.from_help(HELP)
    for path in (ROOT / "search_spaces").glob("*.yaml"):
        space = load_space(path)
        if "h200" not in path.name:
            space.validate(catalog)


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
    ("params:\n  schedule-policy: {choices: [fcfs]}\nbogus: 1\n", ":3: bogus: unknown key"),
    ("params:\n  mem-fraction-static: {low: 0.9, high: 0.8}\n", ":2: params.mem-fraction-static: empty range"),
    ("params:\n  mem-fraction-static: {low: 0.7}\n", ":2: params.mem-fraction-static: a range needs both"),
    ("params:\n  schedule-policy: {choices: []}\n", ":2: params.schedule-policy.choices: must not be empty"),
    ("params:\n  schedule-policy: {choices: [fcfs], colour: red}\n", ":2: params.schedule-policy.colour: unknown key"),
    ("params:\n  --schedule-policy: {choices: [fcfs]}\n", ":2: params.--schedule-policy: write flags as SGLang"),
    ("params:\n  mem_fraction_static: {low: 0.7, high: 0.9}\n", ":2: params.mem_fraction_static: write flags as"),
    ("params:\n  torch-compile-max-bs: {low: 1, high: 8, when: {enable-torch-compile: true}}\n",
     ":2: params.torch-compile-max-bs.when: 'when' names 'enable-torch-compile'"),
    ("params: {}\n", ":1: params: must not be empty"),
    ("fixed:\n  attention-backend: triton\n", "params: required"),
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
    with pytest.raises(SpaceError, match=r":3: params.cuda-graph-max-bs.low: --cuda-graph-max-bs is not a full flag name \(it could match"):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs, bogus]}\n")
    with pytest.raises(SpaceError, match=r":2: params.schedule-policy.choices\[1\]: --schedule-policy bogus is not one of"):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  enable-turbo: {choices: [true, false]}\n")
    with pytest.raises(SpaceError, match=r":2: params.enable-turbo.choices\[0\]: --enable-turbo is not a flag of this SGLang"):
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


def test_catalog_checks_value_types_that_help_does_not_show():
    """--help's metavars say nothing of types; SGLang 0.5.17's server_args.py does (tuner/sglang_types.py)."""
    catalog = FlagCatalog.from_help(HELP)
    assert catalog.value_type("tensor-parallel-size") == "int"  # an alias has its flag's type
    assert catalog.check("torch-compile-max-bs", 8) is None
    assert catalog.check("torch-compile-max-bs", "16") is None  # argparse's int("16")
    assert "whole number" in catalog.check("torch-compile-max-bs", 8.0)  # int("8.0") fails in argparse
    assert catalog.check("mem-fraction-static", 1) is None and catalog.check("mem-fraction-static", 0.85) is None
    assert "takes a number" in catalog.check("mem-fraction-static", "high")
    assert catalog.check("max-total-tokens", "64k") is None  # human_readable_int
    assert "whole number" in catalog.check("max-total-tokens", "64kb")
    assert catalog.check("schedule-policy", "lof") is None and catalog.value_type("schedule-policy") is None


def test_flags_the_tuner_sets_are_refused(tmp_path):
    with pytest.raises(SpaceError, match=r":2: params.model: --model is set by the tuner itself"):
        load_space(write(tmp_path, "params:\n  model: {choices: [a, b]}\n"))  # --model-path's alias
    with pytest.raises(SpaceError, match=r":3: fixed.host: --host is set by the tuner itself"):
        load_space(write(tmp_path, "fixed:\n  attention-backend: triton\n  host: 0.0.0.0\nparams:\n"
                                   "  schedule-policy: {choices: [fcfs]}\n"))


def test_no_op_parameters_are_flagged():
    warnings = load_space(ROOT / "search_spaces/default.yaml").no_op_warnings()
    assert any("num-continuous-decode-steps" in w for w in warnings)


def test_gpus_per_trial(tmp_path):
    space = load_space(write(tmp_path, "params:\n  tp-size: {choices: [1, 2]}\ngpus_per_trial: tp-size * dp-size\n"))
    assert space.gpus_needed(space.flags_from_params({"tp-size": 2})) == 2
    assert space.gpus_needed(space.flags_from_params({"tp-size": 1})) == 1
