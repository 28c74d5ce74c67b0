"""Sampler ideas for issue 24 not (yet) in the tuner, measured like sampler_efficiency.py's settings, and how
much of each surface lies within 5% of its best (what any sampler is up against in 12 trials).

The ideas, each a sampler built from (seed, search space) and run through sampler_efficiency.run_study (the
tuner's space sampling, replay runner, objective, constraints and records):

- ``+cliff``: a proposal filter. A one-flag region where every told trial failed (at least two of them, beyond
  the last value that ran: ``>=`` the lowest failing value above every feasible one, ``<=`` likewise below, or a
  choice that only ever failed) is re-drawn instead of launched, up to ``CLIFF_TRIES`` times. It never rejects a
  value that ran, and learns only from launched trials: a re-drawn proposal is neither launched nor told.
- ``then local@n``: after ``n`` finished trials, each trial is the best so far with one flag moved (the tuner's
  DefaultsWalk, whose incumbent replaces its start once a trial beats it).
- ``ei64``: TPE with 64 candidates per proposal instead of 24 (more exploitation of its model).
- ``sobol4 TPE then local@9``: Sobol for 4 trials, TPE to 9, local moves after.
- ``TPE-6``, ``TPE-10``, ``ei128``, ``gamma 25%`` / ``gamma 1`` (TPE's good set: the best quarter / the best
  trial), ``endpoints``, ``prior 0.5``, ``univariate``: TPE's own options, each alone, from the default's.
- ``... on recorded rows``: the tuner's ``launcher.recorded_only`` (tuner/search/samplers.py RecordedRows): each
  proposal moved to the nearest recorded row not yet tried, so every trial is answered by its own row.

The mass: ``--mass N`` draws N configs from the space at random (Optuna's RandomSampler through the space, as
random search draws them) and asks the surface for each (its recorded row, else its 3 nearest rows' blend,
tuner/trial/surface.py); p = the share of draws within 5% of the best recorded value. Random search with 12
launches reaches 95% with probability 1 - (1 - p)^12; an oracle that never launched a failing config, drawing at
random among the rest, 1 - (1 - p / feasible)^12. The recorded rows' own share is printed beside it.

    python benchmarks/sampler_prototypes.py benchmarks/surfaces/standin-default.json --seeds 40 --trials 30
    python benchmarks/sampler_prototypes.py x.json --mass 10000 --only TPE-8 --only 'TPE-8+cliff'
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from sampler_efficiency import ROOT, Setting, _surface, paired, run_study, summarise

from tuner.config.space import SearchSpace
from tuner.search.samplers import DefaultsWalk, Handover, RecordedRows, SobolStart
from tuner.sglang.flags import FlagValue

# Re-draws of a proposal beyond a cliff before launching it anyway (a sampler must propose something).
CLIFF_TRIES = 50
HORIZONS = (12, 16, 20, 25, 30)


class CliffFilter(BaseSampler):
    """``inner``'s proposals, re-drawn while one lies beyond a one-flag cliff of the told trials (module doc)."""

    def __init__(self, inner: BaseSampler, space: SearchSpace):
        self.inner, self.space = inner, space
        self.planned: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def cliffs(self, study: Study) -> list[tuple[str, str, FlagValue]]:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params]
        bad = [t for t in done if any(c > 0 for c in t.system_attrs.get("constraints", ()))]
        ok = [t for t in done if t not in bad]
        out: list[tuple[str, str, FlagValue]] = []
        if not ok or len(bad) < 2:
            return out
        for p in self.space.params:
            ran = [t.params[p.name] for t in ok if p.name in t.params]
            failed = [t.params[p.name] for t in bad if p.name in t.params]
            if not ran:
                continue
            if p.choices:
                out += [(p.name, "==", c) for c in set(failed) - set(ran) if failed.count(c) >= 2]
                continue
            above = sorted(v for v in failed if v > max(ran))
            below = sorted(v for v in failed if v < min(ran))
            if len(above) >= 2:
                out.append((p.name, ">=", above[0]))
            if len(below) >= 2:
                out.append((p.name, "<=", below[-1]))
        return out

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        cliffs = self.cliffs(study)
        for _ in range(CLIFF_TRIES):
            relative = self.inner.sample_relative(study, trial, search_space)
            params = dict(relative)
            for p in self.space.params:
                if p.name not in params:
                    params[p.name] = self.inner.sample_independent(study, trial, p.name, p.distribution())
            live = self.live(params)
            if not any(
                n in live and (live[n] == x if op == "==" else live[n] >= x if op == ">=" else live[n] <= x)
                for n, op, x in cliffs
            ):
                break
        self.planned[trial.number] = params
        return relative

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        value = self.planned.get(trial.number, {}).get(param_name)
        if value is None or not param_distribution._contains(param_distribution.to_internal_repr(value)):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)
        return value

    def live(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params this proposal passes to SGLang (their conditions hold)."""
        flags = self.space.fixed.as_dict()
        for p in self.space.params:
            if all(c.holds(flags) for c in p.when):
                flags[p.name] = params[p.name]
        return {p.name: flags[p.name] for p in self.space.params if p.name in flags}


def _tpe(seed: int, n: int, **options: Any) -> TPESampler:
    return TPESampler(seed=seed, n_startup_trials=n, multivariate=True, group=True, constant_liar=True, **options)


# Module-level so worker processes can unpickle them.
def tpe8(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8)


def tpe4(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 4)


def random_(seed: int, space: SearchSpace) -> BaseSampler:
    return RandomSampler(seed=seed)


def random_cliff(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(RandomSampler(seed=seed), space)


def tpe8_cliff(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(_tpe(seed, 8), space)


def tpe4_cliff(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(_tpe(seed, 4), space)


def tpe4_ei64(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 4, n_ei_candidates=64)


def tpe4_cliff_ei64(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(_tpe(seed, 4, n_ei_candidates=64), space)


def tpe4_local8(seed: int, space: SearchSpace) -> BaseSampler:
    return Handover(_tpe(seed, 4), DefaultsWalk(space, seed), 8)


def tpe4_cliff_local8(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(Handover(_tpe(seed, 4), DefaultsWalk(space, seed), 8), space)


def tpe8_local8(seed: int, space: SearchSpace) -> BaseSampler:
    return Handover(_tpe(seed, 8), DefaultsWalk(space, seed), 8)


def tpe8_cliff_local8(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(Handover(_tpe(seed, 8), DefaultsWalk(space, seed), 8), space)


def tpe4_cliff_local10(seed: int, space: SearchSpace) -> BaseSampler:
    return CliffFilter(Handover(_tpe(seed, 4), DefaultsWalk(space, seed), 10), space)


def sobol4_tpe_local9(seed: int, space: SearchSpace) -> BaseSampler:
    return Handover(Handover(SobolStart(space, seed), _tpe(seed, 4), 4), DefaultsWalk(space, seed), 9)


def _quarter(n: int) -> int:
    """TPE's "good" trials: the best quarter (Optuna's default is the best tenth, at most 25)."""
    return min(math.ceil(0.25 * n), 25)


def _one(n: int) -> int:
    return 1


def tpe6(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 6)


def tpe10(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 10)


def tpe8_ei128(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8, n_ei_candidates=128)


def tpe8_gamma_quarter(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8, gamma=_quarter)


def tpe8_gamma_one(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8, gamma=_one)


def tpe8_endpoints(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8, consider_endpoints=True)


def tpe8_prior_half(seed: int, space: SearchSpace) -> BaseSampler:
    return _tpe(seed, 8, prior_weight=0.5)


def tpe8_univariate(seed: int, space: SearchSpace) -> BaseSampler:
    return TPESampler(seed=seed, n_startup_trials=8, multivariate=False, constant_liar=True)


def tpe8_rows(surface_path: str, seed: int, space: SearchSpace) -> BaseSampler:
    return RecordedRows(_tpe(seed, 8), space, _surface(surface_path))


def tpe4_rows(surface_path: str, seed: int, space: SearchSpace) -> BaseSampler:
    return RecordedRows(_tpe(seed, 4), space, _surface(surface_path))


def random_rows(surface_path: str, seed: int, space: SearchSpace) -> BaseSampler:
    return RecordedRows(RandomSampler(seed=seed), space, _surface(surface_path))


# launcher.recorded_only (tuner/search/samplers.py RecordedRows): every trial a recorded row of the surface.
# Built per surface (they need its rows): label -> factory(surface path, seed, space).
ON_ROWS = {
    "TPE-8 on recorded rows": tpe8_rows,
    "TPE-4 on recorded rows": tpe4_rows,
    "random on recorded rows": random_rows,
}

PROTOTYPES = {
    "TPE-8": tpe8,
    "TPE-4": tpe4,
    "random": random_,
    "random+cliff": random_cliff,
    "TPE-8+cliff": tpe8_cliff,
    "TPE-4+cliff": tpe4_cliff,
    "TPE-4 ei64": tpe4_ei64,
    "TPE-4+cliff ei64": tpe4_cliff_ei64,
    "TPE-4 then local@8": tpe4_local8,
    "TPE-4+cliff then local@8": tpe4_cliff_local8,
    "TPE-4+cliff then local@10": tpe4_cliff_local10,
    "TPE-8 then local@8": tpe8_local8,
    "TPE-8+cliff then local@8": tpe8_cliff_local8,
    "sobol4 TPE then local@9": sobol4_tpe_local9,
    "TPE-6": tpe6,
    "TPE-10": tpe10,
    "TPE-8 ei128": tpe8_ei128,
    "TPE-8 gamma 25%": tpe8_gamma_quarter,
    "TPE-8 gamma 1": tpe8_gamma_one,
    "TPE-8 endpoints": tpe8_endpoints,
    "TPE-8 prior 0.5": tpe8_prior_half,
    "TPE-8 univariate": tpe8_univariate,
}


def mass(path: str, draws: int) -> str:
    """The share of random draws from the space within 5% of the surface's best (module doc)."""
    from tuner.config.space import load_space
    from tuner.trial.surface import Surface

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surface = Surface.load(path)
    h = surface.header
    space = load_space(h.space)
    best, metric = surface.best(), h.objective.metrics[0]
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    near = failed = 0
    for _ in range(draws):
        trial = study.ask()
        answer = surface.answer(space.sample(trial).as_dict())
        study.tell(trial, 0.0)
        if answer.failure_class is not None:
            failed += 1
            continue
        value = next((getattr(lv, metric) for lv in answer.levels if lv.concurrency == h.objective.at_concurrency), 0)
        near += value >= 0.95 * best
    p, feasible = near / draws, 1 - failed / draws
    ran = [v for r in surface.rows if r.ok and (v := surface.value(r)) is not None]
    return (
        f"{path}: {draws} random draws, {100 * (1 - feasible):.1f}% fail, {100 * p:.2f}% ± "
        f"{100 * math.sqrt(p * (1 - p) / draws):.2f} within 5% of the best ({100 * p / feasible:.2f}% of those "
        f"that run); random search reaches 95% within 12 launches with p = {1 - (1 - p) ** 12:.3f}, a "
        f"feasibility oracle drawing at random {1 - (1 - p / feasible) ** 12:.3f}, 80% of seeds needs "
        f"p >= {100 * (1 - 0.2 ** (1 / 12)):.1f}% per launch. Recorded rows within 5%: "
        f"{sum(v >= 0.95 * best for v in ran)} of {len(ran)} that ran ({len(surface.rows)} rows)."
    )


