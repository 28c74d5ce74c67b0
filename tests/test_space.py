"""Search-space files: conditional sampling, and every bad file refused with its line named."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tuner.config.space import SpaceError, load_space
from tuner.sglang.catalog import FlagCatalog
from tuner.sglang.flags import ServerFlags

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
    """Every shipped space, the H200 one included, against the --help of the stand-in (SGLang 0.5.17's flags)."""
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "tests/standin/sglang_standin.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
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
    argv = space.flags_from_params(
        {
            "schedule-policy": "lof",
            "enable-torch-compile": True,
            "torch-compile-max-bs": 6,
            "mem-fraction-static": 0.87,
            "triton-attention-num-kv-splits": 12,
            "num-continuous-decode-steps": 2,
        }
    ).argv()
    assert argv[:2] == ["--attention-backend", "triton"]
    assert "--disable-cuda-graph" in argv
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.87"
    assert argv[argv.index("--enable-torch-compile") + 1] == "--torch-compile-max-bs"


@pytest.mark.parametrize(
    "text, message",
    [
        ("params:\n  schedule-policy: {choices: [fcfs]}\nbogus: 1\n", ":3: bogus: unknown key"),
        ("params:\n  mem-fraction-static: {low: 0.9, high: 0.8}\n", ":2: params.mem-fraction-static: empty range"),
        ("params:\n  mem-fraction-static: {low: 0.7}\n", ":2: params.mem-fraction-static: a range needs both"),
        ("params:\n  schedule-policy: {choices: []}\n", ":2: params.schedule-policy.choices: must not be empty"),
        (
            "params:\n  schedule-policy: {choices: [fcfs], colour: red}\n",
            ":2: params.schedule-policy.colour: unknown key",
        ),
        ("params:\n  --schedule-policy: {choices: [fcfs]}\n", ":2: params.--schedule-policy: write flags as SGLang"),
        ("params:\n  mem_fraction_static: {low: 0.7, high: 0.9}\n", ":2: params.mem_fraction_static: write flags as"),
        (
            "params:\n  torch-compile-max-bs: {low: 1, high: 8, when: {enable-torch-compile: true}}\n",
            ":2: params.torch-compile-max-bs.when: 'when' names 'enable-torch-compile'",
        ),
        ("params: {}\n", ":1: params: must not be empty"),
        ("fixed:\n  attention-backend: triton\n", "params: required"),
        ("params:\n  a: [1\n", "not valid YAML"),
        ("params:\n  x: {low: 1, high: 2}\n  x: {low: 1, high: 3}\n", ":3: 'x' appears twice"),
    ],
)
def test_bad_space_files_name_the_line(tmp_path, text, message):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_flags_sglang_does_not_have_are_refused_with_the_line(tmp_path):
    catalog = FlagCatalog.from_help(HELP, "python -m sglang.launch_server")
    path = write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs]}\n  cuda-graph-max-bs: {low: 8, high: 64}\n")
    with pytest.raises(
        SpaceError,
        match=r":3: params.cuda-graph-max-bs.low: --cuda-graph-max-bs is not a full flag name \(it could match",
    ):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs, bogus]}\n")
    with pytest.raises(
        SpaceError, match=r":2: params.schedule-policy.choices\[1\]: --schedule-policy bogus is not one of"
    ):
        load_space(path).validate(catalog)
    path = write(tmp_path, "params:\n  enable-turbo: {choices: [true, false]}\n")
    with pytest.raises(
        SpaceError, match=r":2: params.enable-turbo.choices\[0\]: --enable-turbo is not a flag of this SGLang"
    ):
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
    """--help's metavars say nothing of types; SGLang 0.5.17's server_args.py does (tuner/sglang/flag_types.py)."""
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
        load_space(
            write(
                tmp_path,
                "fixed:\n  attention-backend: triton\n  host: 0.0.0.0\nparams:\n  schedule-policy: {choices: [fcfs]}\n",
            )
        )


def test_no_op_parameters_are_flagged():
    warnings = load_space(ROOT / "search_spaces/default.yaml").no_op_warnings()
    assert any("num-continuous-decode-steps" in w for w in warnings)


