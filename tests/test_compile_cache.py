"""The compile caches shared by every trial on a machine (tuner/serve/compile_cache.py): the process launcher's
environment, the Docker launcher's mount, whether each trial found them warm, and deploy-best.sh without them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, tune, wait_healthy, write_run
from tuner.config.run import load_config
from tuner.search.storage import load_existing_study
from tuner.serve.compile_cache import CACHE_VARS, CompileCache, kernel_files
from tuner.serve.launcher import LaunchSpec
from tuner.serve.process import ProcessLauncher
from tuner.sglang.flags import ServerFlags
from tuner.trial.record import TrialRecord


def _spec(tmp_path: Path, env: dict | None = None) -> LaunchSpec:
    port = free_port()
    flags = ServerFlags.of({"model-path": "standin/qwen3-8b", "host": "127.0.0.1", "port": port})
    return LaunchSpec(flags, env or {}, tmp_path / "server.log", "127.0.0.1", port, (), "s", 0)


def test_every_cache_variable_points_into_the_one_folder_unless_the_user_set_it(tmp_path, monkeypatch):
    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = CompileCache.at(tmp_path / "cc")
    launcher = ProcessLauncher(["sglang"], {"TRITON_CACHE_DIR": "/mine/triton"}, compile_cache=cache)
    env = launcher.environment(_spec(tmp_path))
    assert env["TRITON_CACHE_DIR"] == "/mine/triton"  # launcher.env wins
    assert env["FLASHINFER_WORKSPACE_BASE"] == str(tmp_path / "cc" / "flashinfer")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    assert env["TVM_FFI_CACHE_DIR"] == str(tmp_path / "cc" / "tvm-ffi")
    # The tuner's own environment (say /work/shared/gpu/env.sh's exports) wins too.
    monkeypatch.setenv("TVM_FFI_CACHE_DIR", "/shared/jit")
    assert launcher.environment(_spec(tmp_path))["TVM_FFI_CACHE_DIR"] == "/shared/jit"
    # Switched off: nothing added.
    off = ProcessLauncher(["sglang"]).environment(_spec(tmp_path))
    assert "FLASHINFER_WORKSPACE_BASE" not in off and "TORCHINDUCTOR_CACHE_DIR" not in off
    # deploy-best.sh starts cold, as on another machine: it never names the folder.
    assert str(tmp_path / "cc") not in launcher.deploy_script(_spec(tmp_path))


def test_kernel_files_are_the_files_in_the_folders(tmp_path):
    cache = CompileCache.at(tmp_path / "cc")
    folders = [tmp_path / "cc" / sub for sub in CACHE_VARS.values()]
    assert kernel_files(folders) == frozenset()  # not made yet
    cache.prepare(cache.env(inherited={}))
    assert kernel_files(folders) == frozenset()  # empty folders are not kernels
    (tmp_path / "cc" / "triton" / "ab" / "k.bin").parent.mkdir()
    (tmp_path / "cc" / "triton" / "ab" / "k.bin").write_bytes(b"x")
    (tmp_path / "cc" / "tvm-ffi" / "rope.so").write_bytes(b"x")
    assert kernel_files(folders) == {
        str(tmp_path / "cc" / "triton" / "ab" / "k.bin"),
        str(tmp_path / "cc" / "tvm-ffi" / "rope.so"),
    }
    launcher = ProcessLauncher(["sglang"], dict.fromkeys(CACHE_VARS, "/elsewhere"), compile_cache=cache)
    assert launcher.compile_cache_folders(_spec(tmp_path)) is None  # nothing of ours is shared


def test_caches_the_environment_points_elsewhere_count_too(tmp_path, monkeypatch):
    """The H200 kit's env.sh points three of the four caches at its own folders: the kernels a server builds
    there are its builds too, though the tuner's own folder (inductor's only) stays empty."""
    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = CompileCache.at(tmp_path / "cc")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "kit-triton"))
    launcher = ProcessLauncher(["sglang"], {"TVM_FFI_CACHE_DIR": str(tmp_path / "kit-jit")}, compile_cache=cache)
    assert launcher.compile_cache_folders(_spec(tmp_path)) == [
        tmp_path / "kit-triton",
        tmp_path / "cc" / "flashinfer",
        tmp_path / "cc" / "inductor",
        tmp_path / "kit-jit",
    ]


@pytest.mark.timeout(240)
def test_only_the_first_trial_builds_kernels(tmp_path, unique_study):
    """The stand-in builds kernels (SGLANG_STANDIN_JIT_S) into TRITON_CACHE_DIR once; the second trial finds them.
    A file already there (a GPU kit's own builds, as on the H200, whose first trial was called warm while it built
    for 101 s) does not make the first trial's caches warm: what it built does."""
    (tmp_path / "compile-cache" / "triton").mkdir(parents=True)
    (tmp_path / "compile-cache" / "triton" / "kit-kernel.bin").write_bytes(b"x")
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=2,
        env={"SGLANG_STANDIN_JIT_S": "2.0", "SGLANG_STANDIN_FAULTS": ""},
        workload={"concurrency": [1], "num_prompts": 4},
    )
    done = tune("start", "-c", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    first, second = (
        TrialRecord.of(t) for t in sorted(load_existing_study(load_config(run)).trials, key=lambda t: t.number)
    )
    assert (first.compile_cache_warm, second.compile_cache_warm) == (False, True)
    assert (first.kernels_built, second.kernels_built) == (1, 0)
    assert (tmp_path / "compile-cache" / "triton" / "standin-kernels.bin").exists()
    assert (first.startup.cuda_graph_s or 0) >= 2.0 > (second.startup.cuda_graph_s or 0)
    status = tune("status", "-c", str(run)).stdout
    assert "(caches cold: built 1 file)" in status and "(caches warm)" in status


@pytest.mark.timeout(240)
def test_switched_off_in_the_run_file(tmp_path, unique_study):
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": ""},
        workload={"concurrency": [1], "num_prompts": 4},
        launcher={"compile_cache": False},
    )
    done = tune("start", "-c", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    (trial,) = load_existing_study(load_config(run)).trials
    record = TrialRecord.of(trial)
    assert record.compile_cache_warm is None and record.kernels_built is None
    assert not (tmp_path / "compile-cache").exists()


def _docker_works() -> bool:
    try:
        return subprocess.run(["docker", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


IMAGE = "sglang-tuner-standin:i22b-compile-cache"


@pytest.mark.skipif(not os.environ.get("CI") and not _docker_works(), reason="no Docker engine here")
@pytest.mark.timeout(300)
def test_docker_mounts_the_folder_at_the_same_paths_and_deploy_best_leaves_it_out(tmp_path, unique_study):
    subprocess.run(
        ["bash", str(ROOT / "tests/docker/build_image.sh")], check=True, timeout=240, env={**os.environ, "IMAGE": IMAGE}
    )
    from tuner.serve.docker import DockerLauncher

    cache = CompileCache.at(tmp_path / "cc")
    launcher = DockerLauncher(IMAGE, compile_cache=cache)
    env = {"SGLANG_STANDIN_STARTUP_S": "0.5", "SGLANG_STANDIN_SPEED": "0.01", "SGLANG_STANDIN_FAULTS": ""}
    spec = LaunchSpec(**{**_spec(tmp_path, env).__dict__, "study": unique_study})
    kwargs = launcher._create_kwargs(spec)
    root = str(tmp_path / "cc")
    assert f"{root}:{root}" in kwargs["volumes"]
    assert kwargs["environment"]["TRITON_CACHE_DIR"] == f"{root}/triton"
    assert launcher.compile_cache_folders(spec) == [tmp_path / "cc"]
    server = launcher.launch(spec)
    try:
        wait_healthy(spec.base_url)
    finally:
        server.stop(5)
    # The container built its kernels into the host's folder, through the mount.
    assert kernel_files([tmp_path / "cc"]) == {str(tmp_path / "cc" / "triton" / "standin-kernels.bin")}
    assert root not in launcher.deploy_script(spec)


def test_the_folder_is_beside_the_run_file_when_relative_and_in_the_home_by_default(tmp_path):
    (tmp_path / "space.yaml").write_text("params: {}\n")
    run = tmp_path / "run.yaml"
    run.write_text("study: x\nspace: space.yaml\nmodel: {path: m}\nlauncher: {compile_cache_dir: cc}\n")
    assert load_config(run, check=False).launcher.compile_cache_dir == str(tmp_path / "cc")
    run.write_text("study: x\nspace: space.yaml\nmodel: {path: m}\n")
    launcher = load_config(run, check=False).launcher
    assert launcher.compile_cache and launcher.compile_cache_dir == "~/.cache/sglang-tuner/compile"
