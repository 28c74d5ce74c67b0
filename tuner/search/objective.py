"""The study's objective: which metrics at which level a trial is scored by, its constraints (launch, SLO, KV
capacity, GPU memory), and the pessimistic values a failed launch gets so that samplers learn from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.bench.load_search import best_level
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import LoadSearch
from tuner.config.run import GOODPUT, Direction, RunConfig, direction
from tuner.trial.runner import TrialResult

# A trial is "clearly worse" after its first level when it reaches less than this share of the best trial's
# throughput at that level: the remaining levels are skipped.
CLEARLY_WORSE = 0.5


@dataclass(frozen=True)
class Objective:
    metrics: tuple[str, ...]
    at_concurrency: int
    slo: dict[str, float]
    max_gpu_memory_fraction: float | None
    penalty_ms: float
    load_search: LoadSearch | None = None  # metrics [goodput]: read at the search's highest passing rate
    kv_tokens_needed: int = 0  # what the workload keeps in flight; a smaller KV pool is infeasible (0: unchecked)
    kv_constraint: bool = True  # False for studies made before it existed: constraints keep their length

    @property
    def directions(self) -> list[Direction]:
        return [direction(m) for m in self.metrics]

    @property
    def constraint_names(self) -> list[str]:
        names = ["launch_ok", *(["kv_capacity"] if self.kv_constraint else []), *(f"slo:{m}" for m in self.slo)]
        if self.max_gpu_memory_fraction is not None:
            names.append("gpu_memory_fraction")
        return names

    def level(self, result: TrialResult, repeat: int = 0) -> LevelResult | None:
        if self.load_search is not None:
            return best_level(result.levels, result.benchmark.slo_pass, repeat) if result.benchmark else None
        return next((lv for lv in result.levels if lv.concurrency == self.at_concurrency), None)

    def value(self, level: LevelResult | None, metric: str) -> float | None:
        return (level.request_goodput if metric == GOODPUT else getattr(level, metric)) if level else None

    def values(self, result: TrialResult) -> list[float]:
        """Pessimistic but finite where nothing was measured, so samplers can still rank the trial."""
        level = self.level(result) if result.ok else None
        out = []
        for metric in self.metrics:
            value = self.value(level, metric)
            if value is None or not math.isfinite(value):
                value = self.penalty_ms if direction(metric) == "minimize" else 0.0
            out.append(float(value))
        return out

    def constraints(self, result: TrialResult) -> list[float]:
        """One number per name, <= 0 when satisfied; the same keys for every trial (samplers require it)."""
        out = [0.0 if result.ok and result.levels else 1.0]
        if self.kv_constraint:
            pool = result.kv.max_total_num_tokens
            short = result.ok and pool is not None and pool < self.kv_tokens_needed
            out.append(self.kv_tokens_needed / pool - 1.0 if short and pool else 0.0 if result.ok else 1.0)
        if self.load_search is not None:
            return out + self._search_constraints(result)
        for metric, limit in self.slo.items():
            measured = [getattr(lv, metric) for lv in result.levels if math.isfinite(getattr(lv, metric))]
            out.append(max(measured) - limit if result.ok and measured else max(limit, 1.0))
        if self.max_gpu_memory_fraction is not None:
            frac = result.gpu.peak_used_fraction
            out.append(frac - self.max_gpu_memory_fraction if result.ok else 1.0)
        return out

    def _search_constraints(self, result: TrialResult) -> list[float]:
        """Load search: the SLO as measured at the highest passing rate (<= 0 by construction). When even the
        first rate broke it, that level's excess over each limit; a level broken only by failed requests
        violates every limit by 1, so the trial is never feasible. A search stopped because the trial cannot beat
        the incumbent (``cannot_beat``, tuner/bench/load_search.py) is judged like that, at the level that broke:
        what it measured is kept (its value, its curve), and it is infeasible, so never the best; a COMPLETE
        infeasible trial, not PRUNED, because GP ignores PRUNED trials and TPE ranks infeasible ones by how far
        they broke the SLO, and the budget counts COMPLETE trials."""
        out = []
        stop = result.benchmark.cannot_beat if result.ok and result.benchmark else None
        chosen = self.level(result) if result.ok and stop is None else None
        first = result.levels[stop or 0] if result.ok and result.levels else None
        for metric, limit in self.slo.items():
            if chosen is not None:
                out.append(getattr(chosen, metric) - limit)
            elif first is not None and math.isfinite(getattr(first, metric)):
                out.append(max(getattr(first, metric) - limit, 0.0))
            else:
                out.append(max(limit, 1.0))
        if chosen is None and not any(v > 0 for v in out):
            out = [1.0] * len(out)
        if self.max_gpu_memory_fraction is not None:
            out.append(result.gpu.peak_used_fraction - self.max_gpu_memory_fraction if result.ok else 1.0)
        return out


def objective_for(config: RunConfig) -> Objective:
    at = config.objective.at_concurrency or max(config.workload.concurrency)
    return Objective(
        tuple(config.objective.metrics),
        at,
        dict(config.objective.slo),
        config.objective.max_gpu_memory_fraction,
        config.workload.request_timeout_s * 1000.0,
        config.objective.search,
    )