def test_gpus_per_trial(tmp_path):
    space = load_space(write(tmp_path, "params:\n  tp-size: {choices: [1, 2]}\ngpus_per_trial: tp-size * dp-size\n"))
    assert space.gpus_needed(space.flags_from_params({"tp-size": 2})) == 2
    assert space.gpus_needed(space.flags_from_params({"tp-size": 1})) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n", ": a search space is a mapping with 'fixed' and 'params'"),
        (
            "fixed:\n  tp-size: [1, 2]\nparams:\n  x: {choices: [1]}\n",
            ":2: fixed.tp-size: expected one value (text, a number or true/false), got [1, 2]",
        ),
        ("fixed:\n  x: 1\nparams:\n  x: {choices: [1]}\n", ":4: params.x: both fixed and a parameter"),
        ("params:\n  x: 3\n", ":2: params.x: expected a mapping, got 3"),
        ("params:\n  x: {choices: [1], when: [a]}\n", ':2: params.x.when: expected a mapping, got ["a"]'),
        (
            "params:\n  x: {low: 1, high: 2, log: yes please}\n",
            ":2: params.x.log: expected true or false, got 'yes please'",
        ),
        ("params:\n  x: {choices: [1], low: 1}\n", ":2: params.x: give either choices or low/high, not both"),
        ("params:\n  x: {choices: [1, 1]}\n", ":2: params.x.choices: a value is there twice"),
        (
            "params:\n  x: {choices: [[1]]}\n",
            ":2: params.x.choices[0]: expected one value (text, a number or true/false), got [1]",
        ),
        ("params:\n  x: {choices: 1}\n", ":2: params.x.choices: expected a list, got 1"),
        ("params:\n  x: {low: a, high: 2}\n", ":2: params.x.low: expected a number, got 'a'"),
        ("params:\n  x: {low: 1, high: .inf}\n", ":2: params.x.high: expected a finite number, got inf"),
        ("params:\n  x: {low: 1, high: 2, step: true}\n", ":2: params.x.step: expected a number, got true"),
        ("params:\n  x: {low: 1, high: 1}\n", ":2: params.x: empty range: low (1) must be below high (1)"),
        ("params:\n  x: {low: 1, high: 2, step: 0}\n", ":2: params.x.step: must be positive, got 0"),
        ("params:\n  x: {low: 0, high: 2, log: true}\n", ":2: params.x: log scale needs low > 0 and no step"),
        (
            "params:\n  x: {low: 1, high: 2, step: 2, log: true}\n",
            ":2: params.x.step: 2 is larger than the range 1..2: only low could ever be tried",
        ),
        (
            "params:\n  x: {low: 0.1, high: 2.0, step: 0.1, log: true}\n",
            ":2: params.x: log scale needs low > 0 and no step",
        ),
        (
            "params:\n  X: {low: 1, high: 2}\n",
            ":2: params.X: write flags as SGLang spells them without dashes: 'x', not 'X'",
        ),
        (
            "params:\n  tp size: {low: 1, high: 2}\n",
            ":2: params.tp size: write flags as SGLang spells them without dashes",
        ),
        (
            "params:\n  x: {choices: [1]}\ngpus_per_trial: tp-size + 1\n",
            ":3: gpus_per_trial: 'tp-size + 1' must be flag names and integers joined by '*'",
        ),
        ("params:\n  x: {choices: [1]}\ngpus_per_trial: 2 * \n", "must be flag names and integers joined by '*'"),
        ("params: [1]\n", ":1: params: expected a mapping, got [1]"),
        (
            "params:\n  x: {choices: [1]}\n  y: {choices: [a], when: {x: [1, 2]}}\nbogus: 1\n",
            ":4: bogus: unknown key (expected one of description, fixed, params, gpus_per_trial, changes_numerics)",
        ),
    ],
)
def test_every_bad_space_message(tmp_path, text, message):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert str(err.value).startswith(str(tmp_path / "space.yaml")) and message in str(err.value), str(err.value)


