"""The study: Optuna storage, sampler, the trial loop, and how each trial is recorded so samplers learn.

A failed launch is recorded as a COMPLETE trial with a pessimistic value and a violated ``launch_ok``
constraint (Optuna's samplers ignore FAIL trials; they learn from infeasible ones). Constraints go into the
list-format ``constraints`` system attribute, the one the Optuna dashboard reads as well.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from tuner.bench.load_search import Incumbent
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import Workload
from tuner.config.references import Reference, resolve
from tuner.config.run import RunConfig
from tuner.config.space import SearchSpace, SpaceError, load_space
from tuner.errors import SetupError
from tuner.search.confirm import confirm_study
from tuner.search.launchers import looks_like_model_path, make_launcher
from tuner.search.objective import CLEARLY_WORSE, Objective, objective_for
from tuner.search.storage import (
    _Heartbeat,
    _redact,
    enqueue_retry,
    open_storage,
    set_trial_attrs,
)
from tuner.serve import gpu
from tuner.serve.launcher import Launcher, LaunchError
from tuner.sglang import failures
from tuner.sglang.catalog import FlagCatalog, FlagCatalogError
from tuner.sglang.feasibility import Feasibility, ModelFacts, Prediction, launch_env
from tuner.sglang.flags import ServerFlags, resolved_flags
from tuner.trial.runner import Cancelled, PhaseTimes, Progress, TrialPlan, TrialResult, TrialRunner, write_artifacts

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")

HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}"


def make_sampler(config: RunConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    s = config.sampler
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "gp":
        # GPSampler imports torch only once its startup trials are done: say so before any launch.
        if importlib.util.find_spec("torch") is None:
            raise SetupError("sampler gp needs torch (pip install torch), or set sampler: {name: tpe}")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    # Our spaces are conditional (torch-compile-max-bs only with torch compile): multivariate grouped TPE
    # models the branches jointly instead of falling back to independent sampling.
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        multivariate=True,
        group=True,
        constant_liar=True,
    )


def open_study(config: RunConfig, storage: RDBStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(config)
    objective = objective_for(config)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=config.study,
            directions=objective.directions,
            sampler=make_sampler(config, config.sampler.seed),
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SetupError(f"study {config.study!r}: {exc}") from None
    if config.sampler.name == "gp" and (config.baseline or config.references):
        # GPSampler models only the params every finished trial has; the baseline and references have none
        # (benchmarks/SAMPLERS.md: with the baseline first it draws exactly what random search draws).
        log.warning(
            "sampler gp with the baseline or references samples at random (they have no params): "
            "set baseline: false and no references, or use sampler: {name: tpe}"
        )
    if [d.name.lower() for d in study.directions] != objective.directions:
        raise SetupError(
            f"study {config.study!r} already exists with objectives {study.user_attrs.get('metrics')}: "
            f"use another --study name for {list(objective.metrics)}"
        )
    if "metrics" not in study.user_attrs:
        study.set_user_attr("metrics", list(objective.metrics))
        study.set_user_attr("constraint_names", objective.constraint_names)
        study.set_user_attr("at_concurrency", objective.at_concurrency)
        if objective.load_search is not None:
            study.set_user_attr("slo", objective.slo)
            study.set_user_attr("load_search", vars(objective.load_search))
        study.set_user_attr("space", str(config.space))
        study.set_metric_names(list(objective.metrics))
    # The latest run's settings: export rebuilds the launcher (command, env, image) from them.
    study.set_user_attr("run_config", config.to_dict())
    # A seeded sampler made anew on resume would replay the same random startup draws (seen on the H200:
    # trial 4 repeated trial 1). Offset the seed by the trials already there: still reproducible from the same
    # history; on a shared storage, also by the worker, whose peers start from the same history.
    seed = config.sampler.seed
    if seed is not None:
        seed += len(study.trials)
        if not config.storage_url.startswith("sqlite"):
            seed += os.getpid()
    study.sampler = make_sampler(config, seed)
    return study


def load_existing_study(config: RunConfig) -> optuna.Study:
    storage = open_storage(config, create=False)
    try:
        return optuna.load_study(study_name=config.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SetupError(
            f"no study {config.study!r} in {_redact(config.storage_url)} (studies there: {', '.join(names) or 'none'})"
        ) from None


def startup_timeout(config: RunConfig, flags: ServerFlags) -> float:
    """Timeouts follow the flags: torch compile can take 5x longer to start than the same server without it."""
    d = flags.as_dict()
    extra = sum(s for name, s in config.launcher.startup_timeout_extra_s.items() if d.get(name) not in (None, False))
    return config.launcher.startup_timeout_s + extra


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


@dataclass
class GpuPool:
    """Hands out disjoint sets of GPUs: one trial per GPU, or all of a tp x dp trial's GPUs at once.

    First come, first served: while a trial waits for two GPUs, a later one-GPU trial does not take the GPU
    that frees first (else the two-GPU trial could wait for ever).
    """

    gpus: list[int]
    _free: set[int] = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _queue: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._free = set(self.gpus)

    def acquire(self, n: int, cancel: threading.Event) -> tuple[int, ...]:
        if n > len(self.gpus):  # callers record such trials as infeasible before asking
            raise SetupError(f"a trial needs {n} GPUs but --gpus gives {len(self.gpus)}")
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or len(self._free) < n:
                    if cancel.is_set():
                        raise Cancelled()
                    self._cond.wait(0.2)
                chosen = tuple(sorted(self._free)[:n])
                self._free -= set(chosen)
                return chosen
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, gpus: tuple[int, ...]) -> None:
        with self._cond:
            self._free |= set(gpus)
            self._cond.notify_all()


class Tuner:
    """Runs a study to its trial budget. Usable from Python; the CLI is a thin layer over it."""

    def __init__(
        self,
        config: RunConfig,
        launcher: Launcher | None = None,
        progress: Progress | None = None,
        on_record: Callable[[optuna.Trial, dict], None] | None = None,
    ):
        """``on_record`` sees each measured trial's attributes while it can still be annotated (the CLI writes the
        dashboard's note with it)."""
        self.config = config
        self.on_record = on_record
        self.launcher = launcher or make_launcher(config)
        if self.launcher.replays and not config.model.path:
            config.model.path = self.launcher.surface.header.model_path
        self.progress = progress
        self.workload = config.workload.build(config.objective.request_slo())
        # A load search's in-flight tokens follow its arrival rates, not a concurrency: its pool is not checked.
        objective = objective_for(config)
        self.objective = dataclasses.replace(
            objective, kv_tokens_needed=0 if objective.load_search else self.workload.tokens_in_flight()
        )
        # Described in every trial's record: what was measured, so studies with different workloads never mix.
        self.workload_record = {
            **self.workload.describe(),
            **(
                {"load_search": vars(self.objective.load_search), "slo": self.objective.slo}
                if self.objective.load_search
                else {"concurrency": list(config.workload.concurrency)}
            ),
        }
        self.cancel = threading.Event()
        self.space: SearchSpace | None = None
        self.feasibility: Feasibility | None = None
        self.references: dict[str, Reference] = {r.name: r for r in resolve(config.references)}
        self.study: optuna.Study | None = None
        self.warnings: list[str] = []
        self.idle_mib: dict[int, float] = {}
        self._errors: list[BaseException] = []

    # -- preparation: everything that can be checked is checked before the first launch
    def prepare(self) -> optuna.Study:
        try:
            self.space = load_space(self.config.space)
        except SpaceError as exc:
            raise SetupError(str(exc)) from None
        try:
            catalog = self.launcher.flag_catalog()
        except (FlagCatalogError, LaunchError) as exc:
            raise SetupError(str(exc)) from None
        for flag in ("model-path", "host", "port"):
            if flag not in catalog.flags:
                raise SetupError(f"{catalog.source} --help lists no --{flag}: is this SGLang's launch_server?")
        try:
            self.space.validate(catalog)
        except SpaceError as exc:
            raise SetupError(str(exc)) from None
        self._check_reference_flags(catalog)
        self.warnings = self.space.no_op_warnings() + [
            f"--{name} is deprecated in this SGLang"
            for name, _ in self.space.fixed.values
            if catalog.flags.get(name) and catalog.flags[name].deprecated
        ]
        if self.launcher.replays:
            self._check_replay(self.space)
        else:
            self._check_machine(self.space)
        self.feasibility = self._feasibility()
        stopped = self.launcher.cleanup_orphans(self.config.study)
        if stopped:
            self.warnings.append(f"stopped servers left by an earlier run of this study: {', '.join(stopped)}")
        if not self.launcher.replays:
            self._check_gpus_idle(wait_s=30.0 if stopped else 0.0)
        self.study = open_study(self.config)
        if "kv_capacity" not in self.study.user_attrs.get("constraint_names", ["kv_capacity"]):
            self.objective = dataclasses.replace(self.objective, kv_constraint=False)
        self._check_space_matches(self.study, self.space)
        self._check_baseline_flags(self.study)
        self._recover_stale(self.study)
        self._enqueue_references(self.study)
        self.config.study_dir.mkdir(parents=True, exist_ok=True)
        # What the GPUs hold before we launch anything (idle, or what the user agreed to share them with):
        # "free" for every later trial means back to this.
        self.idle_mib = {} if self.launcher.replays else gpu.used_mib(tuple(self.config.gpus))
        return self.study

    def _check_gpus_idle(self, wait_s: float) -> None:
        """Nothing but this tuner may hold the trial GPUs, unless the user opted in to sharing them."""
        gpus = tuple(self.config.gpus)
        deadline = time.monotonic() + wait_s  # servers just stopped by cleanup_orphans take a moment to let go
        busy = gpu.in_use(gpus)
        while busy and time.monotonic() < deadline:
            time.sleep(0.5)
            busy = gpu.in_use(gpus)
        if not busy:
            return
        what = "; ".join(map(str, busy))
        if not self.config.gpus_shared:
            raise SetupError(
                f"{what}: measured beside it, a server gets what is left (a smaller KV pool, "
                f"shared compute); stop it, choose other --gpus, or pass --allow-shared-gpu "
                f"(gpus_shared: true) to measure anyway"
            )
        self.warnings.append(f"shared GPU ({what}): every trial records what else held its GPUs")

    def _check_machine(self, space: SearchSpace) -> None:
        self._check_gpus(space)
        if self.launcher.kind == "process" and not looks_like_model_path(self.config.model.path):
            raise SetupError(f"model.path {self.config.model.path!r}: no such folder, and not a hub id (org/name)")
        lc = self.config.launcher
        for port in sorted({lc.port + g - min(self.config.gpus) for g in self.config.gpus}):
            if not 1 <= port <= 65535 or not port_free(lc.host, port):
                raise SetupError(
                    f"port {port} on {lc.host} is in use or not a port: stop what holds it or pass another --port"
                )

    def _check_reference_flags(self, catalog: FlagCatalog) -> None:
        """Each reference's flags as SGLang will parse them (names, switches, choices, number types), like the
        space's: else a reference SGLang refuses is found only at its launch."""
        for i, (given, ref) in enumerate(zip(self.config.references, self.references.values())):
            for name, value in ref.flags.values:
                if problem := catalog.check(name, value):
                    where = f"references[{i}].flags.{name}" if given.flags else f"references[{i}] ({ref.name})"
                    raise SetupError(f"{where}: {problem}")

    def _check_replay(self, space: SearchSpace) -> None:
        """What a replay can answer: the surface's workload levels; the space's flags, warned where unrecorded."""
        h = self.launcher.surface.header
        if self.config.model.path not in (h.model, h.model_path):
            raise SetupError(
                f"model.path {self.config.model.path!r}: {self.launcher.path} recorded {h.model} "
                f"({h.model_path}); leave model out of a replay's run file"
            )
        problem = self.launcher.check_objective(
            self.objective.slo, self.objective.load_search
        ) or self.launcher.check_workload(self.config.to_dict()["workload"])
        if problem:
            raise SetupError(problem)
        self.warnings += self.launcher.coverage_warnings({p.name for p in space.params})

    def _check_gpus(self, space: SearchSpace) -> None:
        have = len(self.config.gpus)
        base = space.gpus_needed(space.fixed)
        if base > have:
            raise SetupError(f"the space's fixed flags need {base} GPUs per trial (tp x dp) but --gpus gives {have}")
        top = space.most_gpus()
        if top > have:
            self.warnings.append(
                f"the space allows trials needing up to {top} GPUs but --gpus gives {have}: those "
                f"are recorded infeasible (too_many_gpus) without launching"
            )
        if not gpu.nvml_available(quiet=True):  # said once, here, rather than logged by tuner.gpu
            what = (
                f"--gpus {','.join(map(str, self.config.gpus))} not checked, no GPU memory numbers, "
                f"no wait for free GPUs"
            )
            if self.config.objective.max_gpu_memory_fraction is not None:
                what += ", and objective.max_gpu_memory_fraction cannot be checked (every trial passes it)"
            self.warnings.append(f"NVML is not available ({gpu.unavailable_reason()}): {what}")
            return
        try:
            gpu.check_indices(tuple(self.config.gpus))
        except gpu.GpuError as exc:
            raise SetupError(str(exc)) from None

    def _check_space_matches(self, study: optuna.Study, space: SearchSpace) -> None:
        """A resumed study's parameters keep their kind: Optuna refuses, at the first trial, a parameter whose
        distribution changed kind (a range that became a list of choices, other choices, log on or off)."""
        seen: dict[str, optuna.distributions.BaseDistribution] = {}
        for t in study.get_trials(deepcopy=False):
            for name, dist in t.distributions.items():
                seen.setdefault(name, dist)
        for param in space.params:
            old = seen.get(param.name)
            if old is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, param.distribution())
            except ValueError:
                raise SetupError(
                    f"{space.path}:{param.line}: {param.name} is {_describe(param.distribution())} here but "
                    f"{_describe(old)} in study {self.config.study!r}'s trials: use a new --study name for the "
                    f"new space, or keep the old kind of {param.name}"
                ) from None

    def _check_baseline_flags(self, study: optuna.Study) -> None:
        """A baseline SGLang refused (invalid_flag) means every trial of the study gets the same fixed flags."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("baseline") and t.user_attrs.get("failure_class") == failures.INVALID_FLAG.name:
                raise SetupError(_baseline_refused(self.config, t.user_attrs.get("failure_detail", "")))

    def _feasibility(self) -> Feasibility:
        """The facts failures are predicted from; each missing one is said once, and its checks skipped."""
        c = self.config
        model = ModelFacts.from_folder(c.model.path) if Path(c.model.path).expanduser().is_dir() else None
        if model is None and not self.launcher.replays:  # a replay's surface says what failed
            self.warnings.append(
                f"model.path {c.model.path}: no local config.json, so only too_many_gpus is "
                f"predicted before launch (memory, heads and context are checked by SGLang)"
            )
        total = gpu.total_mib(tuple(c.gpus)) if model else None
        if model and total is None:
            self.warnings.append("no GPU memory from NVML: KV-pool failures are not predicted before launch")
        longest = None if self.workload.dataset else max(lv.input_len + lv.output_len for lv in self.workload.levels)
        return Feasibility(model, total, tuple(c.gpus), longest, launch_env(c.launcher.kind, c.launcher.env))

    def _enqueue_references(self, study: optuna.Study) -> None:
        """The baseline, then each reference not yet in the study, ahead of any sampled trial."""
        if not self.references:
            return
        queued = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
        if not study.trials and self.config.baseline:
            study.enqueue_trial({}, user_attrs={"baseline": True})  # else a queued reference would be trial 0
        for name in self.references:
            if name not in queued:
                study.enqueue_trial({}, user_attrs={"reference": name})

    def _recover_stale(self, study: optuna.Study) -> None:
        """RUNNING trials of a dead worker on this host (kill -9): fail them and run their parameters again."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker", "")
            host, _, pid = worker.rpartition(":")
            if host != HOST or not pid.isdigit() or _alive(int(pid)):
                continue
            # Another worker may recover the same trial at the same moment (at its start, or by heartbeat):
            # only the one whose state change lands queues the re-run.
            try:
                set_trial_attrs(
                    study,
                    optuna.Trial(study, t._trial_id),
                    {"failure_class": failures.INTERRUPTED.name, "failure_detail": f"worker {worker} died"},
                )
                if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            enqueue_retry(study, t)
            self.warnings.append(f"trial {t.number} was left RUNNING by a dead tuner: marked failed, re-queued")

    # -- the loop
    def run(self) -> optuna.Study:
        study = self.study or self.prepare()
        pool = GpuPool(list(self.config.gpus))
        artifacts = self._artifact_store()
        slots = len(self.config.gpus)
        workers = [
            threading.Thread(target=self._worker, args=(study, pool, artifacts), name=f"slot-{i}", daemon=True)
            for i in range(slots)
        ]
        with _signals_set(self.cancel):
            for w in workers:
                w.start()
            for w in workers:
                while w.is_alive():
                    w.join(0.2)
            if not self._errors and not self.cancel.is_set() and not self._budget_left(study):
                try:
                    confirm_study(self)
                except KeyboardInterrupt:
                    self.cancel.set()
        if self._errors:
            raise self._errors[0]
        if self.cancel.is_set():
            raise KeyboardInterrupt
        return study

    def _worker(self, study: optuna.Study, pool: GpuPool, artifacts: FileSystemArtifactStore) -> None:
        try:
            while not self.cancel.is_set():
                # Another host's dead worker: fail its trial and queue its parameters (RDB heartbeat only).
                optuna.storages.fail_stale_trials(study)
                if not self._budget_left(study):
                    return
                self._one_trial(study, pool, artifacts)
        except BaseException as exc:
            self._errors.append(exc)
            self.cancel.set()

    @staticmethod
    def trials_done(study: optuna.Study) -> int:
        """Trials that count against the budget: recorded ones (interrupted and given-back ones do not)."""
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    @staticmethod
    def trials_interrupted(study: optuna.Study) -> int:
        return sum(
            t.user_attrs.get("failure_class") == failures.INTERRUPTED.name
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        )

    def _budget_left(self, study: optuna.Study) -> bool:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        return len(done) < self.config.trials

    def _one_trial(self, study: optuna.Study, pool: GpuPool, artifacts: FileSystemArtifactStore) -> None:
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "worker", WORKER)
        with _Heartbeat(study, trial, self.config.heartbeat_s):
            self._run_asked(study, trial, pool, artifacts)

    def _run_asked(
        self, study: optuna.Study, trial: optuna.Trial, pool: GpuPool, artifacts: FileSystemArtifactStore
    ) -> None:
        # Budget across workers: trial numbers are handed out atomically, so whoever got a number past the
        # budget gives it back; the study never runs more trials than asked for.
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            if t.number < trial.number
        ]
        if len(ahead) >= self.config.trials:
            fixed = study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            trial.set_user_attr("failure_class", "over_budget")
            study.tell(trial, state=TrialState.FAIL)
            if fixed is not None:  # a re-run handed to us from the queue: leave it for a later run
                study.enqueue_trial(
                    fixed,
                    user_attrs={
                        k: v for k, v in trial.user_attrs.items() if k in ("retry_of", "baseline", "reference")
                    },
                )
            return
        reference = self.references.get(trial.user_attrs.get("reference", ""))
        baseline = (
            self.config.baseline and not reference and (trial.number == 0 or bool(trial.user_attrs.get("baseline")))
        )
        assert self.space is not None
        try:
            if reference:
                tuned = self.space.fixed.merged(reference.flags)
            else:
                tuned = self.space.fixed if baseline else self.space.sample(trial)
        except BaseException as exc:
            # Never left RUNNING: a resume would re-queue it and fail the same way for ever.
            trial.set_user_attr("failure_class", "sampling_error")
            trial.set_user_attr("failure_detail", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, ValueError):
                raise SetupError(f"trial {trial.number}: Optuna refused to sample the space: {exc}") from None
            raise
        needed = self.space.gpus_needed(tuned)
        assert self.feasibility is not None
        predicted = self.feasibility.predict(tuned, needed)
        if predicted:
            self._record_predicted(study, trial, tuned, needed, baseline, predicted, artifacts)
            return
        gpus: tuple[int, ...] = ()
        result: TrialResult | None = None
        try:
            gpus = pool.acquire(needed, self.cancel)
            # When the trial really ran (holding its GPUs), which its queued time before does not show.
            started_at = datetime.now().isoformat()
            port = self.config.launcher.port + (gpus[0] - min(self.config.gpus) if gpus else 0)
            if not self.launcher.replays and not port_free(self.config.launcher.host, port):
                raise SetupError(
                    f"port {port} on {self.config.launcher.host} is in use: stop what holds it or pass --port"
                )
            plan = self.plan(trial.number, tuned, gpus, port)
            set_trial_attrs(
                study,
                trial,
                {
                    "started_at": started_at,
                    "baseline": baseline,
                    "host": HOST,
                    "gpus": list(gpus),
                    "flags": plan.flags.as_dict(),
                    "argv": plan.flags.argv(),
                    "trial_dir": str(plan.trial_dir),
                    "launcher": self.launcher.describe(),
                },
            )
            runner = self.runner(study, trial)
            result = runner.run(plan)
            trial.set_user_attr("ended_at", datetime.now().isoformat())
        except (Cancelled, KeyboardInterrupt):
            self._record_interrupted(study, trial)
            self.cancel.set()
            return
        except BaseException:
            self._record_interrupted(study, trial)
            raise
        finally:
            if gpus:
                pool.release(gpus)
        self._record(study, trial, result, artifacts)

    def _record_predicted(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        tuned: ServerFlags,
        needed: int,
        baseline: bool,
        predicted: Prediction,
        artifacts: FileSystemArtifactStore,
    ) -> None:
        """Infeasible, not launched: SGLang would refuse these flags (tuner.feasibility), and the sampler learns."""
        plan = self.plan(trial.number, tuned, (), self.config.launcher.port)
        plan.trial_dir.mkdir(parents=True, exist_ok=True)
        set_trial_attrs(
            study,
            trial,
            {
                "baseline": baseline,
                "host": HOST,
                "gpus": [],
                "gpus_needed": needed,
                "flags": plan.flags.as_dict(),
                "argv": plan.flags.argv(),
                "trial_dir": str(plan.trial_dir),
                "launched": False,
            },
        )
        result = TrialResult(plan, predicted.failure, predicted.detail, None, PhaseTimes(), None, gpu.GpuStats(), {})
        write_artifacts(result)
        self._record(study, trial, result, artifacts)

    def plan(self, number: int, tuned: ServerFlags, gpus: tuple[int, ...], port: int) -> TrialPlan:
        c = self.config
        base = {"model-path": c.model.path, "host": c.launcher.host, "port": port}
        if c.model.served_name:
            base["served-model-name"] = c.model.served_name
        flags = ServerFlags.of(base).merged(tuned)
        # --gpus are NVML indices (PCI bus order); CUDA's default order may differ, so make CUDA_VISIBLE_DEVICES
        # name the same GPUs that are sampled and waited on (the run file's env can still override it).
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", **c.launcher.env}
        return TrialPlan(
            number, flags, gpus, c.launcher.host, port, c.study_dir / str(number), startup_timeout(c, flags), env
        )

    def runner(self, study: optuna.Study, trial: optuna.Trial | None, workload: Workload | None = None) -> TrialRunner:
        """A runner for one trial; ``workload`` overrides the study's (confirmation runs repeat it, unstopped)."""
        cls = TrialRunner
        if self.launcher.replays:
            from tuner.trial.replay import ReplayRunner

            cls = ReplayRunner
        return cls(
            self.launcher,
            workload or self.workload,
            self.config.model.served_name or self.config.model.path,
            self.config.study,
            idle_mib=self.idle_mib,
            stop_grace_s=self.config.launcher.stop_grace_s,
            early_stop=self._early_stop(study)
            if self.config.objective.early_stop and not workload and self.objective.load_search is None
            else None,
            progress=self.progress,
            cancel=self.cancel,
            on_launch=(lambda server: trial.set_user_attr("server", server.ident)) if trial else None,
            load_search=self.objective.load_search,
            slo=self.objective.slo,
            incumbent=incumbent(study) if trial and not workload and self._searched_from_incumbent(trial) else None,
        )

    def _searched_from_incumbent(self, trial: optuna.Trial) -> bool:
        """The baseline and the references get their whole curve: they are what every report compares against."""
        attrs = trial.user_attrs
        return self.objective.load_search is not None and not (attrs.get("baseline") or attrs.get("reference"))

    def _early_stop(self, study: optuna.Study) -> Callable[[LevelResult], str | None]:
        best = best_levels(study)

        def check(level: LevelResult) -> str | None:
            for metric, limit in self.objective.slo.items():
                value = getattr(level, metric)
                if value > limit:
                    return f"SLO broken at concurrency {level.concurrency}: {metric} {value:.1f} > {limit:g}"
            ref = best.get(level.concurrency)
            if (
                level.concurrency != self.objective.at_concurrency
                and ref
                and level.output_throughput < CLEARLY_WORSE * ref
            ):
                return (
                    f"clearly worse than the best at concurrency {level.concurrency}: "
                    f"{level.output_throughput:.0f} vs {ref:.0f} tok/s"
                )
            return None

        return check

    def _record(
        self, study: optuna.Study, trial: optuna.Trial, result: TrialResult, artifacts: FileSystemArtifactStore
    ) -> None:
        attrs = trial_attrs(result, self.objective, self.workload_record)
        if trial.user_attrs.get("baseline") and result.server_info and self.space is not None:
            # A space that cannot draw what SGLang chose for itself searches only elsewhere (the H200 chat
            # study's first space: every running-request cap below SGLang's 4096): say it while it runs.
            unreachable = self.space.unreachable(resolved_flags(result.server_info, result.kv.max_running_requests))
            if unreachable:
                attrs["defaults_outside_space"] = unreachable
                log.warning("SGLang's defaults lie outside the space: %s", "; ".join(unreachable))
        constraints = self.objective.constraints(result)
        set_trial_attrs(
            study, trial, {**attrs, "feasible": all(c <= 0 for c in constraints)}, system={"constraints": constraints}
        )
        self._upload(artifacts, trial, result.plan.trial_dir)
        if self.on_record:  # before tell: a finished trial's attributes can no longer be written
            self.on_record(trial, attrs)
        study.tell(trial, self.objective.values(result))
        if self.progress and hasattr(self.progress, "trial_done"):
            self.progress.trial_done(study, result)
        if result.failure == failures.INVALID_FLAG and trial.user_attrs.get("baseline"):
            said = failures.argparse_error(failures.log_tail(result.plan.trial_dir / "server.log"))
            self._errors.append(SetupError(_baseline_refused(self.config, said or result.failure_detail)))
            self.cancel.set()

    def _record_interrupted(self, study: optuna.Study, trial: optuna.Trial) -> None:
        trial.set_user_attr("failure_class", failures.INTERRUPTED.name)
        trial.set_user_attr("failure_hint", failures.INTERRUPTED.hint)
        trial_dir = trial.user_attrs.get("trial_dir")
        if trial_dir:  # what the server logged before it was stopped
            self._upload(self._artifact_store(), trial, Path(trial_dir))
        study.tell(trial, state=TrialState.FAIL)
        enqueue_retry(study, study._storage.get_trial(trial._trial_id))

    def _artifact_store(self) -> FileSystemArtifactStore:
        path = Path(self.config.artifacts or self.config.study_dir / "artifacts")
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))

    def _upload(self, store: FileSystemArtifactStore, trial: optuna.Trial, trial_dir: Path) -> None:
        # While the trial is RUNNING: Optuna refuses uploads to finished trials.
        for name, mimetype in (
            ("server.log", "text/plain"),
            ("benchmark.csv", "text/csv"),
            ("gpu.csv", "text/csv"),
            ("trial.json", "application/json"),
        ):
            path = trial_dir / name
            if path.is_file():
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)


