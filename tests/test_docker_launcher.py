"""The Docker launcher against a real engine: the stand-in server in containers (tests/docker/build_image.sh),
exit codes, server.log, labels, orphans after a crash of the tuner, deploy-best.sh, clear setup errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import docker
import httpx
import pytest

from conftest import ROOT, free_port, tune, wait_healthy, write_run, write_space
from tuner.serve.docker import DockerLauncher, container_name
from tuner.serve.launcher import STUDY_MARK, TRIAL_MARK, LaunchError, LaunchSpec
from tuner.sglang.failures import OOM_KV, Phase, classify
from tuner.sglang.flags import ServerFlags


def _docker_works() -> bool:
    try:
        return subprocess.run(["docker", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# In CI (tests/services.sh starts dockerd) a missing engine is a failure, never a quiet skip.
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not _docker_works(),
    reason="`docker version` fails: no Docker engine here (start one with tests/docker/start_dockerd.sh)",
)

IMAGE = "sglang-tuner-standin:local"
FAST = {
    "SGLANG_STANDIN_SPEED": "0.01",
    "SGLANG_STANDIN_STARTUP_S": "0.5",
    "SGLANG_STANDIN_COMPILE_S": "0.2",
    "SGLANG_STANDIN_FAULTS": "",
}


@pytest.fixture(scope="module", autouse=True)
def standin_image():
    # Idempotent and well under a second when the image is current; CI has built it already.
    subprocess.run(["bash", str(ROOT / "tests/docker/build_image.sh")], check=True, timeout=120)


@pytest.fixture
def study(unique_study):
    yield unique_study
    DockerLauncher(IMAGE).cleanup_orphans(unique_study)  # whatever a failed test left


def make_spec(tmp_path: Path, study: str, trial: int = 0, env: dict | None = None, **flags) -> LaunchSpec:
    port = free_port()
    base = {"model-path": "standin/qwen3-8b", "host": "127.0.0.1", "port": port}
    return LaunchSpec(
        flags=ServerFlags.of({**base, **flags}),
        env={**FAST, **(env or {})},
        log_path=tmp_path / str(trial) / "server.log",
        host="127.0.0.1",
        port=port,
        gpus=(),
        study=study,
        trial=trial,
    )


def wait_exit(server, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (code := server.exit_code()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert code is not None, "the container did not exit"
    return code


def containers_of(study: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={STUDY_MARK}={study}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_launch_serves_carries_labels_and_stop_removes_the_container(tmp_path, study):
    launcher = DockerLauncher(IMAGE)
    spec = make_spec(tmp_path, study, trial=3, **{"schedule-policy": "lof", "mem-fraction-static": 0.87})
    t0 = time.monotonic()
    server = launcher.launch(spec)
    wait_healthy(spec.base_url)
    ready_s = time.monotonic() - t0
    assert server.ident == container_name(study, 3)
    assert server.exit_code() is None

    labels = server.container.labels
    assert labels[STUDY_MARK] == study and labels[TRIAL_MARK] == "3" and labels["sglang-tuner"] == "1"
    attrs = server.container.attrs["HostConfig"]
    assert attrs["Init"] is True and attrs["IpcMode"] == "host" and attrs["NetworkMode"] == "host"
    # The flags reached the server: it reports them back like SGLang's /get_server_info.
    info = httpx.get(f"{spec.base_url}/get_server_info", timeout=2).json()
    assert info["schedule_policy"] == "lof" and info["mem_fraction_static"] == 0.87

    t1 = time.monotonic()
    code = server.stop(grace_s=5)
    stop_s = time.monotonic() - t1
    assert code in (0, 143), code  # SIGTERM reached the server through --init: no 10 s wait, no SIGKILL
    assert stop_s < 3, f"stop took {stop_s:.1f} s"
    assert containers_of(study) == []
    log = spec.log_path.read_text()
    assert log.startswith("# docker run -d --name " + container_name(study, 3))
    assert "--schedule-policy lof" in log.splitlines()[0]
    assert "Load weight end" in log  # the server's own lines follow
    print(f"healthy after {ready_s:.2f} s, stopped in {stop_s:.2f} s")


def test_bridge_network_publishes_the_port_and_mounts_volumes(tmp_path, study):
    (tmp_path / "hf").mkdir()
    launcher = DockerLauncher(IMAGE, network="bridge", hf_cache=tmp_path / "hf", volumes=[f"{tmp_path}:/data:ro"])
    spec = make_spec(tmp_path, study)
    server = launcher.launch(spec)
    try:
        wait_healthy(spec.base_url)  # published on 127.0.0.1:<port>; the server listens on 0.0.0.0 inside
        binds = server.container.attrs["HostConfig"]["Binds"]
        assert f"{tmp_path}/hf:/root/.cache/huggingface" in binds and f"{tmp_path}:/data:ro" in binds
        assert "--host 0.0.0.0" in spec.log_path.read_text().splitlines()[0]
    finally:
        server.stop(grace_s=2)


def test_segfault_gives_139_and_the_log(tmp_path, study):
    spec = make_spec(tmp_path, study, env={"SGLANG_STANDIN_FAULTS": "segfault:"})
    server = DockerLauncher(IMAGE).launch(spec)
    assert wait_exit(server) == 139
    assert server.stop(grace_s=2) == 139
    assert containers_of(study) == []
    log = spec.log_path.read_text()
    assert "server_args=" in log and "Segmentation fault" in log


def test_oom_at_startup_is_killed_with_its_message_logged(tmp_path, study):
    spec = make_spec(tmp_path, study, env={"SGLANG_STANDIN_FAULTS": "oom_kv_startup:"})
    server = DockerLauncher(IMAGE).launch(spec)
    code = wait_exit(server)
    assert code == 137  # the stand-in, like SGLang, SIGKILLs itself after the scheduler's sigquit
    server.stop(grace_s=2)
    assert "Loaded weights leave no GPU memory" in spec.log_path.read_text()
    assert containers_of(study) == []


def test_an_exit_is_reported_only_with_the_whole_log_written(tmp_path, study, monkeypatch):
    """A trial classifies a dead server from server.log as soon as exit_code() says it died; a log stream that
    lags the container (here held back 1 s) must not leave the OOM's lines out of that classification."""
    from tuner.serve import docker as docker_launcher

    follow = docker_launcher._follow_logs
    monkeypatch.setattr(docker_launcher, "_follow_logs", lambda *a: (time.sleep(1.0), follow(*a)))
    spec = make_spec(tmp_path, study, env={"SGLANG_STANDIN_FAULTS": "oom_kv_startup:"})
    server = DockerLauncher(IMAGE).launch(spec)
    try:
        assert wait_exit(server) == 137
        assert "Loaded weights leave no GPU memory" in spec.log_path.read_text()
        assert classify(phase=Phase.STARTUP, exit_code=137, log=spec.log_path.read_text()) == OOM_KV
    finally:
        server.stop(grace_s=2)