def test_a_space_file_read_in_full(tmp_path):
    space = load_space(
        write(
            tmp_path,
            (
                "description: the seed's\nfixed:\n  attention-backend: triton\n  disable-cuda-graph: true\nparams:\n"
                "  schedule-policy: {choices: [fcfs, lof]}\n"
                "  kv-splits: {choices: [4, 8], when: {attention-backend: triton}}\n"
                "  bs: {low: 1, high: 64, log: true}\n  mfs: {low: 0.7, high: 0.9, step: 0.01}\n"
                "  ints: {low: 1, high: 9, step: 2}\n"
                "  steps: {low: 1, high: 4}\n  c: {choices: [1], when: {schedule-policy: [lof, fcfs]}}\n"
            ),
        )
    )
    assert space.description == "the seed's" and space.name == "space" and space.gpus_per_trial is None
    assert space.fixed.values == (("attention-backend", "triton"), ("disable-cuda-graph", True))
    p = {x.name: x for x in space.params}
    assert [x.name for x in space.params] == ["schedule-policy", "kv-splits", "bs", "mfs", "ints", "steps", "c"]
    assert p["schedule-policy"].line == 6 and p["schedule-policy"].choices == ("fcfs", "lof")
    assert p["kv-splits"].when[0].flag == "attention-backend" and p["kv-splits"].when[0].values == ("triton",)
    assert p["c"].when[0].values == ("lof", "fcfs")
    assert (p["bs"].low, p["bs"].high, p["bs"].step, p["bs"].log, p["bs"].is_int) == (1, 64, None, True, True)
    assert (p["mfs"].step, p["mfs"].log, p["mfs"].is_int) == (0.01, False, False)
    assert p["ints"].values_to_check() == [1, 9] and p["kv-splits"].values_to_check() == [4, 8]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        flags = space.sample(trial).as_dict()
        study.tell(trial, 0.0)
        assert list(flags)[:2] == ["attention-backend", "disable-cuda-graph"]
        assert 1 <= flags["bs"] <= 64 and isinstance(flags["bs"], int)
        assert flags["ints"] in (1, 3, 5, 7, 9) and 1 <= flags["steps"] <= 4 and isinstance(flags["steps"], int)
        assert round(flags["mfs"], 2) == flags["mfs"] and 0.7 <= flags["mfs"] <= 0.9
        assert flags["kv-splits"] in (4, 8) and flags["c"] == 1
    dists = study.trials[0].distributions
    assert dists["bs"].log and not dists["mfs"].log and dists["mfs"].step == 0.01 and dists["ints"].step == 2
    assert not dists["steps"].log and dists["steps"].step == 1
    empty = load_space(write(tmp_path, "fixed: ~\nparams:\n  x: {choices: [1]}\n"))
    assert empty.fixed.values == () and empty.description == ""


def test_flags_from_params_follow_the_conditions(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "fixed:\n  a: 1\nparams:\n  b: {choices: [x, y]}\n"
            "  c: {choices: [1, 2], when: {b: y}}\n  d: {choices: [3], when: {a: 2}}\n",
        )
    )
    assert space.flags_from_params({}).values == (("a", 1),)
    assert space.flags_from_params({"b": "x", "c": 2, "d": 3}).values == (("a", 1), ("b", "x"))
    assert space.flags_from_params({"b": "y", "c": 2}).values == (("a", 1), ("b", "y"), ("c", 2))


def test_defaults_the_space_cannot_draw_are_named_with_what_it_offers(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "fixed:\n  a: 1\nparams:\n  disable-radix-cache: {choices: [false, true]}\n"
            "  policy: {choices: [lpm, lof], when: {disable-radix-cache: false}}\n"
            "  chunk: {choices: [2048, 4096]}\n  frac: {low: 0.7, high: 0.9, step: 0.05}\n"
            "  cap: {low: 32, high: 256, step: 32}\n  cons: {low: 0.5, high: 1.5}\n",
        )
    )
    inside = {
        "disable-radix-cache": False,
        "policy": "lpm",
        "chunk": 4096,
        "frac": 0.85,
        "cap": 96,
        "cons": 1.0,
        "other": 3,
    }
    assert space.unreachable(inside) == []
    assert space.unreachable({**inside, "frac": 0.7000000001, "cap": 256, "cons": 0.5}) == []  # ends, float noise
    assert space.unreachable({**inside, "policy": "fcfs", "chunk": 8192, "frac": 0.83, "cap": 100, "cons": 1.6}) == [
        "policy: SGLang chose fcfs, the space offers choices lpm, lof",
        "chunk: SGLang chose 8192, the space offers choices 2048, 4096",
        "frac: SGLang chose 0.83, the space offers 0.7-0.9 by 0.05",  # between steps
        "cap: SGLang chose 100, the space offers 32-256 by 32",
        "cons: SGLang chose 1.6, the space offers 0.5-1.5",
    ]
    # Not a value it could draw: 0 is no bool, a float no int, a bool no number; a policy SGLang only has
    # with the radix cache is not asked about without it; a flag SGLang left unset says nothing.
    assert len(space.unreachable({**inside, "disable-radix-cache": 0, "cap": 96.0, "frac": True})) == 3
    assert space.unreachable({**inside, "disable-radix-cache": True, "policy": "fcfs"}) == []
    assert space.unreachable({**inside, "cap": None}) == []
    assert space.unreachable({**inside, "cap": "auto"}) == ["cap: SGLang chose auto, the space offers 32-256 by 32"]
    steps = load_space(
        write(
            tmp_path,
            "params:\n  a: {low: 10, high: 100, step: 30}\n  b: {low: 1, high: 9}\n"
            "  c: {low: 0.72, high: 0.92, step: 0.05}\n",
        )
    )
    assert steps.unreachable({"a": 40, "b": 4, "c": 0.82}) == []  # on the steps from each low end
    assert [m.split(":")[0] for m in steps.unreachable({"a": 50, "b": 4.5, "c": 0.8})] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "flags, gpus",
    [
        ({}, 1),
        ({"tp-size": 2}, 2),
        ({"tensor-parallel-size": 4}, 4),
        ({"tp": 2, "dp": 3}, 6),
        ({"tp-size": 2, "dp-size": 2}, 4),
        ({"tp-size": 2, "data-parallel-size": 3}, 6),
        ({"tp-size": 4, "dp-size": 2, "enable-dp-attention": True}, 4),
        ({"tp-size": 2, "pp-size": 2}, 4),
        ({"pipeline-parallel-size": 3}, 3),
        ({"pp": 2, "tp-size": 0}, 2),
        ({"tp-size": None, "dp-size": 2}, 2),
    ],
)
def test_gpus_needed_from_sglangs_flags(tmp_path, flags, gpus):
    space = load_space(write(tmp_path, "params:\n  x: {choices: [1]}\n"))
    assert space.gpus_needed(ServerFlags(tuple(flags.items()))) == gpus