def trial_attrs(result: TrialResult, objective: Objective, workload: dict | None = None) -> dict:
    """What a trial's record holds beyond its values: flat, JSON-friendly, named like SGLang and bench_serving."""
    t = result.times
    attrs: dict = {
        "failure_class": result.failure.name if result.failure else "none",
        # A healthy server's status is our own SIGKILL at stop (137): only a failed one's says something.
        **({"exit_code": result.exit_code} if result.failure else {}),
        "startup_s": round(t.startup_s, 3),
        "benchmark_s": round(t.benchmark_s, 3),
        "stop_s": round(t.stop_s, 3),
        "total_s": round(t.total_s, 3),
        "overhead_s": round(t.overhead_s, 3),
        **result.gpu.record(),
        **({"workload": workload} if workload else {}),
        **(result.replayed.record() if result.replayed else {}),
    }
    if result.gpu_shared:
        attrs["gpu_shared"] = [h.record() for h in result.gpu_shared]
    if result.failure:
        attrs["failure_explanation"] = result.failure.explanation
        attrs["failure_hint"] = result.failure.hint
        attrs["failure_detail"] = result.failure_detail
    if result.benchmark and result.benchmark.stopped_early:
        attrs["stopped_early"] = result.benchmark.stopped_early
    attrs.update(result.kv.record())
    short = result.kv.shortfall(objective.kv_tokens_needed) if result.ok and objective.kv_constraint else None
    if short:  # measured, kept, and infeasible through the kv_capacity constraint
        limit = failures.KV_POOL_TOO_SMALL
        attrs.update(
            limit_class=limit.name, limit_explanation=limit.explanation, limit_hint=limit.hint, limit_detail=short
        )
    level = objective.level(result) if result.ok else None
    if level:
        for name in (
            "output_throughput",
            "request_throughput",
            "total_throughput",
            "median_ttft_ms",
            "p99_ttft_ms",
            "median_tpot_ms",
            "p99_tpot_ms",
            "median_itl_ms",
            "median_e2e_latency_ms",
            "completed",
            "failed",
            "short_outputs",
        ):
            attrs[name] = round(getattr(level, name), 3)
    if objective.load_search is not None:
        # The value's level, named for the search: bench_serving's goodput and the rate that reached it.
        attrs["goodput"] = round(level.request_goodput, 3) if level else 0.0
        attrs["max_rate"] = level.request_rate if level else 0.0
        if result.benchmark and result.benchmark.slo_broken:
            attrs["slo_broken"] = result.benchmark.slo_broken
    slo_pass = result.benchmark.slo_pass if result.benchmark else ()
    attrs["levels"] = [
        {
            "concurrency": lv.concurrency,
            "request_rate": lv.request_rate,
            "repeat": lv.repeat,
            "output_throughput": round(lv.output_throughput, 2),
            "request_throughput": round(lv.request_throughput, 3),
            "request_goodput": round(lv.request_goodput, 3),
            "median_ttft_ms": round(lv.median_ttft_ms, 2),
            "p99_ttft_ms": round(lv.p99_ttft_ms, 2),
            "median_tpot_ms": round(lv.median_tpot_ms, 3),
            "p99_tpot_ms": round(lv.p99_tpot_ms, 3),
            "failed": lv.failed,
            **({"slo_pass": slo_pass[i]} if slo_pass else {}),
        }
        for i, lv in enumerate(result.levels)
    ]
    # KV capacity is recorded above as max_total_num_tokens / max_running_requests (log line first).
    for key in ("version", "mem_fraction_static", "chunked_prefill_size", "cuda_graph_max_bs", "attention_backend"):
        if key in result.server_info:
            attrs[f"server_{key}"] = result.server_info[key]
    return attrs