def launches(a: list[list[tuple]], b: list[list[tuple]]) -> str:
    """``b``'s failed launches in the first 12 trials against ``a``'s, seed for seed (Wilcoxon signed-rank)."""
    from scipy.stats import wilcoxon

    diffs = [sum(t[1] for t in y[:12]) - sum(t[1] for t in x[:12]) for x, y in zip(a, b, strict=True)]
    p = wilcoxon(diffs).pvalue if any(diffs) else 1.0
    return f"{statistics.fmean(diffs):+.2f} failed launches (Wilcoxon p={p:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("surfaces", nargs="+")
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--only", action="append", default=[], help="prototypes by label (repeatable; first: reference)")
    ap.add_argument("--mass", type=int, default=0, help="random draws for the surface's near-best mass (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.chdir(ROOT)
    from tuner.trial.surface import Surface

    labels = args.only or [*PROTOTYPES, *ON_ROWS]
    for path in args.surfaces:
        t0 = time.monotonic()
        surface = Surface.load(path)
        baseline = any(r.baseline for r in surface.rows)
        factories = {**PROTOTYPES, **{k: functools.partial(f, path) for k, f in ON_ROWS.items()}}
        settings = [Setting(label, "tpe", 8, baseline, factory=factories[label]) for label in labels]
        with ProcessPoolExecutor(args.workers) as pool:
            jobs = {
                s: [pool.submit(run_study, path, surface.header.space, s, n, args.trials) for n in range(args.seeds)]
                for s in settings
            }
            results = {s: [f.result() for f in fs] for s, fs in jobs.items()}
        by_label = {s.label: s for s in settings}
        best = surface.best()
        maximize = not surface.header.objective.metrics[0].endswith("_ms")
        rows = {s.label: summarise(runs, best, maximize) for s, runs in results.items()}
        horizons = [k for k in HORIZONS if k <= args.trials]
        facts = surface.header.model_facts
        known = f", context length {facts.context_len} known before launch (the header's)" if facts else ""
        print(f"\n{path}, {args.seeds} seeds, {args.trials} launches{', baseline first' if baseline else ''}{known}:\n")
        print(
            "| setting | @12 | seeds >= 95% by 12 (± s.e.) | failed launches in 12 | predicted (free) by then | "
            + " | ".join(f"by {k}" for k in horizons)
            + f" | failed in {args.trials} | launches answered by a recorded row | "
            f"vs {labels[0]}, paired by seed: share, fraction at 12 | vs random (on recorded rows for those), "
            "paired: failed launches in 12 |"
        )
        print("|---|---:|---:|---:|---:|" + "---:|" * len(horizons) + "---:|---:|---|---|")
        for s, runs in results.items():
            r = rows[s.label]
            curves = [[max((v or 0.0) / best for v, *_ in run[: i + 1]) for i in range(len(run))] for run in runs]
            by = " | ".join(f"{100 * statistics.fmean(c[k - 1] >= 0.95 for c in curves):.0f}%" for k in horizons)
            failed = statistics.fmean(sum(t[1] for t in run) for run in runs)
            free = statistics.fmean(sum(t[4] for t in run[:12]) for run in runs)
            recorded = statistics.fmean(t[3] for run in runs for t in run)
            vs = paired(rows[labels[0]], r) if s != settings[0] else ""
            # A setting on recorded rows is compared with random search on recorded rows (where both ran).
            random = by_label.get("random on recorded rows" if s.label.endswith(" on recorded rows") else "random")
            rand = launches(results[random], runs) if random is not None and s != random else ""
            print(
                f"| {s.label} | {r['at12']:.3f} | {100 * r['share95']:.0f}% ± {100 * r['se95']:.0f} | "
                f"{r['failures12']:.2f} | {free:.1f} | {by} | {failed:.2f} | {100 * recorded:.1f}% | {vs} | {rand} |"
            )
        print(f"\n({time.monotonic() - t0:.0f} s)")
        if args.mass:
            print("\n" + mass(path, args.mass))


if __name__ == "__main__":
    main()
