"""Replay: a study against a recorded surface, with no GPU and no SGLang, in seconds.

The launcher's "server" is the surface's answer for the trial's flags; ``ReplayRunner`` turns it into the same
``TrialResult`` a real trial produces (levels, failure class, phase seconds, GPU peak, early stopping on the
study's own SLOs), so the study records, artifacts, notes, report and export are the real ones. Every result is
marked replayed (and modelled where no recorded trial had its flags); the seconds are the recorded ones, not
slept, so GPU-minutes add up as on the GPU. With ``launcher.prestart`` on, a trial's startup loses its recorded
imports phase where a prestarted interpreter would have finished them, and with ``launcher.prestart_spawned`` its
scheduler's recorded imports where a stand-by would have (``ReplayLauncher``). A goodput study runs
tuner.load_search's own search, each rate it asks for answered from the recorded curves (Answer.at_rate); a rate
no curve recorded makes the trial modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from tuner.bench.client import CUT_SHORT, SETTLE_INTERVAL_S, BenchmarkResult
from tuner.bench.load_search import TTFT_GRACE_S, Search, broken
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import SEARCH_STRATEGY, LoadSearch
from tuner.errors import Cancelled
from tuner.serve import gpu
from tuner.serve.launcher import Launcher, LaunchSpec, Server
from tuner.serve.prestart import Spawned, python_module
from tuner.serve.process import DEFAULT_COMMAND, ProcessLauncher
from tuner.sglang import failures
from tuner.sglang.catalog import FlagCatalog
from tuner.trial.runner import (
    PhaseTimes,
    Replayed,
    TrialPlan,
    TrialResult,
    TrialRunner,
    rate_detail,
    write_artifacts,
)
from tuner.trial.surface import Answer, Surface


@dataclass
class ReplayServer(Server):
    answer: Answer | None = field(default=None, repr=False)
    spawned: tuple[Spawned, ...] = ()  # SGLang's scheduler on a stand-by, as the process launcher would have run it

    def exit_code(self) -> int | None:
        return None

    def stop(self, grace_s: float = 10.0) -> int | None:
        return None


class ReplayLauncher(Launcher):
    """Answers from ``surface``. With ``prestart`` (launcher.prestart) and a recorded ``PYTHON -m MODULE`` command,
    each launch prestarts the next interpreter on the same GPUs and environment as the process launcher does
    (tuner/serve/prestart.py), on the replay's clock: it is ready for the next launch there when the trial launched
    in between took at least the next trial's recorded imports phase (``Answer.imports_s``) of replayed
    startup, benchmark and stop seconds. Each trial is costed from its recorded startup as a fresh launch
    (``Row.fresh_startup_s``: imports that ran ahead of the recorded one put back); a ready interpreter takes the
    imports off again and the trial records ``prestarted_s`` (those replayed seconds). Where the surface records no
    imports phase nothing is taken off (the trial counts as started fresh); the first trial of a run always is. With
    ``prestart_spawned`` (launcher.prestart_spawned) a prestarted launch whose lead covers the surface's
    ``spawn_imports_s`` too runs SGLang's scheduler on a stand-by that imported beside the prestarted interpreter:
    those seconds come off too, and the trial records it in ``spawned``."""

    kind = "replay"
    replays = True

    def __init__(self, surface: Surface, path: str | Path, prestart: bool = True, prestart_spawned: bool = True):
        self.surface = surface
        self.path = str(path)
        command = surface.header.command or list(DEFAULT_COMMAND)  # not recorded: launch_server, as deploy_script
        # Per GPUs and environment: replayed seconds of the trial launched last there. None: nothing is prestarted.
        self._ahead: dict[tuple, float] | None = {} if prestart and python_module(command) else None
        self._standbys = prestart_spawned and self._ahead is not None

    def flag_catalog(self) -> FlagCatalog:
        return self.surface.flag_catalog()

    def launch(self, spec: LaunchSpec) -> ReplayServer:
        answer = self.surface.answer(spec.flags.as_dict())
        h = self.surface.header
        ahead = self._ahead.pop(_slot(spec), None) if self._ahead is not None else None
        if ahead is not None and (answer.imports_s is None or ahead < answer.imports_s):
            ahead = None  # still importing at the launch (or not known to be done): it starts fresh
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        how = (
            f"modelled from the nearest recorded trials {', '.join(map(str, answer.sources))} (no recorded "
            f"trial had these flags)"
            if answer.modelled
            else f"recorded trial {answer.sources[0]}"
        )
        spec.log_path.write_text(
            f"# REPLAY, not a measurement: {how} of {h.source} ({self.path}),\n"
            f"# {recorded_words(self.surface)}.\n"
            f"# {' '.join(h.command or ['(command not recorded)'])} {spec.flags.shell()}\n"
            + (
                f"# prestarted: its {answer.imports_s:.0f} s of recorded imports ran in the {ahead:.0f} replayed s "
                f"before this launch (sglang-tuner launcher.prestart)\n"
                if ahead is not None and answer.imports_s is not None
                else ""
            )
        )
        spawned: tuple[Spawned, ...] = ()
        imports = answer.spawn_imports_s
        if self._standbys and ahead is not None and imports is not None and ahead >= imports:
            spawned = (Spawned(1, "", True, imports, round(ahead, 1)),)  # as the boot says it
            with open(spec.log_path, "a") as log:
                log.write(
                    f"# prestarted: SGLang's scheduler ran on a stand-by, its {imports:.0f} s of recorded imports "
                    f"done (sglang-tuner launcher.prestart_spawned)\n"
                )
        ident = f"replay of trial {'/'.join(map(str, answer.sources))}"
        return ReplayServer(spec=spec, ident=ident, answer=answer, prestarted_s=ahead, spawned=spawned)

    def ran(self, spec: LaunchSpec, seconds: float) -> None:
        """The trial launched with ``spec`` took ``seconds`` replayed: the next launch on its GPUs comes that long
        after the interpreter prestarted at its launch."""
        if self._ahead is not None:
            self._ahead[_slot(spec)] = seconds

    def cleanup_orphans(self, study: str) -> list[str]:
        return []  # a replay starts no process

    def describe(self) -> dict[str, str]:
        h = self.surface.header
        absent = self.surface.absent()
        return {
            "launcher": "replay",
            "surface": self.path,
            "recorded": f"{h.source}, {h.date or 'date not recorded'}",
            "gpu": h.gpu_name or "GPU not recorded",
            "sglang_version": h.sglang_version or "not recorded",
            **({"absent": ", ".join(absent)} if absent else {}),
        }

    def deploy_script(self, spec: LaunchSpec) -> str:
        # The recorded servers' own command: what would reproduce the replayed numbers on that GPU.
        command = self.surface.header.command
        script = ProcessLauncher(command or DEFAULT_COMMAND).deploy_script(spec)
        if command is None:  # not recorded: SGLang's own entry point, said so in the script
            script = "# The surface records no server command: SGLang's launch_server is assumed.\n" + script
        if not spec.flags.as_dict().get("model-path"):  # nor a model: the script asks for one rather than guess
            script = script.replace(
                "--model-path ''", '--model-path "${MODEL_PATH:?the surface records no model: set MODEL_PATH}"'
            )
        return script

    def check_workload(self, workload: dict) -> str | None:
        """Why this workload (the run file's, as a mapping) cannot be replayed from the surface, or None."""
        w = self.surface.header.workload
        input_len, output_len, concurrency = workload["input_len"], workload["output_len"], workload["concurrency"]
        recorded_lens = w.input_len is not None and w.output_len is not None  # else said by Surface.absent()
        if recorded_lens and (input_len, output_len) != (w.input_len, w.output_len):
            return (
                f"workload: ISL {input_len} / OSL {output_len}, but {self.path} recorded ISL {w.input_len} / "
                f"OSL {w.output_len}: set workload.input_len and output_len to those"
            )
        missing = sorted(set(concurrency) - set(w.concurrency))
        if missing and self.surface.header.objective.load_search is None:  # a load search has no concurrency
            return (
                f"workload.concurrency: {missing} not recorded in {self.path} (it has "
                f"{', '.join(map(str, w.concurrency))})"
            )
        for key, recorded in w.shape.items():
            if workload.get(key) != recorded:
                return f"workload.{key}: {workload.get(key)!r}, but {self.path} recorded {recorded!r}"
        return None

    def check_objective(self, metrics: list[str], slo: dict[str, float], search: LoadSearch | None) -> str | None:
        """Why this objective cannot be replayed from the surface, or None: a load search is answered only by
        a surface recorded with the very same search and SLO (its verdicts and rates are theirs)."""
        o = self.surface.header.objective
        if unmeasured := [m for m in metrics if not self.surface.records(m)]:
            return (
                f"objective.metrics: {', '.join(unmeasured)} not recorded in {self.path} (it records "
                f"{', '.join(self.surface.header.metrics_recorded or ())}): replay one of those"
            )
        if search is None and o.load_search is None:
            return None
        if o.load_search is None:
            return (
                f"objective.metrics [goodput] searches request rates, which {self.path} did not record (its "
                f"trials ran fixed concurrency levels): replay another objective"
            )
        recorded = f"slo {o.slo} and load_search {vars(o.load_search)}"
        if search is None:
            return (
                f"objective.metrics: {self.path} recorded an SLO-goodput load search ({recorded}): replay it "
                f"with metrics: [goodput] and that slo and load_search"
            )
        # Which rates the search spends its levels on may differ (each rate is answered from the curves); what a
        # level measures (its duration, size, concurrency) and the SLO may not.
        same = replace(search, **{k: getattr(o.load_search, k) for k in SEARCH_STRATEGY}) == o.load_search
        if not same or slo != o.slo:
            which = "objective.slo" if same else "objective.load_search"
            return (
                f"{which}: {self.path} recorded {recorded}; a replay answers only that search: set "
                f"objective.slo and objective.load_search to those"
            )
        return None

    def coverage_warnings(self, tuned: set[str]) -> list[str]:
        """Flags the space tunes that no recorded trial set: their effect on the numbers is not modelled."""
        recorded = {name for row in self.surface.rows for name in row.flags}
        return [
            f"--{name} is in no recorded trial of {self.path}: replayed trials cannot tell its values apart"
            for name in sorted(tuned - recorded)
        ]


def _slot(spec: LaunchSpec) -> tuple:
    # What the process launcher matches a prestarted interpreter on, less the machine's environment.
    return spec.gpus, tuple(sorted(spec.env.items()))


def recorded_words(surface: Surface) -> str:
    """What the surface's trials ran on, in words, with what it does not record said as such."""
    h = surface.header
    return (
        f"{h.model or 'model not recorded'} on {h.gpu_name or 'GPU not recorded'} with SGLang "
        f"{h.sglang_version or '(version not recorded)'}, {h.date or 'date not recorded'}"
    )


class ReplayRunner(TrialRunner):
    """A TrialRunner whose server is a ReplayServer: same phases, early stopping and artifacts, no waiting."""

    launcher: ReplayLauncher

    def run(self, plan: TrialPlan) -> TrialResult:
        plan.trial_dir.mkdir(parents=True, exist_ok=True)
        spec = LaunchSpec(
            plan.flags,
            plan.env,
            plan.trial_dir / "server.log",
            plan.host,
            plan.port,
            plan.gpus,
            self.study,
            plan.number,
        )
        surface = self.launcher.surface
        if not surface.weights_learned:  # the one step of a replay that takes a while on a large surface
            self._phase(plan, "launching", f"learning which flags matter from {len(surface.rows)} recorded rows")
            surface.flag_weights()
        self._phase(plan, "launching")
        server = self.launcher.launch(spec)
        if self.on_launch:
            self.on_launch(server)
        a = server.answer
        assert a is not None
        startup_s, said = a.startup_s, ""
        if server.prestarted_s is not None and a.imports_s is not None:  # its imports ran before the launch
            startup_s, said = max(0.0, a.startup_s - a.imports_s), f", less {a.imports_s:.0f} s of imports prestarted"
        if server.spawned and a.spawn_imports_s is not None:  # and its scheduler's, on a stand-by
            startup_s = max(0.0, startup_s - a.spawn_imports_s)
            said += f" and {a.spawn_imports_s:.0f} s of its scheduler's on a stand-by"
        fresh = " as a fresh launch" if a.row.imports_ahead or a.row.spawn_ahead else ""
        self._phase(plan, "starting", f"replayed: {a.startup_s:.0f} s recorded{fresh}{said}")
        if self.cancel.is_set():
            raise Cancelled()
        failure = failures.ALL[a.failure_class] if a.failure_class else None
        bench = None
        bench_s = 0.0
        modelled_rates: tuple[float, ...] = ()
        # The recorded warm-up is paid once, before the levels, and only where this run warms up until stable too.
        levels_s = max(0.0, a.benchmark_s - (a.warmup_s or 0.0))
        warmup_s = (a.warmup_s or 0.0) if self.workload.stable_warmup is not None else 0.0
        if failure is None and self.load_search is not None:
            self._phase(plan, "benchmarking")
            bench, modelled_rates = self._search(plan, a)
            ran = sum(lv.duration_s for lv in bench.levels)
            recorded = sum(w * sum(lv.duration_s for lv in r.levels) for w, r in a.curves) / sum(w for w, _ in a.curves)
            bench_s = warmup_s + (levels_s * ran / recorded if recorded > 0 else levels_s)  # more levels, more time
        elif failure is None:
            self._phase(plan, "benchmarking")
            bench = self._levels(plan, a)
            ran = sum(lv.duration_s for lv in bench.levels)
            recorded = sum(lv.duration_s for lv in a.levels) or 1.0
            bench_s = warmup_s + levels_s * min(1.0, ran / recorded)  # levels skipped here were not paid for
        if bench is not None and a.warmup_s:
            with open(spec.log_path, "a") as log:
                log.write(
                    f"# warm-up until stable: {a.warmup_s:.1f} s recorded, "
                    + ("counted once" if warmup_s else "not counted (this run's workload has it off)")
                    + "\n"
                )
        self._phase(plan, "stopping")
        server.stop(self.stop_grace_s)
        times = PhaseTimes(
            startup_s=startup_s, benchmark_s=bench_s, stop_s=a.stop_s, total_s=startup_s + bench_s + a.stop_s
        )
        self.launcher.ran(spec, times.total_s)
        total = self.launcher.surface.header.gpu_memory_mib or 0.0
        peak = a.gpu_peak_used_mib
        stats = gpu.GpuStats(peak_used_mib=peak or 0.0, total_mib=total if peak else 0.0)
        replayed = Replayed(
            self.launcher.path,
            a.sources,
            a.modelled or bool(modelled_rates),
            peak,
            total,
            modelled_rates,
            not a.modelled,
        )
        result = TrialResult(plan, failure, a.failure_detail, None, times, bench, stats, {}, replayed=replayed)
        result.prestarted_s = server.prestarted_s
        result.spawned = server.spawned
        write_artifacts(result)
        return result

    def _search(self, plan: TrialPlan, a: Answer) -> tuple[BenchmarkResult, tuple[float, ...]]:
        """tuner.bench.load_search's own search, each level answered from the recorded curves; the rates that were
        not recorded levels of the answering trial (interpolated, beyond the curve, blended), in order. Each
        level's provenance is appended to the trial's server.log."""
        assert self.load_search is not None
        state = Search(self.workload, self.load_search, self.slo, self.incumbent)
        modelled: list[float] = []
        lines = []
        for level in state.levels():
            assert level.request_rate is not None  # the search's levels are its rates
            lv, how = a.at_rate(level, self.slo)
            if how != "recorded":
                modelled.append(level.request_rate)
            if self.load_search.cut_short:  # its numbers as answered, its seconds estimated
                lv = cut_short(lv, self.slo)
                if lv.errors.startswith(CUT_SHORT):
                    how += f"; {lv.errors.split('; ')[1]}"
            state.add(lv)
            lines.append(f"# {level.request_rate:g} req/s: {how}\n")
            self._phase(
                plan,
                "benchmarking",
                f"{rate_detail(lv)} (replayed)",
            )
        with open(plan.trial_dir / "server.log", "a") as log:
            log.writelines(lines)
        return state.result(), tuple(modelled)

    def _levels(self, plan: TrialPlan, a: Answer) -> BenchmarkResult:
        """The study's levels from the answer, in the study's order, stopping where the study would."""
        by_c = {lv.concurrency: lv for lv in a.levels}
        done = []
        stopped = None
        for level in self.workload.levels:
            lv = by_c.get(level.concurrency)
            if lv is None:
                stopped = (
                    f"recorded trial {a.row.trial} has no level at concurrency {level.concurrency} "
                    f"({a.row.stopped_early or 'not run'})"
                )
                break
            done.append(lv)
            self._phase(plan, "benchmarking", f"c={lv.concurrency}: {lv.output_throughput:.0f} tok/s (replayed)")
            if self.early_stop is not None:
                stopped = self.early_stop(lv)
                if stopped:
                    break
        return BenchmarkResult(tuple(done), stopped_early=stopped)


def cut_short(lv: LevelResult, slo: dict[str, float]) -> LevelResult:
    """A recorded broken level as LoadSearch.cut_short would have ended it on the GPU: its recorded numbers, and
    a duration estimated from them, since a surface keeps no per-request times. Of its N requests, (1 - SLO
    attainment) x N were past a limit (bench_serving's per-request goodput limits are the SLO's); they are taken
    to be the last ones sent (a queue that grows through the level: the latest the cut can come), so the k-th
    of them, k = N - floor(q (N - 1)) (load_search.settled), is sent at (N - past + k) / N of the arrivals and
    is seen past the limit a TTFT limit plus TTFT_GRACE_S later (TTFT), or once it finishes, at the level's p90
    end-to-end latency (TPOT). A level broken by failed requests, or with too few requests past the limit,
    keeps its recorded duration (when those happened is not recorded)."""
    why = broken(lv, slo)
    if why is None or lv.failed or lv.errors.startswith(CUT_SHORT) or not lv.request_rate:
        return lv
    n = lv.num_prompts
    for metric, limit in slo.items():
        stat, _, kind = metric.removesuffix("_ms").partition("_")
        q = {"median": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}.get(stat)
        if q is None or kind not in ("ttft", "tpot") or not getattr(lv, metric) > limit:
            continue
        past = (1.0 - lv.slo_attainment) * n
        need = n - math.floor(q * (n - 1))
        if past < need:
            continue
        sent = n / lv.request_rate * (n - past + need) / n
        seen = limit / 1000 + TTFT_GRACE_S if kind == "ttft" else lv.p90_e2e_latency_ms / 1000
        at = sent + seen + SETTLE_INTERVAL_S
        if at >= lv.duration_s:
            return lv
        note = f"cut short at {at:.1f} s of the recorded {lv.duration_s:.1f} s (estimated: replayed)"
        return replace(lv, duration_s=at, errors=f"{CUT_SHORT}{metric} settled past {limit:g} ms; {note}")
    return lv