def test_gpus_per_trial_expressions_and_the_upper_bound(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "fixed:\n  dp-size: 2\nparams:\n  tp-size: {choices: [1, 4, 2]}\n"
            "  mfs: {low: 0.5, high: 0.9}\ngpus_per_trial: 2 * tp_size * dp-size\n",
        )
    )
    assert space.gpus_needed(ServerFlags.of({"tp-size": 4, "dp-size": 2})) == 16
    assert space.gpus_needed(ServerFlags.of({"tp-size": 1})) == 2  # dp-size absent: SGLang's default 1
    assert space.most_gpus() == 16
    plain = load_space(
        write(
            tmp_path,
            "params:\n  tp-size: {choices: [1, 8]}\n  dp-size: {low: 1, high: 3}\n"
            "  schedule-policy: {choices: [fcfs]}\n  flag: {choices: [true, false]}\n",
        )
    )
    assert plain.most_gpus() == 24
    odd = load_space(write(tmp_path, "params:\n  tp-size: {choices: [fcfs]}\ngpus_per_trial: tp-size\n"))
    assert odd.most_gpus() == 1  # not a number: no bound beyond one GPU


def test_no_op_warnings_name_each_wasted_parameter(tmp_path):
    assert load_space(write(tmp_path, "params:\n  schedule-policy: {choices: [fcfs, lpm]}\n")).no_op_warnings() == []
    space = load_space(
        write(
            tmp_path,
            "fixed:\n  disable-radix-cache: true\nparams:\n"
            "  schedule-policy: {choices: [fcfs, lpm, priority]}\n"
            "  num-continuous-decode-steps: {low: 1, high: 4}\n",
        )
    )
    assert space.no_op_warnings() == [
        "--num-continuous-decode-steps is parsed but never read by SGLang 0.5.x (PR #23131 was closed): "
        "expect no effect from it",
        "--schedule-policy lpm/dfs-weight fall back to fcfs when --disable-radix-cache is set",
        "--schedule-policy priority is accepted by argparse but crashes SGLang's scheduler "
        "(use --enable-priority-scheduling): those trials will fail",
    ]
    radix_off = load_space(
        write(tmp_path, "fixed:\n  disable-radix-cache: false\nparams:\n  schedule-policy: {choices: [fcfs, lpm]}\n")
    )
    assert radix_off.no_op_warnings() == []


