"""The study: Optuna storage, sampler, the trial loop, and how each trial is recorded so samplers learn.

A failed launch is recorded as a COMPLETE trial with a pessimistic value and a violated ``launch_ok``
constraint (Optuna's samplers ignore FAIL trials; they learn from infeasible ones). Constraints go into the
list-format ``constraints`` system attribute, the one the Optuna dashboard reads as well.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from tuner.bench.load_search import Incumbent
from tuner.bench.metrics import LevelResult
from tuner.bench.workload import Workload
from tuner.config.references import Reference, resolve
from tuner.config.run import ConfigError, RunConfig
from tuner.config.space import SearchSpace
from tuner.errors import Cancelled, SetupError
from tuner.search.checks import Preflight, baseline_refused, port_free
from tuner.search.launchers import make_launcher
from tuner.search.objective import CLEARLY_WORSE, Objective, objective_for
from tuner.search.samplers import warm_start_params
from tuner.search.storage import (
    HOST,
    WORKER,
    _Heartbeat,
    _redact,
    check_writable,
    enqueue_retry,
    open_study,
    set_trial_attrs,
)
from tuner.serve import gpu
from tuner.serve.launcher import Launcher
from tuner.sglang import failures
from tuner.sglang.feasibility import Feasibility, Prediction
from tuner.sglang.flags import FlagValue, ServerFlags, resolved_flags
from tuner.trial.record import OVER_BUDGET, SAMPLING_ERROR, StudyRecord, TrialRecord, Verdict, records
from tuner.trial.replay import ReplayLauncher
from tuner.trial.runner import PhaseTimes, Progress, TrialPlan, TrialResult, TrialRunner, write_artifacts
from tuner.trial.surface import SurfaceError

log = logging.getLogger(__name__)

# A predicted failure takes no trial of the budget, so a sampler that kept proposing them would never reach it:
# after this many in a row, with no launch between them, the study stops and says what to narrow. In a row, not
# per launch: a space where few configs can start still reaches its budget, however many predictions that takes,
# as long as launches keep coming. Drawn at random from a space 5% of which can start, 100 in a row happen 0.6% of
# the time; and 100 predictions cost no launch, only an ask and a few small writes each.
PREDICTED_IN_A_ROW = 100


def startup_timeout(config: RunConfig, flags: ServerFlags) -> float:
    """Timeouts follow the flags: torch compile can take 5x longer to start than the same server without it."""
    d = flags.as_dict()
    extra = sum(s for name, s in config.launcher.startup_timeout_extra_s.items() if d.get(name) not in (None, False))
    return config.launcher.startup_timeout_s + extra


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
        if isinstance(self.launcher, ReplayLauncher) and not config.model.path:
            h = self.launcher.surface.header
            config.model.path = h.model_path or h.model or ""  # neither recorded: said by the replay's checks
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
        self.warm_starts: list[dict[str, FlagValue]] = []  # a new study's first sampled trials (sampler.warm_start)
        self.study: optuna.Study | None = None
        self.warnings: list[str] = []
        self.idle_mib: dict[int, float] = {}
        self._errors: list[BaseException] = []
        self.confirm_interrupted = False  # Ctrl-C during the end-of-study confirmation
        self._predicted_lock = threading.Lock()
        self._predicted_in_a_row: list[Prediction] = []  # since this run's last launch, on any of its workers

    # -- preparation: everything that can be checked is checked before the first launch
    def preflight(self) -> Preflight:
        return Preflight(self.config, self.launcher, self.objective, self.workload, self.references)

    def prepare(self) -> optuna.Study:
        checks = self.preflight()
        self.warnings = checks.warnings  # one list: what the checks warn about, then what comes below
        self.space = checks.space()
        self.feasibility = checks.feasibility()
        checks.check_workload()
        stopped = self.launcher.cleanup_orphans(self.config.study)
        if stopped:
            self.warnings.append(f"stopped servers left by an earlier run of this study: {', '.join(stopped)}")
        if not self.launcher.replays:
            checks.check_gpus_idle(wait_s=30.0 if stopped else 0.0)
        check_writable(self.config)
        for what, folder in (
            ("trials_dir", self.config.study_dir),
            ("artifacts", Path(self.config.artifacts or self.config.study_dir / "artifacts")),
        ):
            try:  # before the study exists: nothing is made for a run that cannot keep its files
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):  # there already, but on a read-only disk
                    pass
            except OSError as exc:
                if folder.is_dir():
                    raise SetupError(
                        f"{what} {folder}: cannot write in this folder ({exc.strerror}): point {what} at a writable one"
                    ) from None
                raise SetupError(
                    f"{what} {folder}: cannot create this folder ({exc.strerror}): point {what} at a writable one"
                ) from None
        warm = self.config.sampler.warm_start
        try:  # read before the study is made: a bad file leaves nothing behind
            self.warm_starts = warm_start_params(warm, self.space) if warm else []
        except SurfaceError as exc:
            raise ConfigError(f"sampler.warm_start: {exc}") from None
        self.study = open_study(self.config)
        if "kv_capacity" not in (StudyRecord.of(self.study).constraint_names or ["kv_capacity"]):
            self.objective = dataclasses.replace(self.objective, kv_constraint=False)
        checks.resumed(self.study, self.space)
        self._recover_stale(self.study)
        self._enqueue_references(self.study)
        # What the GPUs hold before we launch anything (idle, or what the user agreed to share them with):
        # "free" for every later trial means back to this.
        self.idle_mib = {} if self.launcher.replays else gpu.used_mib(tuple(self.config.gpus))
        return self.study

    def _enqueue_references(self, study: optuna.Study) -> None:
        """The baseline, then each reference not yet in the study, ahead of any sampled trial; then, in a new
        study, the warm start's configs (sampled trials whose params are given: they count as launches, and the
        earlier study's results are never this study's)."""
        starts = self.warm_starts if not study.trials else []
        if not self.references and not starts:
            return
        queued = {r.reference for r in records(study)}
        if not study.trials and self.config.baseline:
            # else a queued reference would be trial 0
            study.enqueue_trial({}, user_attrs=TrialRecord(baseline=True).attrs())
        for name in self.references:
            if name not in queued:
                study.enqueue_trial({}, user_attrs=TrialRecord(reference=name).attrs())
        for params in starts:  # marked: the views say which surface each came from
            study.enqueue_trial(params, user_attrs=TrialRecord(warm_start=self.config.sampler.warm_start).attrs())

    def _recover_stale(self, study: optuna.Study) -> None:
        """RUNNING trials of a dead worker on this host (kill -9): fail them and run their parameters again."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = TrialRecord.of(t).worker or ""
            host, _, pid = worker.rpartition(":")
            if host != HOST or not pid.isdigit() or _alive(int(pid)):
                continue
            # Another worker may recover the same trial at the same moment (at its start, or by heartbeat):
            # only the one whose state change lands queues the re-run.
            try:
                set_trial_attrs(
                    study,
                    optuna.Trial(study, t._trial_id),
                    TrialRecord(failure=Verdict(failures.INTERRUPTED.name, detail=f"worker {worker} died")).attrs(),
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
        pool = gpu.GpuPool(list(self.config.gpus))
        artifacts = self._artifact_store()
        slots = len(self.config.gpus)
        workers = [
            threading.Thread(target=self._worker, args=(study, pool, artifacts), name=f"slot-{i}", daemon=True)
            for i in range(slots)
        ]
        # The launcher keeps the next trial's prestarted interpreter: it goes when the study stops.
        with _signals_set(self.cancel), closing(self.launcher):
            for w in workers:
                w.start()
            for w in workers:
                while w.is_alive():
                    w.join(0.2)
            # Without a confirm: section, scipy (seconds to import on a loaded machine) is not imported at all.
            if (
                not self._errors
                and not self.cancel.is_set()
                and not self._budget_left(study)
                and self.config.confirm is not None
            ):
                from tuner.search.confirm import confirm_study

                try:
                    confirm_study(self)
                except (KeyboardInterrupt, Cancelled):
                    self.confirm_interrupted = True  # nothing recorded: the next run of the command confirms
                    self.cancel.set()
        if self._errors:
            raise _unwritable(self._errors[0], self.config) or self._errors[0]
        if self.cancel.is_set():
            raise KeyboardInterrupt
        return study

    def _worker(self, study: optuna.Study, pool: gpu.GpuPool, artifacts: FileSystemArtifactStore) -> None:
        try:
            while not self.cancel.is_set():
                # A dead worker's trial: fail it, queue its parameters again. A heartbeat tells on any host's; without
                # one, a worker of this host is seen dead by its pid.
                optuna.storages.fail_stale_trials(study)
                if not self.config.heartbeat_s:
                    self._recover_stale(study)
                if not self._budget_left(study):
                    if not self._awaiting(study):
                        return
                    self.cancel.wait(1.0)
                    continue
                self._one_trial(study, pool, artifacts)
        except BaseException as exc:
            self._errors.append(exc)
            self.cancel.set()

    @staticmethod
    def trials_done(study: optuna.Study) -> int:
        """Trials that count against the budget: recorded launches (interrupted and given-back ones do not, nor
        those predicted to fail and never launched)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sum(TrialRecord.uses_budget(t) for t in complete)

    @staticmethod
    def trials_interrupted(study: optuna.Study) -> int:
        return sum(r.failure_class == failures.INTERRUPTED.name for r in records(study, (TrialState.FAIL,)))

    def _budget_left(self, study: optuna.Study) -> bool:
        taken = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        return sum(TrialRecord.uses_budget(t) for t in taken) < self.config.trials

    def _awaiting(self, study: optuna.Study) -> bool:
        """Whether the budget is full only with trials other workers run that could still die and be run again
        here: a trial of another process on this host (``_recover_stale`` sees it die), or of another host under a
        heartbeat. Leaving then would end the study short of its budget, the dead worker's trial never re-run."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = TrialRecord.of(t).worker or ""
            if (
                TrialRecord.uses_budget(t)
                and worker != WORKER
                and (worker.startswith(f"{HOST}:") or self.config.heartbeat_s)
            ):
                return True
        return False

    def _one_trial(self, study: optuna.Study, pool: gpu.GpuPool, artifacts: FileSystemArtifactStore) -> None:
        trial = study.ask()
        for key, value in TrialRecord(worker=WORKER).attrs().items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        with _Heartbeat(study, trial, self.config.heartbeat_s):
            self._run_asked(study, trial, pool, artifacts)

    def _run_asked(
        self, study: optuna.Study, trial: optuna.Trial, pool: gpu.GpuPool, artifacts: FileSystemArtifactStore
    ) -> None:
        # Budget across workers: trial numbers are handed out atomically, so whoever got a number past the
        # budget gives it back; the study never runs more trials than asked for.
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            if t.number < trial.number and TrialRecord.uses_budget(t)
        ]
        if len(ahead) >= self.config.trials:
            fixed = study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            set_trial_attrs(study, trial, TrialRecord(failure=Verdict(OVER_BUDGET)).attrs())
            study.tell(trial, state=TrialState.FAIL)
            if fixed is not None:  # a re-run handed to us from the queue: leave it for a later run
                r = TrialRecord.of(trial)
                study.enqueue_trial(
                    fixed,
                    user_attrs=TrialRecord(
                        retry_of=r.retry_of, baseline=r.baseline, reference=r.reference, warm_start=r.warm_start
                    ).attrs(),
                )
            return
        queued = TrialRecord.of(trial)
        reference = self.references.get(queued.reference or "")
        baseline = self.config.baseline and not reference and (trial.number == 0 or queued.is_baseline)
        assert self.space is not None
        try:
            if reference:
                tuned = self.space.fixed.merged(reference.flags)
            else:
                tuned = self.space.fixed if baseline else self.space.sample(trial)
        except BaseException as exc:
            # Never left RUNNING: a resume would re-queue it and fail the same way for ever.
            set_trial_attrs(
                study,
                trial,
                TrialRecord(failure=Verdict(SAMPLING_ERROR, detail=f"{type(exc).__name__}: {exc}")).attrs(),
            )
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, ValueError):
                raise SetupError(f"trial {trial.number}: Optuna refused to sample the space: {exc}") from None
            raise
        needed = self.space.gpus_needed(tuned)
        assert self.feasibility is not None
        predicted = self.feasibility.predict(tuned, needed)
        with self._predicted_lock:
            self._predicted_in_a_row = [*self._predicted_in_a_row, predicted] if predicted else []
            streak = list(self._predicted_in_a_row)
        if predicted:
            self._record_predicted(study, trial, tuned, needed, baseline, predicted, artifacts)
            if len(streak) >= PREDICTED_IN_A_ROW:
                self._errors.append(SetupError(predicted_in_a_row(streak)))
                self.cancel.set()
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
                TrialRecord(
                    started_at=started_at,
                    baseline=baseline,
                    host=HOST,
                    gpus=gpus,
                    flags=plan.flags,
                    argv=tuple(plan.flags.argv()),
                    trial_dir=plan.trial_dir,
                    launcher=self.launcher.describe(),
                ).attrs(),
            )
            runner = self.runner(study, trial)
            result = runner.run(plan)
            set_trial_attrs(study, trial, TrialRecord(ended_at=datetime.now().isoformat()).attrs())
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
            TrialRecord(
                baseline=baseline,
                host=HOST,
                gpus=(),
                gpus_needed=needed,
                flags=plan.flags,
                argv=tuple(plan.flags.argv()),
                trial_dir=plan.trial_dir,
                launched=False,
            ).attrs(),
        )
        result = TrialResult(
            plan, predicted.failure, predicted.detail, None, PhaseTimes(), None, gpu.GpuStats(), {}, launched=False
        )
        write_artifacts(result)
        self._record(study, trial, result, artifacts)

    def plan(self, number: int, tuned: ServerFlags, gpus: tuple[int, ...], port: int) -> TrialPlan:
        c = self.config
        base: dict[str, FlagValue] = {"model-path": c.model.path, "host": c.launcher.host, "port": port}
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
            on_launch=(lambda server: set_trial_attrs(study, trial, TrialRecord(server=server.ident).attrs()))
            if trial
            else None,
            load_search=self.objective.load_search,
            slo=self.objective.slo,
            incumbent=incumbent(study) if trial and not workload and self._searched_from_incumbent(trial) else None,
        )

    def _searched_from_incumbent(self, trial: optuna.Trial) -> bool:
        """The baseline and the references get their whole curve: they are what every report compares against."""
        r = TrialRecord.of(trial)
        return self.objective.load_search is not None and not (r.is_baseline or r.reference)

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
        baseline = TrialRecord.of(trial).is_baseline
        if baseline and result.server_info and self.space is not None:
            # A space that cannot draw what SGLang chose for itself searches only elsewhere (the H200 chat
            # study's first space: every running-request cap below SGLang's 4096): say it while it runs.
            unreachable = self.space.unreachable(resolved_flags(result.server_info, result.kv.max_running_requests))
            if unreachable:
                attrs.update(TrialRecord(defaults_outside_space=tuple(unreachable)).attrs())
                log.warning("SGLang's defaults lie outside the space: %s", "; ".join(unreachable))
        if baseline and result.replayed and not result.replayed.flags_recorded:
            # Its numbers are its neighbours' blend: a gain over them would be a gain over a guess.
            why = (
                f"{result.replayed.surface} recorded no trial of SGLang's defaults (the space's fixed flags); the "
                f"baseline, trial {trial.number}, is modelled from recorded trials "
                f"{', '.join(map(str, result.replayed.sources))}, so no trial is compared with it"
            )
            attrs.update(TrialRecord(unrecorded_baseline=why).attrs())
        constraints = self.objective.constraints(result)
        set_trial_attrs(
            study,
            trial,
            {**attrs, **TrialRecord(feasible=all(c <= 0 for c in constraints)).attrs()},
            system={"constraints": constraints},
        )
        missing = result.artifacts_error or self._upload(artifacts, trial, result.plan.trial_dir)
        if missing:  # measured all the same: recorded with its numbers, saying its files are missing
            trial.set_user_attr("artifacts_missing", missing)
            self._errors.append(
                SetupError(
                    f"trial {trial.number}: {missing}: it is recorded in the study without them; free space "
                    f"there (or set trials_dir / artifacts elsewhere) and run the same command to resume"
                )
            )
            self.cancel.set()
        if self.on_record:  # before tell: a finished trial's attributes can no longer be written
            self.on_record(trial, attrs)
        study.tell(trial, self.objective.values(result))
        if self.progress and hasattr(self.progress, "trial_done"):
            self.progress.trial_done(study, result)
        if result.failure == failures.INVALID_FLAG and baseline:
            said = failures.argparse_error(failures.log_tail(result.plan.trial_dir / "server.log"))
            self._errors.append(SetupError(baseline_refused(self.config, said or result.failure_detail)))
            self.cancel.set()

    def _record_interrupted(self, study: optuna.Study, trial: optuna.Trial) -> None:
        interrupted = Verdict(failures.INTERRUPTED.name, hint=failures.INTERRUPTED.hint)
        set_trial_attrs(study, trial, TrialRecord(failure=interrupted).attrs())
        trial_dir = TrialRecord.of(trial).trial_dir
        if trial_dir:  # what the server logged before it was stopped
            self._upload(self._artifact_store(), trial, trial_dir)
        study.tell(trial, state=TrialState.FAIL)
        enqueue_retry(study, study._storage.get_trial(trial._trial_id))

    def _artifact_store(self) -> FileSystemArtifactStore:
        path = Path(self.config.artifacts or self.config.study_dir / "artifacts")
        path.mkdir(parents=True, exist_ok=True)
        return _WholeFileStore(str(path))

    def _upload(self, store: FileSystemArtifactStore, trial: optuna.Trial, trial_dir: Path) -> str:
        """The trial's files as Optuna artifacts; '' when done, else why not (the store's disk is full)."""
        # While the trial is RUNNING: Optuna refuses uploads to finished trials.
        for name, mimetype in (
            ("server.log", "text/plain"),
            ("benchmark.csv", "text/csv"),
            ("gpu.csv", "text/csv"),
            ("trial.json", "application/json"),
        ):
            path = trial_dir / name
            if path.is_file():
                try:
                    upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)
                except OSError as exc:
                    return f"cannot copy its files to the artifact store {store._base_path} ({exc.strerror or exc})"
        return ""