def test_cleanup_orphans_removes_a_dropped_container(tmp_path, study):
    spec = make_spec(tmp_path, study, trial=1)
    server = DockerLauncher(IMAGE).launch(spec)
    name = server.ident
    del server  # the run that started it "crashed": nothing will stop it
    wait_healthy(spec.base_url)
    other = make_spec(tmp_path, f"{study}-other", trial=1)
    keep = DockerLauncher(IMAGE).launch(other)
    try:
        removed = DockerLauncher(IMAGE).cleanup_orphans(study)
        assert removed == [f"container {name}"]
        assert containers_of(study) == []
        assert containers_of(f"{study}-other") == [keep.ident]  # another study's server is left alone
    finally:
        keep.stop(grace_s=2)


def test_cleanup_orphans_after_the_tuner_was_killed_with_sigkill(tmp_path, study):
    spec = make_spec(tmp_path, study, trial=2)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tuner.sglang.flags import ServerFlags
        from tuner.serve.launcher import LaunchSpec
        from tuner.serve.docker import DockerLauncher
        spec = LaunchSpec(flags=ServerFlags.of({spec.flags.as_dict()!r}), env={spec.env!r},
                          log_path=Path({str(spec.log_path)!r}), host="127.0.0.1", port={spec.port},
                          gpus=(), study={study!r}, trial=2)
        server = DockerLauncher({IMAGE!r}).launch(spec)
        print(server.ident, flush=True)
        time.sleep(60)
    """)
    tuner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        name = tuner.stdout.readline().strip()
        wait_healthy(spec.base_url)
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait(30)
    # A container is no child of the tuner: it outlives it, and only the labels find it again.
    assert containers_of(study) == [name]
    httpx.get(f"{spec.base_url}/health", timeout=2).raise_for_status()
    assert DockerLauncher(IMAGE).cleanup_orphans(study) == [f"container {name}"]
    assert containers_of(study) == []


def test_deploy_script_runs_as_is(tmp_path, study):
    launcher = DockerLauncher(IMAGE, env={"OMP_NUM_THREADS": "10", "TORCH_CUDA_ARCH_LIST": "9.0;12.0+PTX"})
    spec = make_spec(tmp_path, study, trial=5, **{"schedule-policy": "lof", "enable-torch-compile": True})
    body = launcher.deploy_script(spec)
    image_id = launcher.describe()["image_digest"]
    assert image_id.startswith("sha256:") and image_id in body  # pinned, not the tag
    assert "'TORCH_CUDA_ARCH_LIST=9.0;12.0+PTX'" in body and "--init" in body
    script = tmp_path / "deploy-best.sh"
    script.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)  # export.py's header does the same
    name = f"{container_name(study, 5)}-deploy"
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert f"docker logs -f {name}" in done.stdout
        wait_healthy(spec.base_url)
        info = httpx.get(f"{spec.base_url}/get_server_info", timeout=2).json()
        assert info["schedule_policy"] == "lof" and info["enable_torch_compile"] is True
        # Run again, it replaces its own container; it carries no study label, so cleanup leaves it alone.
        assert subprocess.run(["bash", str(script)], capture_output=True, timeout=30).returncode == 0
        assert launcher.cleanup_orphans(study) == []
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_flag_catalog_and_describe_read_the_image(study, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no help kept from an earlier test
    launcher = DockerLauncher(IMAGE)
    catalog = launcher.flag_catalog()
    assert catalog.check("schedule-policy", "lof") is None
    assert catalog.check("schedule-policy", "nope") is not None
    assert catalog.check("enable-torch-compile", True) is None
    assert "mem-fraction-static" in catalog.flags
    info = launcher.describe()
    assert info["launcher"] == "docker" and info["image"] == IMAGE
    assert info["sglang_version"] == "0.5.17"
    # Cached: one throwaway container per study, not one per trial; and the image's help is kept, so the next
    # study on it (another launcher) reads its flags with no container at all.
    monkeypatch.setattr(
        docker.models.containers.ContainerCollection,
        "run",
        lambda *a, **k: pytest.fail("another container was run"),
    )
    assert launcher.describe() == info
    assert DockerLauncher(IMAGE).flag_catalog().flags == catalog.flags
    # Another environment in the container is another build, and a folder of the host mounted in it may hold code
    # that changes with the image the same: either way its help is read in a container.
    for other in (
        DockerLauncher(IMAGE, env={"PYTHONPATH": "/elsewhere"}),
        DockerLauncher(IMAGE, volumes=["/srv:/srv"]),
    ):
        with pytest.raises(pytest.fail.Exception, match="another container was run"):
            other.flag_catalog()


def test_missing_image_is_a_clear_error(tmp_path, study):
    launcher = DockerLauncher("sglang-tuner-no-such-image:nope")
    with pytest.raises(LaunchError, match=r"^image sglang-tuner-no-such-image:nope not found locally: docker pull"):
        launcher.launch(make_spec(tmp_path, study))
    with pytest.raises(LaunchError, match="not found locally"):
        launcher.flag_catalog()


def test_unreachable_daemon_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(LaunchError, match=r"cannot reach the Docker daemon at unix:///nonexistent.sock: is dockerd"):
        DockerLauncher(IMAGE, base_url="unix:///nonexistent.sock").launch(make_spec(tmp_path, "x"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(LaunchError, match=r"cannot reach the Docker daemon at unix:///nonexistent.sock"):
        DockerLauncher(IMAGE).cleanup_orphans("x")


def test_gpus_without_an_nvidia_runtime_is_a_clear_error(tmp_path, study):
    launcher = DockerLauncher(IMAGE, gpu_runtime=True)
    if "nvidia" in (launcher.client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has the nvidia runtime")
    spec = make_spec(tmp_path, study)
    spec = LaunchSpec(**{**spec.__dict__, "gpus": (0,)})
    with pytest.raises(LaunchError, match="no nvidia runtime"):
        launcher.launch(spec)
    assert containers_of(study) == []


def test_a_short_study_through_the_cli_with_the_docker_launcher(tmp_path, unique_study, request):
    from tuner.config.run import load_config
    from tuner.search.storage import load_existing_study

    # Trial 0 is the baseline (SGLang's defaults); the sampler then picks; the fault rules make a low
    # --mem-fraction-static run out of KV memory and lof segfault otherwise: each trial's class follows from its flags.
    space = write_space(
        tmp_path / "space.yaml",
        params={
            "schedule-policy": {"choices": ["fcfs", "lof"]},
            "mem-fraction-static": {"low": 0.1, "high": 0.9, "step": 0.05},
        },
    )
    faults = "oom_kv_startup:mem-fraction-static<0.5;segfault:schedule-policy==lof,mem-fraction-static>=0.5"
    # The study's own tag, so that moving it later (below) touches no other test's image.
    tag = f"sglang-tuner-standin:{unique_study.lower()}"
    subprocess.run(["docker", "tag", IMAGE, tag], check=True)
    request.addfinalizer(lambda: subprocess.run(["docker", "rmi", tag], capture_output=True))
    run = write_run(
        tmp_path,
        study=unique_study,
        space=space,
        trials=4,
        env={**FAST, "SGLANG_STANDIN_FAULTS": faults},
        launcher={
            "kind": "docker",
            "image": tag,
            "command": ["python3", "-m", "sglang.launch_server"],
            "gpu_runtime": False,
        },
        sampler={"seed": 3, "n_startup_trials": 4},
        workload={"concurrency": [4], "num_prompts": 8, "output_len": 8, "warmup_requests": 1},
    )
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr + done.stdout

    trials = load_existing_study(load_config(run)).trials
    assert len(trials) == 4
    seen = set()
    for t in trials:
        flags = t.user_attrs["flags"]
        if flags.get("mem-fraction-static", 0.85) < 0.5:
            expected, code = "oom_kv", 137
        elif flags.get("schedule-policy") == "lof":
            expected, code = "segfault", 139
        else:
            expected, code = "none", None
        assert t.user_attrs["failure_class"] == expected, (t.number, flags, t.user_attrs.get("failure_detail"))
        if code is not None:
            assert t.user_attrs["exit_code"] == code
        assert t.user_attrs["launcher"]["launcher"] == "docker"
        assert t.user_attrs["launcher"]["sglang_version"] == "0.5.17"
        log = (Path(load_config(run).study_dir) / str(t.number) / "server.log").read_text()
        assert log.startswith("# docker run")
        seen.add(expected)
        print(f"trial {t.number}: {expected} in {t.user_attrs['total_s']:.1f} s")
    assert seen == {"none", "segfault", "oom_kv"}, seen  # the seed is chosen so that all three occur
    assert containers_of(unique_study) == []

    # The exported script pins the image that was measured, by its Id, not by its movable tag: here the tag has
    # moved to another image since the study ran.
    measured = DockerLauncher(IMAGE).image_ref()
    assert {t.user_attrs["launcher"]["image_digest"] for t in trials} == {measured}
    subprocess.run(["docker", "tag", "sglang-tuner-pybase:local", tag], check=True)
    moved = DockerLauncher(tag).image_ref()
    assert moved != measured
    exported = tune("export", "-c", str(run), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    script = (tmp_path / "export" / "deploy-best.sh").read_text()
    assert f"\n  {measured} python3 -m sglang.launch_server \\\n" in script and moved not in script


def test_deploy_script_takes_host_port_and_gpus_from_the_environment(tmp_path, study):
    # gpu_runtime: what a GPU host gets; the engine here has no GPU runtime, so `docker` is a recorder first.
    launcher = DockerLauncher(IMAGE, gpu_runtime=True, network="bridge")
    spec = make_spec(tmp_path, study, trial=7, **{"schedule-policy": "lof"})
    spec = LaunchSpec(spec.flags, spec.env, spec.log_path, spec.host, spec.port, (0,), study, 7)
    script = tmp_path / "deploy-best.sh"
    script.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + launcher.deploy_script(spec))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(tmp_path / 'argv.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOST": "0.0.0.0", "PORT": "8123", "GPUS": "1,2"}
    assert subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=30).returncode == 0
    run = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()][-1]
    assert run[run.index("--gpus") + 1] == '"device=1,2"'
    assert run[run.index("-p") + 1] == "0.0.0.0:8123:8123" and run[run.index("--port") + 1] == "8123"
    assert run[run.index("--host") + 1] == "0.0.0.0"  # inside the container, on a bridge
    # Unset, the measured values.
    assert (
        subprocess.run(
            ["bash", str(script)], env={**env, "HOST": "", "PORT": "", "GPUS": ""}, capture_output=True, timeout=30
        ).returncode
        == 0
    )
    run = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()][-1]
    assert run[run.index("--gpus") + 1] == '"device=0"' and run[run.index("--port") + 1] == str(spec.port)
    assert run[run.index("-p") + 1] == f"127.0.0.1:{spec.port}:{spec.port}"

    # And for real (host network, no GPUs here): the container serves on the port the environment names.
    real = DockerLauncher(IMAGE)
    spec = make_spec(tmp_path, study, trial=8)
    script.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + real.deploy_script(spec))
    port = free_port()
    name = f"{container_name(study, 8)}-deploy"
    try:
        done = subprocess.run(
            ["bash", str(script)], env={**os.environ, "PORT": str(port)}, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        wait_healthy(f"http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/get_server_info", timeout=2).json()["port"] == port != spec.port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_gpus_are_device_requests_and_the_deploy_script_asks_for_the_same(tmp_path, study):
    """The trial's GPUs reach the container as device requests; the `--gpus` of `docker run` (deploy-best.sh's) gives
    Docker the same ones.
    Compared on created (never started) containers: this daemon may have no nvidia runtime."""
    launcher = DockerLauncher(IMAGE, gpu_runtime=True)
    spec = LaunchSpec(**{**make_spec(tmp_path, study, trial=2).__dict__, "gpus": (0, 2)})
    kwargs = launcher._create_kwargs(spec)
    by_sdk = launcher.client.containers.create(launcher.image_ref(), **{**kwargs, "name": f"{kwargs['name']}-sdk"})
    options = launcher.docker_run_options(spec, f"{kwargs['name']}-cli")
    gpus = options[options.index("--gpus") + 1]
    # What deploy-best.sh hands `docker run` (test_deploy_script_takes_host_port_and_gpus_from_the_environment).
    assert gpus == '"device=0,2"'
    by_cli = subprocess.run(
        ["docker", "create", "--name", f"{kwargs['name']}-cli", "--gpus", gpus, IMAGE, "true"],
        capture_output=True,
        text=True,
    )
    try:
        assert by_cli.returncode == 0, by_cli.stderr
        cli = launcher.client.containers.get(f"{kwargs['name']}-cli")
        requests = by_sdk.attrs["HostConfig"]["DeviceRequests"]
        assert [(r["DeviceIDs"], r["Capabilities"]) for r in requests] == [(["0", "2"], [["gpu"]])]
        assert cli.attrs["HostConfig"]["DeviceRequests"] == requests
    finally:
        subprocess.run(["docker", "rm", "-f", f"{kwargs['name']}-sdk", f"{kwargs['name']}-cli"], capture_output=True)
