"""The launcher interface: what every way of starting SGLang (process, Docker) provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from tuner.errors import TunerError
from tuner.sglang.catalog import FlagCatalog
from tuner.sglang.flags import ServerFlags

# Every server we start carries these, as environment variables (processes) or labels (containers), so a
# later run can find what a killed tuner left behind and tell which study and trial it belonged to.
STUDY_MARK = "SGLANG_TUNER_STUDY"
TRIAL_MARK = "SGLANG_TUNER_TRIAL"


class LaunchError(TunerError):
    """The server could not be started at all (bad command, daemon down, image missing): a setup problem."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one server; ``flags`` hold --model-path, --host and --port too."""

    flags: ServerFlags
    env: dict[str, str]
    log_path: Path
    host: str
    port: int
    gpus: tuple[int, ...]
    study: str
    trial: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def marks(self) -> dict[str, str]:
        return {STUDY_MARK: self.study, TRIAL_MARK: str(self.trial)}


@dataclass
class Server(ABC):
    """A started server. ``exit_code`` follows the shell's convention: 128+N for a death by signal N."""

    spec: LaunchSpec
    ident: str = field(default="")
    # Seconds its interpreter was started ahead of the launch, importing (serve/prestart.py); None: started fresh.
    prestarted_s: float | None = field(default=None, kw_only=True)
    prestart_imports_s: float | None = field(default=None, kw_only=True)  # how long that interpreter imported

    @abstractmethod
    def exit_code(self) -> int | None:
        """None while the server runs."""

    @abstractmethod
    def stop(self, grace_s: float = 10.0) -> int | None:
        """Stop it and everything it started; returns the exit code (None if it had to be abandoned)."""


class Launcher(ABC):
    kind: str
    # A replay (tuner.launcher.replay) starts nothing: no GPU, port or model is checked for it.
    replays: bool = False

    @abstractmethod
    def launch(self, spec: LaunchSpec) -> Server: ...

    @abstractmethod
    def flag_catalog(self) -> FlagCatalog:
        """The flags the SGLang this launcher runs accepts (its ``--help``), read before any trial."""

    @abstractmethod
    def cleanup_orphans(self, study: str) -> list[str]:
        """Stop servers a crashed earlier run of ``study`` left behind; returns what was stopped."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """What to record with every trial (SGLang version, image digest, command)."""

    def close(self) -> None:
        """Stop what this launcher keeps between trials (a prestarted interpreter); the study is done with it."""
        return None  # most launchers keep nothing between trials

    def compile_cache_folders(self, spec: LaunchSpec) -> list[Path] | None:
        """The compile caches ``spec``'s server builds kernels into, when this launcher shares them across trials
        (serve/compile_cache.py): None where it shares none (switched off, every variable set by the user, a
        replay)."""
        return None

    @abstractmethod
    def deploy_script(self, spec: LaunchSpec) -> str:
        """The body of deploy-best.sh: starts this exact server the way this launcher did."""
