"""The study's sampler, built from the run file's ``sampler:`` (make_sampler), and the starts that use what is known
before the first launch: a walk from SGLang's defaults one flag at a time, a quasi-random (Sobol) start, each
handing over to TPE, and the warm start's configs from an earlier study's surface. A replay with
``launcher.recorded_only`` wraps the sampler so that it proposes only the surface's recorded configs (RecordedRows).

The walk moves one flag from the best feasible trial, and after an infeasible trial draws every parameter at
random instead, so an infeasible start (SGLang's defaults failing) never holds it (DefaultsWalk)."""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, QMCSampler, RandomSampler, TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.config.run import RunConfig
from tuner.config.space import Param, SearchSpace, load_space
from tuner.errors import SetupError
from tuner.sglang.defaults import default_of
from tuner.sglang.flags import FlagValue
from tuner.trial.record import TrialRecord
from tuner.trial.surface import Surface, point_of

# How many of an earlier study's best configs a warm start measures first.
WARM_START_TOP = 3


def make_sampler(config: RunConfig, seed: int | None) -> BaseSampler:
    sampler = _sampler(config, seed)
    if not config.launcher.recorded_only:
        return sampler
    assert config.launcher.surface is not None  # LauncherConfig: recorded_only is replay-only, replay has one
    rows = RecordedRows(sampler, load_space(config.space), Surface.load(config.launcher.surface))
    sampled = config.trials - config.baseline - len(config.references)
    if len(rows.rows) < sampled:
        raise SetupError(
            f"launcher.recorded_only: trials: {config.trials} samples up to {sampled} configs, but "
            f"{config.launcher.surface} records {len(rows.rows)} that space {rows.space.path.name} can draw: "
            f"set trials: {config.trials - sampled + len(rows.rows)} or fewer"
        )
    return rows


def _sampler(config: RunConfig, seed: int | None) -> BaseSampler:
    s = config.sampler
    if s.name == "random":
        return RandomSampler(seed=seed)
    if s.name == "gp":
        # GPSampler imports torch only once its startup trials are done: say so before any launch.
        if importlib.util.find_spec("torch") is None:
            raise SetupError("sampler gp needs torch (pip install torch), or set sampler: {name: tpe}")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    # Our spaces are conditional (torch-compile-max-bs only with torch compile): multivariate grouped TPE
    # models the branches jointly instead of falling back to independent sampling. Failed launches and broken
    # SLOs reach it as each trial's constraints (system attribute), which Optuna 5's TPE reads without a
    # constraints_func: TPE is constraint-aware as it stands.
    tpe = TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, multivariate=True, group=True, constant_liar=True)
    if s.name == "sobol":
        return Handover(SobolStart(load_space(config.space), seed), tpe, s.n_startup_trials)
    if s.name == "defaults-walk":
        return Handover(DefaultsWalk(load_space(config.space), seed), tpe, s.n_startup_trials)
    return tpe


def _finished(study: Study) -> list[FrozenTrial]:
    return study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=False)


class Handover(BaseSampler):
    """``first`` while fewer than ``n`` trials have finished (the baseline included, as TPE counts its startup
    trials), then ``then``, which learns from every trial ``first`` chose."""

    def __init__(self, first: BaseSampler, then: BaseSampler, n: int):
        self.first, self.then, self.n = first, then, n

    def _now(self, study: Study) -> BaseSampler:
        return self.first if len(_finished(study)) < self.n else self.then

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._now(study).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._now(study).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._now(study).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._now(study).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.first.after_trial(study, trial, state, values)
        self.then.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.first.reseed_rng()
        self.then.reseed_rng()


