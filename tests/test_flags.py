"""tuner/sglang/flags.py: a parameter set becomes SGLang's command line; the flag catalog read from --help."""

import shlex
import sys

import pytest

from tuner.sglang.catalog import FlagCatalog, FlagCatalogError, read_catalog
from tuner.sglang.flags import ServerFlags, deploy_defaults, format_value, one_per_line, resolved_flags, shell_args

HELP = """usage: sglang serve [-h] ...

options:
  -h, --help            show this help message and exit
  --model-path MODEL_PATH, --model MODEL_PATH
                        The path of the model weights.
  --port PORT           The port of the HTTP server.
  --schedule-policy {lpm,random,fcfs}
                        The scheduling policy of the requests.
  --enable-torch-compile
                        Optimize the model with torch.compile.
  --disable-cuda-graph  Deprecated: use --cuda-graph-backend-decode=disabled.
  --tp-size, --tensor-parallel-size TP_SIZE
                        The tensor parallelism size.
  --mem-fraction-static MEM_FRACTION_STATIC
"""


def test_flags_in_order_with_switches_and_values():
    flags = ServerFlags.of(
        {
            "model-path": "Qwen/Qwen3-8B",
            "enable-torch-compile": True,
            "disable-cuda-graph": False,
            "tp-size": 2,
            "chunked-prefill-size": None,
            "mem-fraction-static": 0.8700000000000001,
        }
    )
    assert flags.values[0] == ("model-path", "Qwen/Qwen3-8B") and "chunked-prefill-size" not in flags.as_dict()
    assert flags.as_dict()["disable-cuda-graph"] is False
    assert flags.argv() == [
        "--model-path",
        "Qwen/Qwen3-8B",
        "--enable-torch-compile",
        "--tp-size",
        "2",
        "--mem-fraction-static",
        "0.87",
    ]
    assert ServerFlags.of({"served-model-name": "my model"}).shell() == "--served-model-name 'my model'"
    assert ServerFlags().argv() == [] and ServerFlags().shell() == ""


def test_merged_other_wins_and_keeps_the_order():
    base = ServerFlags.of({"model-path": "m", "port": 1, "host": "h"})
    merged = base.merged(ServerFlags.of({"port": 2, "tp-size": 4}))
    assert merged.values == (("model-path", "m"), ("port", 2), ("host", "h"), ("tp-size", 4))
    assert base.as_dict() == {"model-path": "m", "port": 1, "host": "h"}  # unchanged


def test_format_value():
    assert format_value(0.1 + 0.2) == "0.3" and format_value(1e-7) == "0.0" and format_value(0.1234567) == "0.123457"
    assert format_value(8) == "8" and format_value("lpm") == "lpm" and format_value(2.0) == "2.0"


def test_one_per_line_pairs_options_with_their_values():
    args = ["--model-path", "m", "--enable-torch-compile", "--port", "30000", "positional"]
    assert one_per_line(args) == ["--model-path m", "--enable-torch-compile", "--port 30000", "positional"]
    assert one_per_line(["-d", "--name", "x", "-e", "A=1", "img"], prefix="-") == ["-d", "--name x", "-e A=1", "img"]
    assert one_per_line(["--a", "'b c'", "d"]) == ["--a 'b c'", "d"]  # a value with a space ends its line
    assert one_per_line([]) == []


def test_catalog_from_help():
    catalog = FlagCatalog.from_help(HELP, "sglang 0.5.17")
    assert catalog.source == "sglang 0.5.17"
    assert set(catalog.flags) == {
        "help",
        "model-path",
        "model",
        "port",
        "schedule-policy",
        "enable-torch-compile",
        "disable-cuda-graph",
        "tp-size",
        "tensor-parallel-size",
        "mem-fraction-static",
    }
    assert catalog.flags["schedule-policy"].choices == ("lpm", "random", "fcfs")
    assert catalog.flags["schedule-policy"].takes_value and not catalog.flags["enable-torch-compile"].takes_value
    assert catalog.flags["tp-size"].takes_value and catalog.flags["tensor-parallel-size"].takes_value
    assert catalog.flags["disable-cuda-graph"].deprecated and not catalog.flags["port"].deprecated
    assert catalog.flags["model"].takes_value and catalog.flags["model"].choices == ()


def test_check_names_what_sglang_would_refuse():
    catalog = FlagCatalog.from_help(HELP, "sglang 0.5.17")
    assert catalog.check("schedule-policy", "lpm") is None and catalog.check("enable-torch-compile", True) is None
    assert catalog.check("enable-torch-compile", False) is None and catalog.check("tp-size", 2) is None
    assert catalog.check("schedule-policy", "lof") == "--schedule-policy lof is not one of lpm, random, fcfs"
    assert catalog.check("tp-size", True) == "--tp-size takes a value, not true/false"
    assert catalog.check("enable-torch-compile", 1) == "--enable-torch-compile is a switch: use true or false, not 1"
    assert catalog.check("nope", 1) == "--nope is not a flag of this SGLang (sglang 0.5.17)"
    assert (
        catalog.check("mem-fraction", 0.8)
        == "--mem-fraction is not a full flag name (it could match --mem-fraction-static)"
    )
    assert catalog.check("m", 1).startswith("--m is not a full flag name (it could match --model-path, --model, ")
    flags = ServerFlags.of({"port": 1, "schedule-policy": "lof", "nope": 2})
    assert [p for name, value in flags.values if (p := catalog.check(name, value))] == [
        "--schedule-policy lof is not one of lpm, random, fcfs",
        "--nope is not a flag of this SGLang (sglang 0.5.17)",
    ]