class _WholeFileStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, where an artifact is whole or absent: written beside, then renamed
    (Optuna's own leaves a truncated file when the disk fills)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self._get_filepath(artifact_id)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def predicted_in_a_row(streak: list[Prediction]) -> str:
    """Why the study stopped after ``streak`` (predicted failures with no launch between them): which classes,
    and what to narrow."""
    classes = Counter(p.failure.name for p in streak)
    last = streak[-1]
    return (
        f"the sampler proposed {len(streak)} configs in a row that are predicted to fail "
        f"({', '.join(f'{name} {n}' for name, n in classes.most_common())}; the last: {last.detail}), none "
        f"launched: most of the space cannot start here. {last.failure.hint} Then run the same command to resume"
    )


def trial_attrs(result: TrialResult, objective: Objective, workload: dict | None = None) -> dict:
    """What a trial's end adds to its record (trial.record.TrialRecord), as the user attributes it is stored as."""
    short = result.kv.shortfall(objective.kv_tokens_needed) if result.ok and objective.kv_constraint else None
    return TrialRecord.measured(
        result,
        objective.level(result) if result.ok else None,
        kv_shortfall=short,
        load_search=objective.load_search is not None,
        workload=workload,
    ).attrs()


def _unwritable(exc: BaseException, config: RunConfig) -> SetupError | None:
    """A full disk under the study's storage or a trial's files, as one line saying what to do; else None.

    The server was stopped on the way out; a trial the storage could not record stays RUNNING there, and the
    next start fails it and runs it again (``_recover_stale``)."""
    if isinstance(exc, SetupError):  # already one line
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        said = str(getattr(cause, "orig", None) or cause)
        database = type(cause).__module__.split(".")[0] in ("sqlite3", "sqlalchemy", "psycopg", "psycopg2", "optuna")
        # SQLite's words, and PostgreSQL's ("could not extend file ...: No space left on device")
        if database and ("database or disk is full" in said or "No space left on device" in said):
            return SetupError(
                f"the study's storage {_redact(config.storage_url)} cannot be written ({said.splitlines()[0]}): "
                f"the running trial was stopped, not recorded; free space on its disk, then run the same "
                f"command to resume (the trial is run again)"
            )
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            where = f" {cause.filename}" if cause.filename else ""
            return SetupError(
                f"cannot write{where} ({cause.strerror}): the running trial was stopped and is run again on "
                f"resume; free space there (or set trials_dir / artifacts elsewhere), then run the same command"
            )
        cause = cause.__cause__ or cause.__context__
    return None


def incumbent(study: optuna.Study) -> Incumbent | None:
    """The best feasible trial so far of a goodput study, and the highest rate it held (its ``max_rate``)."""
    best: TrialRecord | None = None
    for r in records(study, (TrialState.COMPLETE,)):
        if r.is_feasible and r.max_rate and r.values and (best is None or r.values[0] > (best.values or (0.0,))[0]):
            best = r
    if best is None or best.number is None or best.max_rate is None:
        return None
    return Incumbent(best.number, float(best.max_rate))


def best_levels(study: optuna.Study) -> dict[int, float]:
    """Per concurrency, the best output tokens/s any feasible trial reached (for early stopping)."""
    best: dict[int, float] = {}
    for r in records(study, (TrialState.COMPLETE,)):
        if not r.is_feasible:
            continue
        for lv in r.measured_levels:
            best[lv.concurrency] = max(best.get(lv.concurrency, 0.0), lv.output_throughput or 0.0)
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
    """SIGINT, SIGTERM and SIGHUP (the terminal or ssh session closed) set the cancel event: the running trial
    stops its server and is recorded."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.saved: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}  # signal.signal's
        self.terminals: list[int] = []

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # Asked now: once hung up, a terminal no longer answers isatty.
            self.terminals = [fd for fd in (1, 2) if os.isatty(fd)]
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # nohup: the user asked to run on after the terminal closes
                self.saved[sig] = signal.signal(sig, self._hangup if sig == signal.SIGHUP else self._stop)
        return self

    def _stop(self, *_) -> None:
        self.cancel.set()

    def _hangup(self, *_) -> None:
        # A hung-up terminal fails every later write (EIO): what would have gone there goes nowhere, so that
        # stopping the server and recording the trial never trips on a progress line.
        _detach(self.terminals)
        self.cancel.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _detach(fds: list[int]) -> None:
    """Point these file descriptors (stdout, stderr: a terminal gone) at /dev/null."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)
