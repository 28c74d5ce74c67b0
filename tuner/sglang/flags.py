"""SGLang launch flags: the one place a parameter set becomes a command line.

Names are SGLang's own CLI names without the leading dashes (``schedule-policy``), so the search space,
the trial records and deploy-best.sh all speak the vocabulary a SGLang user already knows.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

FlagValue = str | int | float | bool

# Flags every trial's command line gets from the run (model, launcher, port of its slot), never from a space or a
# reference: where a server runs, not how. Views leave them out, and a surface's points too.
TUNER_FLAGS = ("model-path", "model", "host", "port", "served-model-name")


@dataclass(frozen=True)
class ServerFlags:
    """An ordered set of SGLang flags. ``True`` is a bare switch; ``False`` and ``None`` leave the flag out."""

    values: tuple[tuple[str, FlagValue], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, FlagValue | None]) -> ServerFlags:
        return cls(tuple((k, v) for k, v in mapping.items() if v is not None))

    def merged(self, other: ServerFlags) -> ServerFlags:
        """``other`` wins on a name both hold; order is self's, then other's new names."""
        out = dict(self.values)
        out.update(other.values)
        return ServerFlags(tuple(out.items()))

    def as_dict(self) -> dict[str, FlagValue]:
        return dict(self.values)

    def argv(self) -> list[str]:
        args: list[str] = []
        for name, value in self.values:
            if value is False:
                continue
            args.append(f"--{name}")
            if value is not True:
                args.append(format_value(value))
        return args

    def shell(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv())

    def text(self, skip: Collection[str] = ()) -> str:
        """The flags as tables and notes show them (``--chunked-prefill-size 4096 --enable-x``): those the tuner
        sets itself (``TUNER_FLAGS``) and those in ``skip`` left out, switches bare, switches left off dropped.
        Empty for SGLang's defaults."""
        return " ".join(
            f"--{name}" if value is True else f"--{name} {format_value(value)}"
            for name, value in self.values
            if name not in TUNER_FLAGS and name not in skip and value is not False and value is not None
        )

    def numerics(self) -> list[str]:
        """The flags set here that change the model's answers (``NUMERICS_FLAGS``), as ``--name value``."""
        return [
            f"--{name}" if value is True else f"--{name} {format_value(value)}"
            for name, value in self.values
            if name in NUMERICS_FLAGS and value is not False and value is not None
        ]

    def numerics_warning(self) -> str | None:
        """One plain sentence for an exported config that sets such a flag (None when it sets none): a speed-up
        bought with different answers must never pass for a free one."""
        named = self.numerics()
        if not named:
            return None
        return (
            f"CHANGES THE MODEL'S ANSWERS, not only its speed: {', '.join(named)} "
            f"{'changes' if len(named) == 1 else 'change'} what the model computes. Check the quality of its "
            f"outputs (an accuracy eval against the unmodified model), not only its throughput, before deploying it."
        )


def resolved_flags(server_info: Mapping[str, Any], max_running_requests: int | None) -> dict[str, FlagValue]:
    """Each flag's value as SGLang settled it, by flag name, from /get_server_info (its ServerArgs). Two it
    leaves unset there and decides later: the running-request cap (its startup line's, ``max_running_requests``)
    and, in 0.5.17+, the decode CUDA-graph cap (``cuda_graph_config.decode.max_bs``)."""
    out: dict[str, FlagValue] = {
        k.replace("_", "-"): v for k, v in server_info.items() if isinstance(v, (str, int, float, bool))
    }
    if max_running_requests is not None and "max-running-requests" not in out:
        out["max-running-requests"] = max_running_requests
    graphs = server_info.get("cuda_graph_config")
    decode = graphs.get("decode") if isinstance(graphs, dict) else None
    if isinstance(decode, dict) and isinstance(decode.get("max_bs"), int) and "cuda-graph-max-bs-decode" not in out:
        out["cuda-graph-max-bs-decode"] = decode["max_bs"]
    return out


def one_per_line(args: list[str], prefix: str = "--") -> list[str]:
    """Options paired with their values, one per line as the seed's deploy scripts were written.

    ``args`` are already shell-quoted; an option starts with ``prefix`` (``-`` also pairs docker's ``-e K=V``).
    """
    out: list[str] = []
    for arg in args:
        if out and out[-1].startswith(prefix) and " " not in out[-1] and not arg.startswith(prefix):
            out[-1] += " " + arg
        else:
            out.append(arg)
    return out


def shell_args(args: list[str], after: Mapping[str, str]) -> list[str]:
    """``args`` shell-quoted, except that the value following each option named in ``after`` becomes that
    shell expression (``{"--port": '"$PORT"'}``): deploy-best.sh reads its host, port and GPUs from the
    environment, with the measured values as defaults."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(after[args[i - 1]] if i and args[i - 1] in after else shlex.quote(arg))
    return out


def deploy_defaults(defaults: Mapping[str, str], export: tuple[str, ...] = ()) -> list[str]:
    """``NAME=${NAME:-default}`` lines (``export`` for those the server reads itself), after a usage comment."""
    usage = " ".join(f"{name}=..." for name in defaults)
    lines = [f"# Serve elsewhere without editing: {usage} ./deploy-best.sh (defaults: what was measured)"]
    for name, value in defaults.items():
        lines.append(f"{'export ' if name in export else ''}{name}=${{{name}:-{shlex.quote(value)}}}")
    return lines


def format_value(value: FlagValue) -> str:
    if isinstance(value, float):
        # 0.8700000000000001 from a float step must read as the 0.87 a user would type.
        return repr(round(value, 6))
    return str(value)


# Flags that change what the model computes, not only how fast: a config tuned with them answers differently, so a
# space may tune or fix them only when it says so (``changes_numerics: true``), and every view names them.
NUMERICS_FLAGS = (
    "dtype",
    "quantization",
    "quantization-param-path",
    "kv-cache-dtype",
    "modelopt-quant",
    "torchao-config",
    "enable-fp32-lm-head",
    "fp8-gemm-backend",
)
