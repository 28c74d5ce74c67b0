"""Search spaces: search_spaces/*.yaml -> typed parameters that an Optuna trial samples into ServerFlags.

A space file::

    description: the seed's RTX 5090 set
    fixed:                      # flags every trial gets, the baseline (trial 0) included
      attention-backend: triton
      disable-cuda-graph: true
    params:                     # sampled in file order
      schedule-policy: {choices: [fcfs, lpm, lof]}
      enable-torch-compile: {choices: [false, true]}
      torch-compile-max-bs: {low: 1, high: 32, log: true, when: {enable-torch-compile: true}}
      mem-fraction-static: {low: 0.70, high: 0.95, step: 0.01}
      tp-size: {choices: [1, 2]}
    gpus_per_trial: tp-size * dp-size   # optional: GPUs a trial needs, from its flags

``when`` makes a parameter conditional: it is only sampled (and only passed to SGLang) when every named flag,
fixed or sampled earlier, has the given value (or one of a list of values). Conditional parameters are never
sampled where they would have no effect, so the sampler does not waste trials learning that they don't matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.flags import FlagCatalog, FlagValue, ServerFlags

if TYPE_CHECKING:
    import optuna

SPACE_KEYS = {"description", "fixed", "params", "gpus_per_trial"}
PARAM_KEYS = {"choices", "low", "high", "step", "log", "when"}


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Condition:
    flag: str
    values: tuple[FlagValue, ...]

    def holds(self, flags: dict[str, FlagValue]) -> bool:
        return flags.get(self.flag) in self.values


@dataclass(frozen=True)
class Param:
    name: str
    line: int
    choices: tuple[FlagValue, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    when: tuple[Condition, ...] = ()

    @property
    def is_int(self) -> bool:
        return not self.choices and all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    def values_to_check(self) -> list[FlagValue]:
        """The values to validate against SGLang's parser: every choice, or both ends of a range."""
        return list(self.choices) if self.choices else [self.low, self.high]  # type: ignore[list-item]

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The Optuna distribution ``suggest`` samples from (what a study remembers of each parameter)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))  # type: ignore[arg-type]
        if self.is_int:
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), step=self.step, log=self.log)

    def suggest(self, trial: "optuna.Trial") -> FlagValue:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))  # type: ignore[arg-type]
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        # A stepped float comes back as 0.9299999999999999: record the 0.93 that SGLang is given.
        return round(trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log), 6)


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    description: str
    fixed: ServerFlags
    params: tuple[Param, ...]
    gpus_per_trial: str | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    def sample(self, trial: "optuna.Trial") -> ServerFlags:
        """Sample this space into flags: fixed flags first, then each parameter whose conditions hold."""
        flags = self.fixed.as_dict()
        for param in self.params:
            if all(c.holds(flags) for c in param.when):
                flags[param.name] = param.suggest(trial)
        return ServerFlags(tuple(flags.items()))

    def flags_from_params(self, params: dict[str, Any]) -> ServerFlags:
        """Rebuild a trial's flags from its stored Optuna params (the baseline has none: just the fixed flags)."""
        flags = self.fixed.as_dict()
        for param in self.params:
            if param.name in params and all(c.holds(flags) for c in param.when):
                flags[param.name] = params[param.name]
        return ServerFlags(tuple(flags.items()))

    def gpus_needed(self, flags: ServerFlags) -> int:
        """GPUs one trial takes: ``gpus_per_trial`` when the space has one, else what SGLang will use.

        SGLang needs tp x dp (x pp) GPUs (dp replicas of tp GPUs each; with --enable-dp-attention dp runs inside
        tp and adds none), and exactly that many must be visible to it.
        """
        d = flags.as_dict()
        if self.gpus_per_trial:
            return _eval_gpus(self.gpus_per_trial, d)

        def size(*names: str) -> int:
            for name in names:
                if d.get(name) is not None:
                    return max(1, int(d[name]))
            return 1

        dp = 1 if d.get("enable-dp-attention") else size("dp-size", "data-parallel-size", "dp")
        return size("tp-size", "tensor-parallel-size", "tp") * dp * size("pp-size", "pipeline-parallel-size", "pp")

    def most_gpus(self) -> int:
        """An upper bound of gpus_needed over the space: every parameter at its largest value."""
        flags = self.fixed.as_dict()
        for p in self.params:
            values = [v for v in p.values_to_check() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if values:
                flags[p.name] = max(values)
        try:
            return self.gpus_needed(ServerFlags(tuple(flags.items())))
        except (TypeError, ValueError, SpaceError):
            return 1

    def validate(self, catalog: FlagCatalog) -> None:
        """Refuse flag names and values the SGLang that will run does not accept, before any launch."""
        problems = []
        for name, value in self.fixed.values:
            if problem := catalog.check(name, value):
                problems.append(f"{self.path}: fixed: {problem}")
        for param in self.params:
            for value in param.values_to_check():
                if problem := catalog.check(param.name, value):
                    problems.append(f"{self.path}:{param.line}: {problem}")
                    break
        if problems:
            raise SpaceError("; ".join(problems))

    def no_op_warnings(self) -> list[str]:
        """Parameters SGLang parses but that cannot change anything, so trials spent on them are wasted."""
        out = []
        names = {p.name for p in self.params}
        fixed = self.fixed.as_dict()
        if "num-continuous-decode-steps" in names:
            out.append(
                "--num-continuous-decode-steps is parsed but never read by SGLang 0.5.x (PR #23131 was closed): "
                "expect no effect from it"
            )
        if fixed.get("disable-radix-cache") is True and "schedule-policy" in names:
            out.append("--schedule-policy lpm/dfs-weight fall back to fcfs when --disable-radix-cache is set")
        for param in self.params:
            if param.name == "schedule-policy" and "priority" in param.choices:
                out.append(
                    "--schedule-policy priority is accepted by argparse but crashes SGLang's scheduler "
                    "(use --enable-priority-scheduling): those trials will fail"
                )
        return out


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file (see search_spaces/ for examples)")
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(root, yaml.MappingNode):
        raise SpaceError(f"{path}: a search space is a mapping with 'fixed' and 'params'")
    top = _mapping(path, root)
    for key, (_, line) in top.items():
        if key not in SPACE_KEYS:
            raise SpaceError(f"{path}:{line}: unknown key {key!r} (expected one of {', '.join(sorted(SPACE_KEYS))})")

    fixed: dict[str, FlagValue] = {}
    if "fixed" in top:
        node, line = top["fixed"]
        for name, (value_node, vline) in _mapping(path, node, line).items():
            value = yaml.safe_load(yaml.serialize(value_node))
            _check_flag_name(path, vline, name)
            if not isinstance(value, (str, int, float, bool)):
                raise SpaceError(f"{path}:{vline}: fixed flag {name!r} needs a scalar value, got {value!r}")
            fixed[name] = value

    params: list[Param] = []
    known = set(fixed)
    if "params" not in top:
        raise SpaceError(f"{path}: no 'params': a search space needs at least one parameter to tune")
    node, line = top["params"]
    for name, (pnode, pline) in _mapping(path, node, line).items():
        _check_flag_name(path, pline, name)
        if name in fixed:
            raise SpaceError(f"{path}:{pline}: {name!r} is both fixed and a parameter")
        spec = yaml.safe_load(yaml.serialize(pnode))
        params.append(_param(path, pline, name, spec, known))
        known.add(name)
    if not params:
        raise SpaceError(f"{path}:{line}: 'params' is empty: a search space needs at least one parameter")

    gpus = None
    if "gpus_per_trial" in top:
        gnode, gline = top["gpus_per_trial"]
        gpus = str(yaml.safe_load(yaml.serialize(gnode)))
        try:
            _eval_gpus(gpus, {p.name: 1 for p in params} | {k: 1 for k in fixed})
        except SpaceError as exc:
            raise SpaceError(f"{path}:{gline}: {exc}") from None

    description = ""
    if "description" in top:
        description = str(yaml.safe_load(yaml.serialize(top["description"][0])))
    return SearchSpace(path, description, ServerFlags(tuple(fixed.items())), tuple(params), gpus)


def _mapping(path: Path, node: yaml.Node, line: int = 1) -> dict[str, tuple[yaml.Node, int]]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise SpaceError(f"{path}:{node.start_mark.line + 1}: expected a mapping of flag names")
    out = {}
    for key, value in node.value:
        kline = key.start_mark.line + 1
        if key.value in out:
            raise SpaceError(f"{path}:{kline}: {key.value!r} appears twice")
        out[str(key.value)] = (value, kline)
    return out


def _check_flag_name(path: Path, line: int, name: str) -> None:
    if name.startswith("-") or "_" in name or name != name.lower() or " " in name:
        hint = name.lstrip("-").replace("_", "-").lower()
        raise SpaceError(f"{path}:{line}: write flags as SGLang spells them without dashes: {hint!r}, not {name!r}")


def _param(path: Path, line: int, name: str, spec: Any, known: set[str]) -> Param:
    where = f"{path}:{line}: {name}"
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected {{choices: [...]}} or {{low: ..., high: ...}}, got {spec!r}")
    unknown = set(spec) - PARAM_KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected {', '.join(sorted(PARAM_KEYS))})")
    when = []
    if not isinstance(spec.get("when") or {}, dict):
        raise SpaceError(f"{where}: 'when' must map flag names to values, e.g. when: {{enable-torch-compile: true}}")
    if not isinstance(spec.get("log", False), bool):
        raise SpaceError(f"{where}: log must be true or false, got {spec['log']!r}")
    for flag, values in (spec.get("when") or {}).items():
        if flag not in known:
            raise SpaceError(f"{where}: 'when' names {flag!r}, which is neither fixed nor a parameter above it")
        values = tuple(values) if isinstance(values, list) else (values,)
        when.append(Condition(flag, values))
    if "choices" in spec:
        if {"low", "high", "step", "log"} & set(spec):
            raise SpaceError(f"{where}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: choices must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"{where}: choices repeat a value")
        if not all(isinstance(c, (str, int, float, bool)) for c in choices):
            raise SpaceError(f"{where}: choices must be strings, numbers or true/false")
        return Param(name, line, choices=tuple(choices), when=tuple(when))
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a range needs both low and high (or give choices)")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    for label, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise SpaceError(f"{where}: {label} must be a number, got {v!r}")
    if low >= high:
        raise SpaceError(f"{where}: empty range: low ({low}) must be below high ({high})")
    if step is not None and step <= 0:
        raise SpaceError(f"{where}: step must be positive, got {step}")
    if log and (low <= 0 or step is not None and not isinstance(step, int) or isinstance(step, int) and step != 1):
        raise SpaceError(f"{where}: log scale needs low > 0 and no step")
    return Param(name, line, low=low, high=high, step=step, log=log, when=tuple(when))


def _eval_gpus(expr: str, flags: dict[str, FlagValue]) -> int:
    """``tp-size * dp-size``: a product of flag names and integers, nothing else is evaluated."""
    total = 1
    for term in expr.split("*"):
        term = term.strip()
        if term.isdigit():
            total *= int(term)
        elif term in flags or term.replace("_", "-") in flags:
            total *= int(flags.get(term, flags.get(term.replace("_", "-"), 1)))
        else:
            # A flag absent from the trial means SGLang's default for it, which is 1 for tp/dp/pp.
            if not term or not all(c.isalnum() or c in "-_" for c in term):
                raise SpaceError(f"gpus_per_trial: {expr!r} must be flag names and integers joined by '*'")
    return total
