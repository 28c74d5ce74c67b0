"""Which launcher a run file asks for (process, Docker, replay), and the checks on the model path it names."""

from __future__ import annotations

from pathlib import Path

from tuner.config.run import RunConfig
from tuner.errors import SetupError
from tuner.serve.launcher import Launcher


def make_launcher(config: RunConfig) -> Launcher:
    if config.launcher.kind == "replay":
        from tuner.trial.replay import ReplayLauncher
        from tuner.trial.surface import Surface, SurfaceError

        surface = config.launcher.surface
        assert surface is not None  # LauncherConfig requires one for a replay
        try:
            return ReplayLauncher(
                Surface.load(surface),
                surface,
                prestart=config.launcher.prestart,
                prestart_spawned=config.launcher.prestart_spawned,
            )
        except SurfaceError as exc:
            raise SetupError(f"launcher.surface: {exc}") from None
    cache = None
    if config.launcher.compile_cache:
        from tuner.serve.compile_cache import CompileCache

        cache = CompileCache.at(config.launcher.compile_cache_dir)
    if config.launcher.kind == "docker":
        from tuner.serve.docker import DockerLauncher

        lc = config.launcher
        assert lc.image is not None  # LauncherConfig requires one for docker
        return DockerLauncher(
            image=lc.image,
            command=lc.command,
            env=lc.env,
            hf_cache=lc.hf_cache,
            volumes=lc.volumes,
            shm_size=lc.shm_size,
            gpu_runtime=lc.gpu_runtime,
            compile_cache=cache,
        )
    from tuner.serve.process import ProcessLauncher

    lc = config.launcher
    return ProcessLauncher(
        lc.command, lc.env, compile_cache=cache, prestart=lc.prestart, prestart_spawned=lc.prestart_spawned
    )


def looks_like_model_path(model: str) -> bool:
    try:
        path = Path(model).expanduser()
    except RuntimeError:  # ~someone who is no user here
        path = Path(model)
    return path.exists() or (model.count("/") == 1 and not model.startswith(("/", ".", "~")))
