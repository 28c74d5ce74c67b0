"""What a study checks before its first launch: the search space against SGLang's --help, the references' flags,
the machine (GPUs, model, ports) or the replay's surface, what a resumed study already holds, and the facts that
failures are predicted from. A problem is a SetupError, one line, before any server starts; what is only worth
knowing becomes a warning the CLI prints.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner.bench.workload import Workload
from tuner.config.references import Reference
from tuner.config.run import RunConfig
from tuner.config.space import SearchSpace, SpaceError, load_space
from tuner.errors import SetupError
from tuner.search.launchers import looks_like_model_path
from tuner.search.objective import Objective
from tuner.serve import gpu
from tuner.serve.launcher import Launcher, LaunchError
from tuner.sglang import failures
from tuner.sglang.catalog import FlagCatalog, FlagCatalogError
from tuner.sglang.feasibility import Feasibility, ModelFacts, launch_env
from tuner.trial.record import records
from tuner.trial.replay import ReplayLauncher


class Preflight:
    """The checks of one Tuner; each appends what it only warns about to ``warnings``."""

    def __init__(
        self,
        config: RunConfig,
        launcher: Launcher,
        objective: Objective,
        workload: Workload,
        references: dict[str, Reference],
    ):
        self.config = config
        self.launcher = launcher
        self.objective = objective
        self.workload = workload
        self.references = references
        self.warnings: list[str] = []

    def space(self) -> SearchSpace:
        """The run file's search space, checked against this SGLang's --help like the references' flags, and the
        machine (or the replay's surface) that is to run it."""
        try:
            space = load_space(self.config.space)
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
            space.validate(catalog)
        except SpaceError as exc:
            raise SetupError(str(exc)) from None
        self.check_reference_flags(catalog)
        self.warnings += space.no_op_warnings() + [
            f"--{name} is deprecated in this SGLang"
            for name, _ in space.fixed.values
            if catalog.flags.get(name) and catalog.flags[name].deprecated
        ]
        if self.launcher.replays:
            self.check_replay(space)
        else:
            self.check_machine(space)
        return space

    def resumed(self, study: optuna.Study, space: SearchSpace) -> None:
        """What the study already holds must suit this run: the same kind of parameters, a baseline SGLang took."""
        self.check_space_matches(study, space)
        self.check_baseline_flags(study)

    def check_gpus_idle(self, wait_s: float) -> None:
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

    def check_machine(self, space: SearchSpace) -> None:
        self.check_gpus(space)
        if self.launcher.kind == "process" and not looks_like_model_path(self.config.model.path):
            raise SetupError(f"model.path {self.config.model.path!r}: no such folder, and not a hub id (org/name)")
        lc = self.config.launcher
        for port in sorted({lc.port + g - min(self.config.gpus) for g in self.config.gpus}):
            if not 1 <= port <= 65535 or not port_free(lc.host, port):
                raise SetupError(
                    f"port {port} on {lc.host} is in use or not a port: stop what holds it or pass another --port"
                )

    def check_reference_flags(self, catalog: FlagCatalog) -> None:
        """Each reference's flags as SGLang will parse them (names, switches, choices, number types), like the
        space's: else a reference SGLang refuses is found only at its launch."""
        for i, (given, ref) in enumerate(zip(self.config.references, self.references.values(), strict=True)):
            for name, value in ref.flags.values:
                if problem := catalog.check(name, value):
                    where = f"references[{i}].flags.{name}" if given.flags else f"references[{i}] ({ref.name})"
                    raise SetupError(f"{where}: {problem}")

    def check_replay(self, space: SearchSpace) -> None:
        """What a replay can answer: the surface's workload levels; the space's flags, warned where unrecorded."""
        launcher = self.launcher
        assert isinstance(launcher, ReplayLauncher)  # checked where launcher.replays
        h = launcher.surface.header
        recorded_model = {m for m in (h.model, h.model_path) if m is not None}
        if recorded_model and self.config.model.path not in recorded_model:
            raise SetupError(
                f"model.path {self.config.model.path!r}: {launcher.path} recorded {h.model} "
                f"({h.model_path}); leave model out of a replay's run file"
            )
        problem = launcher.check_objective(
            list(self.objective.metrics), self.objective.slo, self.objective.load_search
        ) or launcher.check_workload(self.config.to_dict()["workload"])
        if problem:
            raise SetupError(problem)
        if self.objective.max_gpu_memory_fraction is not None and not h.gpu_memory_mib:
            size = "absent" if h.gpu_memory_mib is None else format(h.gpu_memory_mib, "g")
            raise SetupError(
                f"objective.max_gpu_memory_fraction: {launcher.path} records no GPU memory size "
                f"(gpu_memory_mib: {size}, recorded without NVML): remove max_gpu_memory_fraction to replay it"
            )
        absent = launcher.surface.absent()
        if self._local_model() is not None:  # model.path's config.json gives the facts the surface lacks
            absent = [name for name in absent if name != "model_facts"]
        if absent:
            self.warnings.append(
                f"{launcher.path} does not record {', '.join(absent)}: the replay checks nothing against them "
                f"and every view says so"
            )
        self.warnings += launcher.coverage_warnings({p.name for p in space.params})
        if not self.config.launcher.compile_cache:
            # Where kernels are built without the shared folder is the machine's (a process finds SGLang's own
            # caches, a container starts empty): a surface records where its trials' builds happened, not that.
            self.warnings.append(
                "launcher.compile_cache: false changes nothing in a replay: each trial's startup is replayed as "
                f"recorded in {launcher.path}, kernel builds where they happened there"
            )

    def check_gpus(self, space: SearchSpace) -> None:
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

    def check_space_matches(self, study: optuna.Study, space: SearchSpace) -> None:
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
            new = param.distribution()
            try:
                optuna.distributions.check_distribution_compatibility(old, new)
            except ValueError:
                raise SetupError(
                    f"{space.path}:{param.line}: {param.name} is {describe_distribution(new)} here but "
                    f"{describe_distribution(old)} in study {self.config.study!r}'s trials: use a new --study name "
                    f"for the new space, or keep the old kind of {param.name}"
                ) from None

    def check_baseline_flags(self, study: optuna.Study) -> None:
        """A baseline SGLang refused (invalid_flag) means every trial of the study gets the same fixed flags."""
        for r in records(study, (TrialState.COMPLETE,)):
            if r.baseline and r.failure_class == failures.INVALID_FLAG.name:
                raise SetupError(baseline_refused(self.config, (r.failure and r.failure.detail) or ""))

    def _local_model(self) -> ModelFacts | None:
        """The facts of model.path's config.json, where it is a local folder with one."""
        path = self.config.model.path
        # an empty path (a replayed surface that records no model) is no folder, though Path("") is the current one
        return ModelFacts.from_folder(path) if path and Path(path).expanduser().is_dir() else None

    def feasibility(self) -> Feasibility:
        """The facts failures are predicted from; each missing one is said once, and its checks skipped. A replay
        takes the surface's model facts where model.path has no config.json (an imported sweep's context length),
        and the recorded GPU's memory, not this machine's."""
        c = self.config
        model = self._local_model()
        longest = self.workload.longest_request()
        env = launch_env(c.launcher.kind, c.launcher.env)
        if self.launcher.replays:  # Surface.absent() names the facts the surface does not record
            assert isinstance(self.launcher, ReplayLauncher)
            h = self.launcher.surface.header
            return Feasibility(model or h.model_facts, h.gpu_memory_mib or None, tuple(c.gpus), longest, env)
        if model is None:
            self.warnings.append(
                f"model.path {c.model.path}: no local config.json, so only too_many_gpus is "
                f"predicted before launch (memory, heads and context are checked by SGLang)"
            )
        total = gpu.total_mib(tuple(c.gpus)) if model else None
        if model and total is None:
            self.warnings.append("no GPU memory from NVML: KV-pool failures are not predicted before launch")
        return Feasibility(model, total, tuple(c.gpus), longest, env)

    def check_workload(self) -> None:
        """What a request-log workload cannot keep of the log, said once before the first launch."""
        sharing = self.workload.describe().get("prefix_sharing")
        if isinstance(sharing, str):
            self.warnings.append(
                f"workload.path {self.workload.request_log}: prefix sharing {sharing}: those share no prefix in "
                f"what is sent"
            )


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def describe_distribution(dist: optuna.distributions.BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    if not isinstance(dist, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution)):
        return repr(dist)  # no other kind is suggested here
    kind = "an integer" if isinstance(dist, optuna.distributions.IntDistribution) else "a float"
    return f"{kind} range {dist.low:g}..{dist.high:g}{' (log)' if dist.log else ''}"


def baseline_refused(config: RunConfig, detail: str) -> str:
    why = f" ({detail})" if detail else ""
    return (
        f"the baseline (trial 0: the space's fixed flags only) failed as invalid_flag{why}: SGLang refuses a "
        f"fixed flag, so every later trial would fail too; fix `fixed:` in {config.space} (see the trial's "
        f"server.log) and start a new study (--study NAME)"
    )
