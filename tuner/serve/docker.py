"""Docker launcher: each trial's SGLang in its own container, its log streamed to the trial's server.log."""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from tuner.serve.compile_cache import CompileCache
from tuner.serve.help_cache import kept_image_help
from tuner.serve.launcher import STUDY_MARK, Launcher, LaunchError, LaunchSpec, Server
from tuner.sglang.catalog import FlagCatalog, FlagCatalogError, kept_or_read
from tuner.sglang.flags import ServerFlags, deploy_defaults, one_per_line, shell_args

DEFAULT_COMMAND = ("python3", "-m", "sglang.launch_server")
HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
# Every container we start carries it, so `docker ps -f label=sglang-tuner=1` lists all of ours.
TOOL_LABEL = "sglang-tuner"
# exit_code() is polled in the trial's readiness loop; one inspect per 100 ms is plenty and spares the daemon.
_POLL_INTERVAL_S = 0.1
# A container removed behind our back (docker rm -f by a user) most likely died by SIGKILL.
_VANISHED_EXIT = 137
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def container_name(study: str, trial: int) -> str:
    """sglang-tuner-<study>-<trial>, with whatever Docker refuses in a name ([a-zA-Z0-9_.-]) made a dash."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]+", "-", study).strip("-.") or "study"
    return f"sglang-tuner-{safe}-{trial}"


@dataclass
class DockerServer(Server):
    container: Container = field(kw_only=True, repr=False)  # required: kw_only, after the base's defaulted ident
    log_thread: threading.Thread | None = field(default=None, repr=False)
    _exit: int | None = field(default=None, repr=False)
    _checked_at: float = field(default=0.0, repr=False)
    # The trial's health watcher and its benchmark both poll exit_code(), from different threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def exit_code(self) -> int | None:
        with self._lock:
            return self._poll()

    def _poll(self) -> int | None:
        if self._exit is not None:
            return self._exit
        now = time.monotonic()
        if now - self._checked_at < _POLL_INTERVAL_S:
            return None
        self._checked_at = now
        try:
            self.container.reload()
        except docker.errors.NotFound:
            self._exit = _VANISHED_EXIT
            return self._exit
        except _DOCKER_ERRORS:
            # A daemon hiccup is not the server's death; the trial's own timeouts end a real outage.
            return None
        state = self.container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            # The exit is classified from server.log at once: let the log stream, which ends with the
            # container, write its last lines (an OOM's traceback) first.
            if self.log_thread is not None:
                self.log_thread.join(timeout=5)
            self._exit = int(state.get("ExitCode", -1))
        return self._exit

    def stop(self, grace_s: float = 10.0) -> int | None:
        try:
            if self.exit_code() is None:
                # With --init, tini passes SIGTERM on to SGLang; Docker sends SIGKILL after the grace period.
                self.container.stop(timeout=max(1, round(grace_s)))
            code = self.container.wait(timeout=grace_s + 30).get("StatusCode")
            self._exit = int(code) if code is not None else self._exit
        except docker.errors.NotFound:
            self._exit = self._exit if self._exit is not None else _VANISHED_EXIT
        except _DOCKER_ERRORS:
            pass
        finally:
            # The log stream ends with the container; join it first so server.log is complete.
            if self.log_thread is not None:
                self.log_thread.join(timeout=5)
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except _DOCKER_ERRORS:
                pass
        return self._exit


def _follow_logs(container: Container, log_path: Path) -> None:
    # Docker sends one frame per write of the server, which for SGLang's logging is one line.
    try:
        with open(log_path, "ab") as log:
            for chunk in container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
    except (OSError, *_DOCKER_ERRORS):
        pass


class DockerLauncher(Launcher):
    kind = "docker"

    def __init__(
        self,
        image: str,
        command: Sequence[str] = DEFAULT_COMMAND,
        env: dict[str, str] | None = None,
        hf_cache: str | Path | None = None,
        volumes: Sequence[str] = (),
        shm_size: str = "16g",
        ipc_mode: str = "host",
        network: str = "host",
        gpu_runtime: bool = False,
        init: bool = True,
        base_url: str | None = None,
        compile_cache: CompileCache | None = None,
    ):
        self.image = image
        self.command = list(command)
        self.env = dict(env or {})
        self.hf_cache = str(Path(hf_cache).expanduser().resolve()) if hf_cache else None
        self.volumes = list(volumes)
        self.shm_size = shm_size
        self.ipc_mode = ipc_mode
        self.network = network
        self.gpu_runtime = gpu_runtime
        self.init = init
        self.base_url = base_url
        self.compile_cache = compile_cache  # mounted at the same path, its variables pointed there (None: off)
        self._client: docker.DockerClient | None = None
        self._image_ref: str | None = None
        self._describe: dict[str, str] | None = None

    # --- the daemon and the image -------------------------------------------------------------------

    def daemon_url(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def client(self) -> docker.DockerClient:
        # Connected on first use, so a config can name this launcher on a machine without Docker.
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
                self._client.ping()
            except _DOCKER_ERRORS:
                raise LaunchError(
                    f"cannot reach the Docker daemon at {self.daemon_url()}: is dockerd running?"
                ) from None
        return self._client

    def image_ref(self) -> str:
        """The image pinned for the whole study: repo@sha256 digest, else its sha256 Id (a tag can move)."""
        if self._image_ref is None:
            image = self._image()
            digests = image.attrs.get("RepoDigests") or []
            self._image_ref = digests[0] if digests else image.id
        return self._image_ref

    def _image(self) -> Any:
        try:
            return self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise LaunchError(f"image {self.image} not found locally: docker pull {self.image} or build it") from None
        except _DOCKER_ERRORS as exc:
            raise LaunchError(f"cannot inspect image {self.image}: {_one_line(exc)}") from None

    def _check_gpu_runtime(self) -> None:
        try:
            runtimes = self.client.info().get("Runtimes") or {}
        except _DOCKER_ERRORS:
            return  # the create call will then report what is wrong
        if "nvidia" not in runtimes:
            raise LaunchError(
                f"the Docker daemon at {self.daemon_url()} has no nvidia runtime (it has: {', '.join(runtimes)}): "
                "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`, "
                "or set gpu_runtime: false"
            )

    # --- one container's settings, for the SDK and for the equivalent `docker run` ------------------

    def _flags(self, spec: LaunchSpec) -> ServerFlags:
        # On a bridge network the server must listen on all of the container's interfaces to be published.
        if self.network == "host":
            return spec.flags
        return spec.flags.merged(ServerFlags.of({"host": "0.0.0.0"}))

    def _cache_env(self, spec: LaunchSpec) -> dict[str, str]:
        # A container inherits nothing of the tuner's environment: only launcher.env can set them instead.
        return self.compile_cache.env({**self.env, **spec.env}, inherited={}) if self.compile_cache else {}

    def compile_cache_folders(self, spec: LaunchSpec) -> list[Path] | None:
        # Only the mounted folder: a cache launcher.env points elsewhere lives and dies in the container.
        return [self.compile_cache.root] if self.compile_cache and self._cache_env(spec) else None

    def _environment(self, spec: LaunchSpec, *, cache: bool = False) -> dict[str, str]:
        env = {**(self._cache_env(spec) if cache else {}), **self.env, **spec.env}
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach server.log as they are written
        return env

    def _binds(self, spec: LaunchSpec | None = None) -> list[str]:
        """The volumes; with ``spec``, the shared compile cache too (trials only, never deploy-best.sh)."""
        binds = [f"{self.hf_cache}:{HF_CACHE_IN_CONTAINER}"] if self.hf_cache else []
        if spec is not None and self.compile_cache and self._cache_env(spec):
            binds.append(f"{self.compile_cache.root}:{self.compile_cache.root}")
        return binds + self.volumes

    def _labels(self, spec: LaunchSpec) -> dict[str, str]:
        return {TOOL_LABEL: "1", **spec.marks()}

    def _create_kwargs(self, spec: LaunchSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            name=container_name(spec.study, spec.trial),
            command=[*self.command, *self._flags(spec).argv()],
            environment=self._environment(spec, cache=True),
            labels=self._labels(spec),
            volumes=self._binds(spec),
            shm_size=self.shm_size,
            ipc_mode=self.ipc_mode,
            network_mode=self.network,
            init=self.init,
            detach=True,
        )
        if self.network != "host":
            kwargs["ports"] = {f"{spec.port}/tcp": (spec.host, spec.port)}
        if self.gpu_runtime and spec.gpus:
            device_ids = [str(g) for g in spec.gpus]
            kwargs["device_requests"] = [docker.types.DeviceRequest(device_ids=device_ids, capabilities=[["gpu"]])]
        return kwargs

    def docker_run_options(self, spec: LaunchSpec, name: str, *, cache: bool = False) -> list[str]:
        """The options of `docker run -d` with the same settings as launch(), one per SDK argument (``cache``:
        with the shared compile cache, as a trial has it)."""
        options = ["-d", "--name", name]
        if self.init:
            options.append("--init")
        options += [f"--ipc={self.ipc_mode}", "--shm-size", self.shm_size, "--network", self.network]
        if self.network != "host":
            options += ["-p", f"{spec.host}:{spec.port}:{spec.port}"]
        for key, value in self._environment(spec, cache=cache).items():
            options += ["-e", f"{key}={value}"]
        if self.gpu_runtime and spec.gpus:
            options += ["--gpus", f'"device={",".join(map(str, spec.gpus))}"']
        for bind in self._binds(spec if cache else None):
            options += ["-v", bind]
        return options

    def docker_run_argv(self, spec: LaunchSpec) -> list[str]:
        """What launch() does, as one `docker run`: the first line of every trial's server.log."""
        options = self.docker_run_options(spec, container_name(spec.study, spec.trial), cache=True)
        return ["docker", "run", *options, self.image_ref(), *self.command, *self._flags(spec).argv()]

    # --- Launcher -----------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> DockerServer:
        kwargs = self._create_kwargs(spec)
        image = self.image_ref()
        if "device_requests" in kwargs:
            self._check_gpu_runtime()
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.compile_cache:  # made by us, not by the daemon (as root)
            self.compile_cache.prepare(self._cache_env(spec))
        with open(spec.log_path, "ab") as log:
            log.write(f"# {shlex.join(self.docker_run_argv(spec))}\n".encode())
        container = self._create(image, kwargs, spec)
        try:
            container.start()
        except _DOCKER_ERRORS as exc:
            _remove_quietly(container)
            message = _one_line(exc)
            if "could not select device driver" in message:
                raise LaunchError(f"the Docker daemon cannot give GPUs to containers ({message})") from None
            raise LaunchError(f"cannot start container {kwargs['name']}: {message}") from None
        thread = threading.Thread(
            target=_follow_logs, args=(container, spec.log_path), name=f"logs-{kwargs['name']}", daemon=True
        )
        thread.start()
        return DockerServer(spec=spec, ident=container.name or kwargs["name"], container=container, log_thread=thread)

    def _create(self, image: str, kwargs: dict[str, Any], spec: LaunchSpec) -> Container:
        containers = self.client.containers
        for attempt in (1, 2):
            try:
                return containers.create(image, **kwargs)
            except docker.errors.APIError as exc:
                # A leftover of this very trial (a resumed study after a crash) holds the name: ours to remove.
                if attempt == 1 and exc.status_code == 409 and self._remove_if_ours(kwargs["name"], spec.study):
                    continue
                raise LaunchError(f"cannot create container {kwargs['name']}: {_one_line(exc)}") from None
            except _DOCKER_ERRORS as exc:
                raise LaunchError(f"cannot create container {kwargs['name']}: {_one_line(exc)}") from None
        raise AssertionError("unreachable")

    def _remove_if_ours(self, name: str, study: str) -> bool:
        try:
            existing = self.client.containers.get(name)
        except _DOCKER_ERRORS:
            return False
        if existing.labels.get(STUDY_MARK) != study:
            return False
        _remove_quietly(existing)
        return True

    def _run_once(self, args: Sequence[str], timeout: float = 180) -> tuple[int, str]:
        """Run a command in a throwaway container of the image; returns its exit code and stdout."""
        image = self.image_ref()
        try:
            container = self.client.containers.run(
                image,
                command=list(args),
                environment=dict(self.env),
                volumes=self._binds(),
                network_mode=self.network,
                init=self.init,
                labels={TOOL_LABEL: "1"},
                detach=True,
            )
        except _DOCKER_ERRORS as exc:
            raise LaunchError(f"cannot run {shlex.join(args)} in {self.image}: {_one_line(exc)}") from None
        try:
            try:
                code = int(container.wait(timeout=timeout).get("StatusCode", -1))
            except requests.exceptions.RequestException:
                raise LaunchError(f"{shlex.join(args)} in {self.image} did not finish in {timeout:.0f} s") from None
            output = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if code != 0:
                output += container.logs(stdout=False, stderr=True).decode(errors="replace")
            return code, output
        finally:
            _remove_quietly(container)

    def flag_catalog(self) -> FlagCatalog:
        source = f"{self.image} {shlex.join(self.command)}"
        # Kept per pinned image, unless a folder of the host is mounted in it (launcher.volumes): its files, code
        # among them, may change with the image the same, so the help is read every time.
        keep = None if self.volumes else kept_image_help(self.image_ref(), self.command, self.env)
        return kept_or_read(keep, source, lambda: self._help(source))

    def _help(self, source: str) -> str:
        code, output = self._run_once([*self.command, "--help"])
        if code != 0 or "--port" not in output:
            tail = output.strip().splitlines()[-1:] or ["no output"]
            raise FlagCatalogError(f"{source} --help failed (exit {code}): {tail[0]}")
        return output

    def cleanup_orphans(self, study: str) -> list[str]:
        """Remove every container, running or exited, labelled as a server of ``study``."""
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{STUDY_MARK}={study}"})
        except _DOCKER_ERRORS as exc:
            raise LaunchError(f"cannot list containers: {_one_line(exc)}") from None
        for container in found:
            _remove_quietly(container)
        return sorted(f"container {c.name}" for c in found)

    def describe(self) -> dict[str, str]:
        # Cached: one throwaway container per study, not one per trial.
        if self._describe is None:
            try:
                code, output = self._run_once(["python3", "-c", "import sglang; print(sglang.__version__)"], 60)
                lines = output.strip().splitlines()
                version = lines[-1].strip() if code == 0 and lines else "unknown"
            except LaunchError:
                version = "unknown"
            self._describe = {
                "launcher": "docker",
                "image": self.image,
                "image_digest": self.image_ref(),
                "sglang_version": version,
                "command": shlex.join(self.command),
            }
        return dict(self._describe)

    def deploy_script(self, spec: LaunchSpec) -> str:
        # Its own name, so running it never replaces a container of a study in progress; and no study labels,
        # so cleanup_orphans of a later run of the study leaves the deployment alone.
        name = f"{container_name(spec.study, spec.trial)}-deploy"
        q = shlex.quote
        defaults = {"HOST": spec.host, "PORT": str(spec.port)}
        if self.gpu_runtime and spec.gpus:
            defaults["GPUS"] = ",".join(map(str, spec.gpus))
        # On the host network the server binds $HOST itself; on a bridge it binds 0.0.0.0 and -p publishes $HOST.
        options = one_per_line(
            shell_args(
                self.docker_run_options(spec, name), {"--gpus": '"\\"device=$GPUS\\""', "-p": '"$HOST:$PORT:$PORT"'}
            ),
            prefix="-",
        )
        head = " ".join(q(a) for a in [self.image_ref(), *self.command])
        flags = one_per_line(
            shell_args(
                self._flags(spec).argv(),
                {"--port": '"$PORT"', **({"--host": '"$HOST"'} if self.network == "host" else {})},
            )
        )
        # export.py's header sets -euo pipefail, so a failed `docker run` stops the script before the echo.
        lines = [
            *deploy_defaults(defaults),
            f"docker rm -f {q(name)} 2>/dev/null || true",
            " \\\n  ".join(["docker run", *options, head, *flags]),
            f"echo {q(f'started {name}; follow its log with: docker logs -f {name}')}",
        ]
        return "\n".join(lines) + "\n"


def _remove_quietly(container: Container) -> None:
    try:
        container.remove(force=True)
    except _DOCKER_ERRORS:
        pass


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())