def test_read_catalog_runs_the_commands_help(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(f"import sys\nprint({HELP!r}) if sys.argv[1:] == ['--help'] else sys.exit(3)\n")
    catalog = read_catalog([sys.executable, str(script)])
    assert "schedule-policy" in catalog.flags and catalog.source == f"{sys.executable} {script}"
    no_port = tmp_path / "other.py"
    no_port.write_text("print('usage: other [--verbose]')\n")
    with pytest.raises(FlagCatalogError, match=r"--help lists no --port: is this SGLang's launch_server\?"):
        read_catalog([sys.executable, str(no_port)])
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nprint('first')\nsys.exit('ImportError: no module named sglang')\n")
    with pytest.raises(FlagCatalogError, match=r"--help failed \(exit 1\): ImportError: no module named sglang$"):
        read_catalog([sys.executable, str(failing)])
    with pytest.raises(FlagCatalogError, match=r"cannot run the server command '/no/such/python': No such file"):
        read_catalog(["/no/such/python"])
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(5)\n")
    with pytest.raises(FlagCatalogError, match=r"--help printed nothing in 0 s, so it was stopped: is this SGLang's"):
        read_catalog([sys.executable, str(slow)], quiet_s=0.3)
    chatty = tmp_path / "chatty.py"
    chatty.write_text("import time\nprint('loading', flush=True)\ntime.sleep(5)\n")
    with pytest.raises(FlagCatalogError, match=r"--help did not finish in 0 s, so it was stopped$"):
        read_catalog([sys.executable, str(chatty)], timeout=0.3)
    env_help = tmp_path / "env.py"
    env_help.write_text("import os\nprint('  --port PORT') if os.environ.get('SHOW') == '1' else print('nothing')\n")
    assert "port" in read_catalog([sys.executable, str(env_help)], env={"SHOW": "1"}).flags
    assert shlex.split(catalog.source)[0] == sys.executable


def test_shell_args_put_the_environment_after_the_named_options():
    args = ["--host", "127.0.0.1", "--port", "30000", "--model-path", "my model", "--port"]
    assert shell_args(args, {"--port": '"$PORT"', "--host": '"$HOST"'}) == [
        "--host",
        '"$HOST"',
        "--port",
        '"$PORT"',
        "--model-path",
        "'my model'",
        "--port",
    ]
    assert shell_args(["30000", "--port"], {"--port": "x"}) == ["30000", "--port"]  # the first arg follows nothing
    assert shell_args([], {}) == []


def test_deploy_defaults_lines():
    assert deploy_defaults({"HOST": "127.0.0.1", "GPUS": "0,1 2"}, export=("GPUS",)) == [
        "# Serve elsewhere without editing: HOST=... GPUS=... ./deploy-best.sh (defaults: what was measured)",
        "HOST=${HOST:-127.0.0.1}",
        "export GPUS=${GPUS:-'0,1 2'}",
    ]


def test_catalog_details():
    assert FlagCatalog.from_help(HELP).source == ""
    catalog = FlagCatalog.from_help(HELP)
    assert all(info.name == name for name, info in catalog.flags.items())
    # The head line is the first line of a block only: a later line naming a flag is help text.
    text = "  --alpha ALPHA\n                        like --beta BETA but\n  --gamma\n"
    assert set(FlagCatalog.from_help(text).flags) == {"alpha", "gamma"}
    many = FlagCatalog.from_help("".join(f"  --mem-{i} X\n" for i in range(6)))
    assert many.check("mem", 1) == "--mem is not a full flag name (it could match --mem-0, --mem-1, --mem-2, --mem-3)"


def test_only_an_options_first_line_names_flags():
    text = (
        "  --alpha ALPHA\n                        see also, --beta BETA\n                        more help\n  --gamma\n"
    )
    assert set(FlagCatalog.from_help(text).flags) == {"alpha", "gamma"}


def test_read_catalog_refuses_a_failing_help_even_with_a_port(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import sys\nprint('  --port PORT')\nsys.stderr.write('Warning: x\\nRuntimeError: broken\\n')\nsys.exit(1)\n"
    )
    with pytest.raises(FlagCatalogError, match=r"--help failed \(exit 1\): RuntimeError: broken$"):
        read_catalog([sys.executable, str(script)])
    script.write_text("import sys\nsys.exit(4)\n")
    with pytest.raises(FlagCatalogError, match=r"--help failed \(exit 4\): no output$"):
        read_catalog([sys.executable, str(script)])


def test_resolved_flags_read_what_sglang_0_5_17_decided_for_itself():
    """From the real /get_server_info of SGLang 0.5.17 on the H200 (bench_serving's record of it): the running
    cap and the decode CUDA-graph cap are unset at its top level; the startup line and cuda_graph_config have them."""
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data" / "bench_serving" / "h200-0.5.17.jsonl"
    info = json.loads(data.read_text().splitlines()[0])["server_info"]
    flags = resolved_flags(info, max_running_requests=4096)
    assert flags["max-running-requests"] == 4096 and flags["cuda-graph-max-bs-decode"] == 256
    assert flags["chunked-prefill-size"] == 8192 and flags["schedule-policy"] == "fcfs"
    assert flags["disable-radix-cache"] is False and flags["mem-fraction-static"] == info["mem_fraction_static"]
    assert "cuda-graph-config" not in flags  # not a flag value
    unknown = resolved_flags(info, max_running_requests=None)
    assert "max-running-requests" not in unknown  # nothing said is not a value
    given = resolved_flags({**info, "max_running_requests": 64, "cuda_graph_max_bs_decode": 128}, 4096)
    assert given["max-running-requests"] == 64 and given["cuda-graph-max-bs-decode"] == 128  # as passed
    older = resolved_flags({"chunked_prefill_size": 2048, "cuda_graph_max_bs": 160}, None)  # before cuda_graph_config
    assert older == {"chunked-prefill-size": 2048, "cuda-graph-max-bs": 160}
