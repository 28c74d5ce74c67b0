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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from tuner.config.schema import Number, Scalar, Strict, loc_text, validated
from tuner.config.yamlfile import Loc, load_mapping
from tuner.errors import TunerError
from tuner.sglang.catalog import FlagCatalog
from tuner.sglang.flags import NUMERICS_FLAGS, TUNER_FLAGS, FlagValue, ServerFlags, format_value

if TYPE_CHECKING:
    import optuna


class SpaceError(TunerError, ValueError):
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

    @property
    def bounds(self) -> tuple[float | int, float | int]:
        """low and high of a range: a param without choices has both (ParamSpec refuses one without)."""
        assert self.low is not None and self.high is not None, f"{self.name}: a range without low and high"
        return self.low, self.high

    def values_to_check(self) -> list[FlagValue]:
        """The values to validate against SGLang's parser: every choice, or both ends of a range."""
        return list(self.choices) if self.choices else list(self.bounds)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution ``suggest`` samples from (what a study remembers of each parameter)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        low, high = self.bounds
        if self.is_int:
            return IntDistribution(int(low), int(high), step=int(self.step or 1), log=self.log)
        return FloatDistribution(float(low), float(high), step=self.step, log=self.log)

    def takes(self, value: Any) -> bool:
        """Whether the sampler could draw ``value`` here (a bool is no number: True == 1 in Python)."""
        if self.choices:
            return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in self.choices)
        low, high = self.bounds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            return False
        if self.is_int:
            return isinstance(value, int) and (value - int(low)) % int(self.step or 1) == 0
        if not self.step:
            return True
        steps = (value - low) / self.step
        return abs(steps - round(steps)) < 1e-6

    def offers(self) -> str:
        """What the space offers, for a message: its choices, or its range."""
        if self.choices:
            return "choices " + ", ".join(format_value(c) for c in self.choices)
        low, high = self.bounds
        return f"{format_value(low)}-{format_value(high)}" + (f" by {format_value(self.step)}" if self.step else "")

    def keyed_values(self) -> list[tuple[Loc, FlagValue]]:
        """Every value SGLang could be given, with where it is in the file: each choice, or low, high and step."""
        if self.choices:
            return [(("choices", i), c) for i, c in enumerate(self.choices)]
        return [
            ((key,), v) for key, v in (("low", self.low), ("high", self.high), ("step", self.step)) if v is not None
        ]

    def suggest(self, trial: optuna.Trial) -> FlagValue:
        if self.choices:
            value = trial.suggest_categorical(self.name, list(self.choices))
            assert value is not None  # one of the choices, each a FlagValue (optuna's choices may also be None)
            return value
        low, high = self.bounds
        if self.is_int:
            return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1), log=self.log)
        # A stepped float comes back as 0.9299999999999999: record the 0.93 that SGLang is given.
        return round(trial.suggest_float(self.name, float(low), float(high), step=self.step, log=self.log), 6)


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    description: str
    fixed: ServerFlags
    params: tuple[Param, ...]
    gpus_per_trial: str | None = None
    lines: Mapping[Loc, int] = field(default_factory=dict, compare=False, repr=False)  # key path -> line
    changes_numerics: bool = False  # the space tunes or fixes a flag of NUMERICS_FLAGS, on purpose

    def numerics_flags(self) -> list[str]:
        """The flags of this space that change the model's answers (views name them beside every result)."""
        names = [*self.fixed.as_dict(), *(p.name for p in self.params)]
        return [n for n in names if n in NUMERICS_FLAGS]

    @property
    def name(self) -> str:
        return self.path.stem

    def sample(self, trial: optuna.Trial) -> ServerFlags:
        """Sample this space into flags: fixed flags first, then each parameter whose conditions hold."""
        flags = self.fixed.as_dict()
        for param in self.params:
            if all(c.holds(flags) for c in param.when):
                flags[param.name] = param.suggest(trial)
        return ServerFlags(tuple(flags.items()))

    def unreachable(self, resolved: Mapping[str, FlagValue]) -> list[str]:
        """The parameters whose value SGLang chose for itself (``resolved``: flag name -> value, as trial 0 ran)
        the space cannot draw: there, no sampled config can be what the defaults ran, only other values."""
        flags = {**self.fixed.as_dict(), **{p.name: resolved[p.name] for p in self.params if p.name in resolved}}
        return [
            f"{p.name}: SGLang chose {format_value(resolved[p.name])}, the space offers {p.offers()}"
            for p in self.params
            if resolved.get(p.name) is not None
            and all(c.holds(flags) for c in p.when)
            and not p.takes(resolved[p.name])
        ]

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
        """Refuse flag names, types and values the SGLang that will run does not accept, before any launch."""
        problems = []
        for name, value in self.fixed.values:
            if problem := catalog.check(name, value):
                problems.append(self._at(("fixed", name), problem))
        for param in self.params:
            for key, value in param.keyed_values():
                if key[0] == "step" and catalog.value_type(param.name) != "int":
                    continue  # a float step of a float flag is fine; other kinds are refused by low/high
                if problem := catalog.check(param.name, value):
                    problems.append(self._at(("params", param.name, *key), problem))
                    break
        if problems:
            raise SpaceError("; ".join(problems))

    def _at(self, loc: Loc, problem: str) -> str:
        line = next((self.lines[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in self.lines), None)
        return f"{self.path}{f':{line}' if line else ''}: {loc_text(loc)}: {problem}"

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


def _flag_name(name: str) -> str:
    if name.startswith("-") or "_" in name or name != name.lower() or " " in name:
        hint = name.lstrip("-").replace("_", "-").lower()
        raise ValueError(f"write flags as SGLang spells them without dashes: {hint!r}, not {name!r}")
    if name in TUNER_FLAGS:
        raise ValueError(
            f"--{name} is set by the tuner itself (from model, launcher.host, launcher.port and the "
            f"trial's GPUs): it cannot be fixed or tuned in a search space"
        )
    return name


FlagName = Annotated[str, AfterValidator(_flag_name)]
# ``when: {enable-torch-compile: true}`` or a list of values any of which will do.
WhenValues = Annotated[
    list[Scalar],
    BeforeValidator(lambda v: v if isinstance(v, list) else [v]),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
            ]
        }
    ),
]