def _describe(dist: optuna.distributions.BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    kind = "an integer" if isinstance(dist, optuna.distributions.IntDistribution) else "a float"
    return f"{kind} range {dist.low:g}..{dist.high:g}{' (log)' if getattr(dist, 'log', False) else ''}"


def _baseline_refused(config: RunConfig, detail: str) -> str:
    why = f" ({detail})" if detail else ""
    return (
        f"the baseline (trial 0: the space's fixed flags only) failed as invalid_flag{why}: SGLang refuses a "
        f"fixed flag, so every later trial would fail too; fix `fixed:` in {config.space} (see the trial's "
        f"server.log) and start a new study (--study NAME)"
    )


def incumbent(study: optuna.Study) -> Incumbent | None:
    """The best feasible trial so far of a goodput study, and the highest rate it held (its ``max_rate``)."""
    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        ok = t.user_attrs.get("feasible") and t.user_attrs.get("max_rate") and t.values
        if ok and (best is None or t.values[0] > best.values[0]):
            best = t
    return Incumbent(best.number, float(best.user_attrs["max_rate"])) if best else None


def best_levels(study: optuna.Study) -> dict[int, float]:
    """Per concurrency, the best output tokens/s any feasible trial reached (for early stopping)."""
    best: dict[int, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not t.user_attrs.get("feasible"):
            continue
        for lv in t.user_attrs.get("levels", []):
            best[lv["concurrency"]] = max(best.get(lv["concurrency"], 0.0), lv["output_throughput"])
    return best


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class _signals_set:
    """SIGINT and SIGTERM set the cancel event: the running trial stops its server and is recorded."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.saved: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, lambda *_: self.cancel.set())
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