class RecordedRows(BaseSampler):
    """``inner``'s proposal moved to the nearest recorded row of ``surface`` not tried yet, among the rows this
    space can draw (launcher.recorded_only): every sampled trial is a config the surface measured, answered by
    its own row, never by the surface model's blend of neighbours. A recorded sweep is a table of a few
    hundred configs in a space of millions: its replay otherwise answers nearly every trial from the model,
    which pulls a near-best neighbourhood toward its lower neighbours (benchmarks/SAMPLERS.md). "Nearest" is
    the surface model's own distance with its learned flag weights. The trials carry the row's params, so
    ``inner`` learns from what was measured. The baseline, references and warm-start configs are not sampled
    and are answered as in any replay."""

    def __init__(self, inner: BaseSampler, space: SearchSpace, surface: Surface):
        self.inner, self.space, self.surface = inner, space, surface
        # Each drawable recorded config as params, and beside it as the surface recorded its flags (what
        # Surface.nearest measures distances between).
        self.rows: list[dict[str, FlagValue]] = []
        self.recorded: list[dict[str, FlagValue]] = []
        for row in surface.rows:
            params = self.params_of(row.flags)
            if params is not None and params not in self.rows:
                self.rows.append(params)
                self.recorded.append(row.flags)
        if not self.rows:
            raise SetupError(
                f"launcher.recorded_only: no recorded row of {surface.header.source} is a config of space "
                f"{space.path.name} (its flags and values): replay without recorded_only, or with the surface's space"
            )
        self.planned: dict[int, dict[str, FlagValue]] = {}

    def params_of(self, flags: dict[str, FlagValue]) -> dict[str, FlagValue] | None:
        """A recorded config as this space's params (a switch the row left off is False), or None when the
        space cannot draw exactly that config (a value it does not offer, a flag it fixes otherwise or lacks)."""
        params: dict[str, FlagValue] = {}
        live = self.space.fixed.as_dict()
        for p in self.space.params:
            if all(c.holds(live) for c in p.when):
                value = flags.get(p.name, False if p.takes(False) else None)
                if value is None or not p.takes(value):
                    return None
                live[p.name] = params[p.name] = value
        same = point_of(self.space.flags_from_params(params).as_dict()) == point_of(flags)
        return params if same else None

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.planned.pop(trial.number, None)
        self.inner.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Optuna asks for the relative params before the first parameter of every trial: the whole proposal
        # (inner's relative params, the rest drawn independently) is made and moved here.
        proposal = dict(self.inner.sample_relative(study, trial, search_space))
        live = self.space.fixed.as_dict()
        for p in self.space.params:
            if all(c.holds(live) for c in p.when):
                if p.name not in proposal:
                    proposal[p.name] = self.inner.sample_independent(study, trial, p.name, p.distribution())
                live[p.name] = proposal[p.name]
        tried = [t.params for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        untried = [i for i, r in enumerate(self.rows) if r not in tried]
        if not untried:
            raise SetupError(
                f"launcher.recorded_only: all {len(self.rows)} recorded configs of {self.surface.header.source} "
                f"that space {self.space.path.name} can draw have been tried (with those predicted to fail): "
                "lower trials:"
            )
        flags = self.space.flags_from_params(proposal).as_dict()
        chosen = self.rows[untried[self.surface.nearest(flags, [self.recorded[i] for i in untried])]]
        self.planned[trial.number] = chosen
        return {k: v for k, v in chosen.items() if k in search_space}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.planned[trial.number][param_name]


class SobolStart(QMCSampler):
    """Scrambled Sobol points over the whole space. Optuna's QMCSampler takes its search space from the study's
    first trial, which for us is the baseline (no params): it would sample everything at random. Here the space
    is the space file's, conditional params included (a point's value for an inactive one is unused)."""

    def __init__(self, space: SearchSpace, seed: int | None):
        super().__init__(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
        self.space = {p.name: p.distribution() for p in space.params}

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.space)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        with warnings.catch_warnings():  # scipy: Sobol's balance needs 2^k points; a study stops where it stops
            warnings.simplefilter("ignore", UserWarning)
            return super().sample_relative(study, trial, search_space)


class DefaultsWalk(BaseSampler):
    """From SGLang's defaults, one flag per trial: each trial is the best feasible trial so far (the baseline's
    point while nothing beat it: ``start_point``, with what SGLang chose for itself in the baseline where it said)
    with one active parameter moved to another value, the parameters taken in a seeded order, round and round.
    Keeping what improved is the incumbent moving.

    The trial after an infeasible one (failed, predicted to fail, or broke a limit) is a seeded random draw of
    every parameter instead. One-flag moves from a point that fails can fail for ever: SGLang's defaults that
    crash until two flags move, or a start that is not the baseline's real config (a flag SGLang sizes itself,
    started at the space's middle: the public sweep's context length 10240, past the 8192 that ever ran). A
    random draw reaches any feasible config of the space with the same odds on every such trial, and a feasible
    trial hands back to the walk, from the best feasible trial (benchmarks/SAMPLERS.md measures the rule)."""

    def __init__(self, space: SearchSpace, seed: int | None):
        self.space = space
        self.start = start_point(space)
        self.random = RandomSampler(seed=seed)
        names = [p.name for p in space.params]
        self.order = [names[i] for i in self.random._rng.rng.permutation(len(names))]
        self.planned: dict[int, dict[str, FlagValue]] = {}

    def reseed_rng(self) -> None:
        self.random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if trial.number not in self.planned:
            self.planned[trial.number] = self.plan(study, trial)
        value = self.planned[trial.number].get(param_name)
        if value is None or not param_distribution._contains(param_distribution.to_internal_repr(value)):
            return self.random.sample_independent(study, trial, param_name, param_distribution)
        return value

    def plan(self, study: Study, trial: FrozenTrial) -> dict[str, FlagValue]:
        """The incumbent's point with one parameter moved; after an infeasible trial, nothing (every parameter
        drawn at random)."""
        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False)
        if done and not _feasible(max(done, key=lambda t: t.number)):
            return {}
        point = {**self.start, **self.settled(study)}
        best = incumbent(study)
        if best is not None:
            point.update({k: v for k, v in best.params.items() if k in point})
        active = self.active(point)
        if not active:
            return point
        param = active[trial.number % len(active)]
        dist = param.distribution()
        for _ in range(20):  # another value than the incumbent's (a space may offer one value only)
            value = self.random.sample_independent(study, trial, param.name, dist)
            if value != point[param.name]:
                break
        point[param.name] = value
        return point

    def settled(self, study: Study) -> dict[str, FlagValue]:
        """What SGLang chose for itself when the baseline ran (its /get_server_info: memory fraction, chunk size,
        CUDA-graph cap, attention backend), as the space's nearest values: SGLang's defaults on this GPU and
        model, where the start point has only the space's middle. Nothing before the baseline has run."""
        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False)
        base = next((r for r in map(TrialRecord.of, done) if r.is_baseline), None)
        if base is None:
            return {}
        chose = {f.name.replace("_", "-"): getattr(base.settled, f.name) for f in fields(base.settled)}
        return {p.name: _nearest(p, chose[p.name]) for p in self.space.params if chose.get(p.name) is not None}

    def active(self, point: dict[str, FlagValue]) -> list[Param]:
        """The parameters in walking order that this point passes to SGLang (their conditions hold)."""
        flags = self.space.fixed.as_dict()
        live = set()
        for p in self.space.params:
            if all(c.holds(flags) for c in p.when):
                flags[p.name] = point[p.name]
                live.add(p.name)
        by_name = {p.name: p for p in self.space.params}
        return [by_name[n] for n in self.order if n in live]