class ParamSpec(Strict):
    """One tuned flag: ``{choices: [...]}`` or ``{low, high[, step][, log]}``, optionally ``when`` others hold."""

    choices: Annotated[list[Scalar], Field(min_length=1)] | None = None
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    log: bool = False
    when: dict[str, WhenValues] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        if self.choices is not None:
            if {"low", "high", "step", "log"} & self.model_fields_set:
                raise ValueError("give either choices or low/high, not both")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError("choices: a value is there twice")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        low, high, step = self.low, self.high, self.step
        if low >= high:
            raise ValueError(f"empty range: low ({low}) must be below high ({high})")
        if step is not None and step <= 0:
            raise ValueError(f"step: must be positive, got {step}")
        if step is not None and step > high - low:
            raise ValueError(f"step: {step} is larger than the range {low}..{high}: only low could ever be tried")
        if self.log and (low <= 0 or (step is not None and step != 1)):
            raise ValueError("log scale needs low > 0 and no step")
        return self


class SpaceFile(Strict):
    """A search-space file as written (schemas/space.schema.json is generated from this)."""

    description: str = ""
    fixed: Annotated[dict[FlagName, Scalar], BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=dict
    )
    params: Annotated[dict[FlagName, ParamSpec], Field(min_length=1)]
    gpus_per_trial: str | None = None
    # The opt-in for flags that change the model's answers (KV-cache dtype, quantization): see NUMERICS_FLAGS.
    changes_numerics: bool = False

    @model_validator(mode="after")
    def _references(self) -> SpaceFile:
        if not self.changes_numerics:
            for where, names in (("fixed", self.fixed), ("params", self.params)):
                for name in names:
                    if name in NUMERICS_FLAGS:
                        raise ValueError(
                            f"{where}.{name}: --{name} changes the model's numerics (its answers, not only its "
                            f"speed): set changes_numerics: true in the space to tune it on purpose"
                        )
        known = set(self.fixed)
        for name, spec in self.params.items():
            if name in self.fixed:
                raise ValueError(f"params.{name}: both fixed and a parameter")
            for flag in spec.when:
                if flag not in known:
                    raise ValueError(
                        f"params.{name}.when: 'when' names {flag!r}, which is neither fixed nor a parameter above it"
                    )
            known.add(name)
        if self.gpus_per_trial is not None:
            try:
                _eval_gpus(self.gpus_per_trial, dict.fromkeys(known, 1))
            except SpaceError as exc:
                raise ValueError(str(exc)) from None
        return self


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    doc = load_mapping(
        path,
        SpaceError,
        "search-space file",
        "a search space is a mapping with 'fixed' and 'params'",
        directory_hint="see search_spaces/ for examples",
        missing_hint="see search_spaces/ for examples",
        example="see search_spaces/ for examples",
    )
    spec = validated(SpaceFile, doc.data, doc, SpaceError)
    params = tuple(
        Param(
            name,
            doc.line(("params", name)) or 0,
            choices=tuple(p.choices or ()),
            low=p.low,
            high=p.high,
            step=p.step,
            log=p.log,
            when=tuple(Condition(flag, tuple(values)) for flag, values in p.when.items()),
        )
        for name, p in spec.params.items()
    )
    return SearchSpace(
        path,
        spec.description,
        ServerFlags(tuple(spec.fixed.items())),
        params,
        spec.gpus_per_trial,
        lines=doc.lines,
        changes_numerics=spec.changes_numerics,
    )


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