def test_each_param_has_the_distribution_it_samples_from(tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = load_space(
        write(
            tmp_path,
            "params:\n  a: {choices: [x, 1]}\n  b: {low: 1, high: 64, log: true}\n"
            "  c: {low: 2, high: 10, step: 2}\n  d: {low: 0.5, high: 0.9, step: 0.1}\n"
            "  e: {low: 0.01, high: 1.0, log: true}\n  f: {low: 1, high: 4}\n",
        )
    )
    dists = {p.name: p.distribution() for p in space.params}
    assert dists == {
        "a": CategoricalDistribution(["x", 1]),
        "b": IntDistribution(1, 64, step=1, log=True),
        "c": IntDistribution(2, 10, step=2, log=False),
        "d": FloatDistribution(0.5, 0.9, step=0.1, log=False),
        "e": FloatDistribution(0.01, 1.0, step=None, log=True),
        "f": IntDistribution(1, 4, step=1, log=False),
    }
    # What a trial sampled from them is what a study records.
    study = optuna.create_study()
    trial = study.ask()
    space.sample(trial)
    assert study.trials[0].distributions == dists


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "params:\n  x: {choices: [1]}\n\n  y: [1\n",
            ":5: not valid YAML (expected ',' or ']', but got '<stream end>')",
        ),
        (
            "params:\n  x: {choices: [1]}\ncolour: red\n",
            ":3: colour: unknown key (expected one of description, fixed, params, gpus_per_trial, changes_numerics)",
        ),
        (
            "params:\n  x: {choices: [1], colour: red}\n",
            ":2: params.x.colour: unknown key (expected one of choices, low, high, step, log, when)",
        ),
        ("params:\n  x: {choices: [1], high: 2}\n", "give either choices or low/high, not both"),
        ("params:\n  x: {choices: [1], step: 2}\n", "give either choices or low/high, not both"),
        ("params:\n  x: {choices: [1], log: true}\n", "give either choices or low/high, not both"),
        ("params:\n  x: {low: 0.1, high: 2, log: true, step: 1}\n", None),
        ("params:\n  x: {low: -1, high: 2, log: true}\n", "log scale needs low > 0 and no step"),
        ("params:\n  x: {low: 1.5, high: 2.5, log: true, step: 0.5}\n", "log scale needs low > 0 and no step"),
        ("params:\n  Mem_Fraction: {low: 0.5, high: 0.9}\n", "without dashes: 'mem-fraction', not 'Mem_Fraction'"),
        ("params:\n  -x: {low: 0.5, high: 0.9}\n", "without dashes: 'x', not '-x'"),
        ("params:\n  x: {choices: [1]}\n  y: {choices: [1]}\n  z: {low: 1, high: 2}\ngpus_per_trial: y * z\n", None),
        ("fixed:\n  z: 2\nparams:\n  x: {choices: [1]}\ngpus_per_trial: z * q9\n", None),
        ("fixed: null\nparams:\n  x: {choices: [1]}\n", None),
        ("fixed: ''\nparams:\n  x: {choices: [1]}\n", ":1: fixed: expected a mapping, got ''"),
        ("fixed: 3\nparams:\n  x: {choices: [1]}\n", ":1: fixed: expected a mapping, got 3"),
        ("fixed:\n  - a\nparams:\n  x: {choices: [1]}\n", ':1: fixed: expected a mapping, got ["a"]'),
    ],
)
def test_more_space_files(tmp_path, text, message):
    if message is None:
        load_space(write(tmp_path, text))
        return
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert message in str(err.value), str(err.value)


def test_validate_lists_every_problem_and_the_description(tmp_path):
    catalog = FlagCatalog.from_help(HELP, "sglang")
    space = load_space(
        write(
            tmp_path,
            "description: two bad\nfixed:\n  bogus: 1\nparams:\n"
            "  schedule-policy: {choices: [fcfs, nope]}\n  tp-size: {low: 1, high: 2}\n",
        )
    )
    assert space.description == "two bad"
    with pytest.raises(SpaceError) as err:
        space.validate(catalog)
    assert str(err.value) == (
        f"{tmp_path / 'space.yaml'}:3: fixed.bogus: --bogus is not a flag of this SGLang "
        f"(sglang); {tmp_path / 'space.yaml'}:5: params.schedule-policy.choices[1]: "
        "--schedule-policy nope is not one of lpm, random, fcfs, dfs-weight, lof, priority, "
        "routing-key"
    )


def test_gpus_per_trial_values(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "fixed:\n  dp-size: 3\nparams:\n  tp-size: {choices: [1, 2]}\ngpus_per_trial: tp-size * dp_size * 2\n",
        )
    )
    assert space.gpus_needed(ServerFlags.of({"tp-size": 2, "dp-size": 3})) == 12  # dp_size in the expression
    assert space.gpus_needed(ServerFlags.of({})) == 2
    floats = load_space(write(tmp_path, "params:\n  tp-size: {choices: [1, 2.0]}\n"))
    assert floats.most_gpus() == 2
    switches = load_space(write(tmp_path, "params:\n  tp-size: {choices: [true, false]}\n"))
    assert switches.most_gpus() == 1