def incumbent(study: Study) -> FrozenTrial | None:
    """The best feasible finished trial by the first objective (the baseline included)."""
    sign = -1.0 if study.directions[0] == StudyDirection.MINIMIZE else 1.0
    done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False)
    return max(filter(_feasible, done), key=lambda t: sign * t.values[0], default=None)


def _feasible(t: FrozenTrial) -> bool:
    return bool(t.values) and all(c <= 0 for c in t.constraints.values())


def start_point(space: SearchSpace) -> dict[str, FlagValue]:
    """SGLang's defaults as a point of the space: each parameter's default where the space can draw it, else
    the space's nearest value; where SGLang sizes the flag itself at startup (no fixed default), the space's
    middle value."""
    return {p.name: _nearest(p, default_of(p.name, p.choices)) for p in space.params}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _nearest(p: Param, target: FlagValue | None) -> FlagValue:
    if target is not None and p.takes(target):
        return target
    wanted = _number(target)
    if p.choices:
        numbers = [_number(c) for c in p.choices]
        if wanted is not None and all(n is not None for n in numbers):
            w: float = wanted
            return min(zip(p.choices, numbers, strict=True), key=lambda cn: abs((cn[1] or 0.0) - w))[0]
        return p.choices[len(p.choices) // 2]
    low, high = p.bounds
    if wanted is None:
        wanted = math.sqrt(low * high) if p.log else (low + high) / 2
    x = min(max(wanted, low), high)
    step = p.step or (1 if p.is_int else None)
    if step:
        x = low + round((x - low) / step) * step
    return round(x) if p.is_int else round(x, 6)


def warm_start_params(path: str, space: SearchSpace) -> list[dict[str, FlagValue]]:
    """An earlier study's best feasible configs (its surface, ranked by its own objective), as params of this
    space: a flag this space does not tune, or a value it cannot draw, is left to the sampler."""
    surface = Surface.load(path)
    sign = -1.0 if surface.header.objective.metrics[0].endswith("_ms") else 1.0
    ranked = sorted(
        ((v, r) for r in surface.rows if r.ok and (v := surface.value(r)) is not None and math.isfinite(v)),
        key=lambda vr: -sign * vr[0],
    )
    out: list[dict[str, FlagValue]] = []
    for _, row in ranked:
        params = {}
        for p in space.params:
            value = row.flags.get(p.name, default_of(p.name, p.choices))
            if value is not None and p.takes(value):
                params[p.name] = value
        if params and params not in out:
            out.append(params)
        if len(out) == WARM_START_TOP:
            break
    return out
