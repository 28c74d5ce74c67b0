"""NVML sampling, waiting for free GPUs, and trials scheduled on GPU slots.

This machine has no NVML: the real pynvml raises NVMLError_LibraryNotFound, which is the "no NVML" case. The
other cases replace pynvml's functions (the only boundary) with a fake whose memory follows the stand-in
servers of a study: a server's GPUs are the ones in its CUDA_VISIBLE_DEVICES, memory rises when it is
launched (weights, then --mem-fraction-static of the GPU) and falls when it is gone.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import optuna
import pynvml
import pytest
import yaml

from tests.conftest import write_run
from tuner.config.run import load_config
from tuner.config.space import load_space
from tuner.search.storage import open_storage
from tuner.search.study import Tuner
from tuner.serve import gpu
from tuner.sglang.flags import ServerFlags

MIB = gpu.MIB
TOTAL_MIB = 80 * 1024
IDLE_MIB = 500.0


class FakeNvml:
    """pynvml's functions for ``n`` GPUs. Memory is ``idle + extra`` plus what live servers of ``study`` use."""

    def __init__(self, n: int = 2, study: str | None = None):
        self.n = n
        self.study = study
        self.extra: dict[int, float] = {}  # scripted MiB per GPU (unit tests)
        self.holders: dict[int, list[tuple[int, float]]] = {}  # scripted (pid, MiB) per GPU
        self.env_seen: dict[int, dict[str, str]] = {}  # trial number -> the GPU env its server had
        self._lock = threading.Lock()
        self._cache: tuple[float, list] = (0.0, [])

    def install(self, monkeypatch) -> FakeNvml:
        for name, fn in {
            "nvmlInit": lambda: None,
            "nvmlDeviceGetCount": lambda: self.n,
            "nvmlDeviceGetHandleByIndex": self.handle,
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(
                used=int(self.used(h) * MIB), total=TOTAL_MIB * MIB, free=int((TOTAL_MIB - self.used(h)) * MIB)
            ),
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=80 if self._servers_on(h) else 0, memory=0),
            "nvmlDeviceGetPowerUsage": lambda h: 300_000 if self._servers_on(h) else 60_000,  # milliwatts
            "nvmlDeviceGetComputeRunningProcesses": self.processes,
        }.items():
            monkeypatch.setattr(pynvml, name, fn)
        gpu.reset()
        return self

    def handle(self, index: int):
        if not 0 <= index < self.n:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ("fake-gpu", index)

    def used(self, h) -> float:
        return IDLE_MIB + self.extra.get(h[1], 0.0) + sum(mib for _, mib in self._servers_on(h))

    def processes(self, h):
        procs = self.holders.get(h[1], []) + self._servers_on(h)
        return [SimpleNamespace(pid=pid, usedGpuMemory=int(mib * MIB)) for pid, mib in procs]

    def _servers_on(self, h) -> list[tuple[int, float]]:
        return [(pid, mib) for pid, gpus, mib in self._servers() if h[1] in gpus]

    def _servers(self) -> list[tuple[int, tuple[int, ...], float]]:
        """Live server processes (group leaders) marked with the study: (pid, GPUs, MiB on each GPU)."""
        if self.study is None:
            return []
        with self._lock:
            now = time.monotonic()
            if now - self._cache[0] < 0.03:
                return self._cache[1]
            found = []
            mark = f"SGLANG_TUNER_STUDY={self.study}".encode()
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    if mark not in environ:
                        continue
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                except OSError:
                    continue
                if stat[0] == "Z" or int(stat[2]) != int(pid):  # dead, or the server's own child
                    continue
                env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
                gpus = tuple(int(g) for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip())
                self.env_seen[int(env["SGLANG_TUNER_TRIAL"])] = {
                    k: env.get(k, "") for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
                }
                mfs = float(argv[argv.index("--mem-fraction-static") + 1]) if "--mem-fraction-static" in argv else 0.85
                # Like SGLang: --mem-fraction-static of the whole GPU, for as long as the server lives.
                found.append((int(pid), gpus, mfs * TOTAL_MIB - IDLE_MIB))
            self._cache = (now, found)
            return found


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNvml().install(monkeypatch)
    yield fake
    gpu.reset()


def _no_nvml_library():
    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


@pytest.fixture
def no_nvml(monkeypatch):
    gpu.reset()
    if gpu.nvml_available(quiet=True):  # a GPU host: NVML fails to load the way it does on a CPU machine
        monkeypatch.setattr(pynvml, "nvmlInit", _no_nvml_library)
    gpu.reset()
    yield
    gpu.reset()


# -- NVML absent


def test_without_nvml_it_says_so_once_and_samples_nothing(no_nvml, caplog):
    caplog.set_level(logging.WARNING, logger="tuner.serve.gpu")
    for _ in range(3):
        with gpu.GpuSampler((0, 1), interval_s=0.01) as sampler:
            sampler.sample_now()
        assert sampler.gpus == ()
        assert sampler.stats().record() == {}
    assert gpu.used_mib((0,)) == {}
    assert gpu.wait_until_free((0,), {}, timeout_s=0.1) == 0.0
    gpu.check_indices([0, 7])  # nothing to check against: not an error
    notices = [r for r in caplog.records if "NVML is not available" in r.getMessage()]
    assert len(notices) == 1 and "Not Found" in notices[0].getMessage()


def test_without_nvml_a_trial_still_runs(no_nvml, tmp_path, unique_study, caplog):
    caplog.set_level(logging.WARNING, logger="tuner.serve.gpu")
    cfg = load_config(
        write_run(
            tmp_path,
            study=unique_study,
            trials=1,
            objective={"max_gpu_memory_fraction": 0.9},
            workload={"concurrency": [2]},
        )
    )
    tuner = Tuner(cfg)
    tuner.prepare()
    [warning] = [w for w in tuner.warnings if "NVML" in w]
    assert "max_gpu_memory_fraction cannot be checked" in warning
    study = tuner.run()
    [t] = study.trials
    assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["failure_class"] == "none"
    assert t.user_attrs["feasible"] is True
    assert not [k for k in t.user_attrs if k.startswith("gpu_")]
    assert not (Path(t.user_attrs["trial_dir"]) / "gpu.csv").exists()
    assert not [r for r in caplog.records if "NVML" in r.getMessage()]  # the Tuner's warning is the one notice


# -- the numbers


def _samples(spec: dict[int, list[tuple[str, float, float, float]]], total: dict[int, float]) -> list[gpu.Sample]:
    out = []
    for g, rows in spec.items():
        for i, (phase, used, util, power) in enumerate(rows):
            out.append(gpu.Sample(i * 0.1, phase, g, used, total[g], util, power))
    return out


def test_peak_mean_and_after_startup_arithmetic(tmp_path):
    samples = _samples(
        {
            0: [
                ("startup", 100, 0, 50),
                ("startup", 400, 0, 60),
                ("startup", 600, 10, 70),
                ("benchmark", 700, 80, 200),
                ("benchmark", 900, 90, 300),
                ("benchmark", 800, 70, 250),
                ("stopping", 200, 0, 60),
            ],
            1: [
                ("startup", 50, 0, 40),
                ("startup", 300, 0, 50),
                ("startup", 1900, 0, 50),  # a startup spike
                ("startup", 300, 0, 50),
                ("benchmark", 500, 40, 100),
                ("benchmark", 700, 60, 140),
            ],
        },
        total={0: 1000.0, 1: 4000.0},
    )
    stats = gpu.stats_of(samples)
    d0, d1 = stats.devices
    assert (d0.peak_used_mib, d0.peak_used_mib_benchmark, d0.mean_used_mib_benchmark, d0.used_mib_after_startup) == (
        900,
        900,
        800,
        600,
    )
    assert (d0.mean_util_pct_benchmark, d0.mean_power_w_benchmark) == (80, 250)
    assert (d1.peak_used_mib, d1.peak_used_mib_benchmark, d1.mean_used_mib_benchmark, d1.used_mib_after_startup) == (
        1900,
        700,
        600,
        300,
    )
    assert d0.peak_used_fraction == 0.9 and d1.peak_used_fraction == 1900 / 4000
    # The trial: memory of the fullest GPU, headroom of the fullest GPU by fraction, util averaged, power summed.
    assert stats.peak_used_mib == 1900 and stats.peak_used_mib_benchmark == 900
    assert stats.mean_used_mib_benchmark == 800 and stats.used_mib_after_startup == 600
    assert stats.peak_used_fraction == 0.9 and stats.total_mib == 1000
    assert stats.mean_util_pct_benchmark == 65 and stats.mean_power_w_benchmark == 370
    rec = stats.record()
    assert rec["gpu_peak_used_mib"] == 1900 and rec["gpu_peak_used_fraction"] == 0.9
    assert rec["gpu_mean_used_mib_benchmark"] == 800 and rec["gpu_used_mib_after_startup"] == 600
    assert [d["gpu"] for d in rec["gpu_devices"]] == [0, 1] and rec["gpu_devices"][1]["peak_used_mib"] == 1900

    stats.write_csv(tmp_path / "gpu.csv")
    with open(tmp_path / "gpu.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["t_s", "phase", "gpu", "used_mib", "total_mib", "util_pct", "power_w"]
    assert len(rows) == len(samples)
    assert rows[4] == {
        "t_s": "0.400",
        "phase": "benchmark",
        "gpu": "0",
        "used_mib": "900.0",
        "total_mib": "1000.0",
        "util_pct": "90",
        "power_w": "300.0",
    }
    assert gpu.stats_of([]).record() == {}


def wait_for_sample(sampler: gpu.GpuSampler, phase: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(s.phase == phase for s in sampler.stats().samples):
        assert time.monotonic() < deadline, f"the sampler's thread took no {phase} sample in {timeout} s"
        time.sleep(0.01)


def test_sampler_tags_phases_with_fake_nvml(fake_nvml):
    sampler = gpu.GpuSampler((0, 1), interval_s=0.02)
    # GPU 0 holds 2000 MiB while starting and 6000 MiB under load; GPU 1 stays idle.
    fake_nvml.used = lambda h: IDLE_MIB + ((6000 if sampler.phase == "benchmark" else 2000) if h[1] == 0 else 0)
    with sampler:
        wait_for_sample(sampler, "startup")  # the thread's own, not only the one taken at the phase change
        sampler.sample_now()
        with sampler._lock:  # between two rounds, as a trial changes phase: no round reads one and tags the other
            sampler.phase = "benchmark"
        wait_for_sample(sampler, "benchmark")
    stats = sampler.stats()
    assert {s.phase for s in stats.samples} == {"startup", "benchmark"}
    assert {s.gpu for s in stats.samples} == {0, 1}
    assert stats.used_mib_after_startup == 2500 and stats.peak_used_mib == 6500
    assert stats.mean_used_mib_benchmark == 6500 and stats.total_mib == TOTAL_MIB
    assert stats.devices[1].peak_used_mib == IDLE_MIB
    assert stats.mean_power_w_benchmark == 120  # 60 W idle on each of the two GPUs: no server here


# -- waiting for free GPUs


def test_wait_until_free_returns_once_memory_is_back(fake_nvml):
    fake_nvml.extra[0] = 30_000
    threading.Timer(0.4, lambda: fake_nvml.extra.pop(0)).start()
    waited = gpu.wait_until_free((0, 1), {0: IDLE_MIB, 1: IDLE_MIB}, timeout_s=5, poll_s=0.05)
    assert 0.35 < waited < 2


def test_wait_until_free_times_out_naming_the_processes(fake_nvml):
    fake_nvml.extra[1] = 30_000
    fake_nvml.holders[1] = [(os.getpid(), 30_000), (999_999_999, 12)]
    t0 = time.monotonic()
    with pytest.raises(gpu.GpuNotFree) as err:
        gpu.wait_until_free((0, 1), {0: IDLE_MIB, 1: IDLE_MIB}, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - t0 < 2
    text = str(err.value)
    assert "GPU 1: 30500 MiB used" in text and "GPU 0" not in text
    assert f"pid {os.getpid()} {Path('/proc/self/comm').read_text().strip()} (30000 MiB)" in text
    assert "pid 999999999 (12 MiB)" in text


def test_gpu_indices_are_checked(fake_nvml):
    gpu.check_indices([0, 1])
    with pytest.raises(gpu.GpuError, match=r"no GPU 5 \(NVML sees 2 GPUs\)"):
        gpu.check_indices([0, 5])


# -- GPUs per trial


def _space(tmp_path: Path, params: dict, fixed: dict | None = None, gpus_per_trial: str | None = None) -> Path:
    doc = {"fixed": fixed or {}, "params": params}
    if gpus_per_trial:
        doc["gpus_per_trial"] = gpus_per_trial
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_gpus_needed_follows_tp_and_dp(tmp_path):
    space = load_space(_space(tmp_path, {"tp-size": {"choices": [1, 2]}, "dp-size": {"choices": [1, 2]}}))
    assert space.gpus_needed(ServerFlags.of({})) == 1
    assert space.gpus_needed(ServerFlags.of({"tp-size": 2, "dp-size": 2})) == 4
    assert space.gpus_needed(ServerFlags.of({"tp-size": 2, "dp-size": 2, "enable-dp-attention": True})) == 2
    assert space.most_gpus() == 4
    explicit = load_space(_space(tmp_path, {"tp-size": {"choices": [1, 2]}}, gpus_per_trial="tp-size"))
    assert explicit.gpus_needed(ServerFlags.of({"tp-size": 2, "dp-size": 3})) == 2


def test_pool_serves_a_waiting_two_gpu_trial_before_later_one_gpu_trials():
    pool, cancel, order = gpu.GpuPool([0, 1]), threading.Event(), []
    first = pool.acquire(1, cancel)

    def want(n: int, name: str) -> None:
        got = pool.acquire(n, cancel)
        order.append((name, got))
        time.sleep(0.1)
        pool.release(got)

    big = threading.Thread(target=want, args=(2, "tp2"))
    big.start()
    wait_queued(pool, 1)
    small = threading.Thread(target=want, args=(1, "tp1"))  # GPU 1 is free, but tp2 asked first
    small.start()
    wait_queued(pool, 2)
    assert order == []
    pool.release(first)
    big.join(60)
    small.join(60)
    assert order == [("tp2", (0, 1)), ("tp1", (0,))]


def wait_queued(pool: gpu.GpuPool, n: int, timeout: float = 60) -> None:
    """Until n callers wait in the pool's queue: the order they asked in, whatever a loaded machine's threads do."""
    deadline = time.monotonic() + timeout
    while len(pool._queue) < n:
        assert time.monotonic() < deadline, f"{len(pool._queue)} of {n} callers queued after {timeout} s"
        time.sleep(0.005)


def test_sqlite_storage_takes_several_threads(tmp_path):
    cfg = load_config(write_run(tmp_path, study="locks"))
    study = optuna.create_study(storage=open_storage(cfg), study_name="locks")
    for i in range(24):  # queued trials: each must be handed to exactly one thread
        study.enqueue_trial({"x": i / 24})
    errors, asked = [], []

    def work() -> None:
        try:
            for i in range(6):
                t = study.ask()
                asked.append(t.number)
                t.suggest_float("x", 0, 1)
                t.set_user_attr("i", i)
                study._storage.set_trial_system_attr(t._trial_id, "constraints", [0.0])
                study.get_trials(deepcopy=False)
                study.tell(t, 1.0)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(study.trials) == 24
    assert sorted(asked) == list(range(24))


# -- one study, two GPUs


def _port_pair() -> int:
    """A port p with p+1 free too, below the ephemeral range (client connections cannot take them meanwhile)."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports in a row")


def _window(t: optuna.trial.FrozenTrial) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(t.user_attrs["started_at"]), datetime.fromisoformat(t.user_attrs["ended_at"])


def _overlap(a, b) -> bool:
    (a0, a1), (b0, b1) = _window(a), _window(b)
    return a0 < b1 and b0 < a1


def test_trials_run_one_per_gpu_and_tp2_alone(monkeypatch, tmp_path, unique_study):
    fake = FakeNvml(n=2, study=unique_study).install(monkeypatch)
    space = _space(
        tmp_path,
        {"tp-size": {"choices": [1, 2, 4]}, "mem-fraction-static": {"choices": [0.8, 0.95]}},
        gpus_per_trial="tp-size * dp-size",
    )
    cfg = load_config(
        write_run(
            tmp_path,
            study=unique_study,
            space=space,
            trials=5,  # the six queued: the tp 4 one is predicted and takes none of the budget
            gpus=[0, 1],
            baseline=False,
            objective={"max_gpu_memory_fraction": 0.9},
            launcher={"port": _port_pair()},
            env={"SGLANG_STANDIN_STARTUP_S": "0.8"},
            workload={"concurrency": [4], "num_prompts": 24, "output_len": 64},
        )
    )
    tuner = Tuner(cfg)
    study = tuner.prepare()
    assert any("up to 4 GPUs" in w for w in tuner.warnings)
    for tp, mfs in ((1, 0.8), (1, 0.95), (2, 0.8), (4, 0.8), (1, 0.8), (1, 0.8)):
        study.enqueue_trial({"tp-size": tp, "mem-fraction-static": mfs})
    try:
        tuner.run()
    finally:
        gpu.reset()
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    by = {t.number: t for t in trials}

    # tp 4 on two GPUs: recorded infeasible at once, never launched, and the study went on.
    t3 = by[3]
    assert t3.user_attrs["failure_class"] == "too_many_gpus" and t3.user_attrs["feasible"] is False
    assert "needs 4 GPUs" in t3.user_attrs["failure_detail"] and t3.user_attrs["gpus"] == []
    assert not (Path(t3.user_attrs["trial_dir"]) / "server.log").exists() and 3 not in fake.env_seen

    ran = [by[n] for n in (0, 1, 2, 4, 5)]
    assert all(t.user_attrs["failure_class"] == "none" for t in ran)
    # One trial per GPU, side by side, each on its own port and GPU (4 and 5 usually overlap too, but whether
    # 5 starts before 4 ends depends on how long recording trial 2 takes on a loaded machine).
    assert _overlap(by[0], by[1])
    for a, b in ((0, 1), (4, 5)):
        assert {tuple(by[a].user_attrs["gpus"]), tuple(by[b].user_attrs["gpus"])} == {(0,), (1,)} or not _overlap(
            by[a], by[b]
        )
    ports = {tuple(t.user_attrs["gpus"]): t.user_attrs["flags"]["port"] for t in ran}
    assert ports[(1,)] == ports[(0,)] + 1 and ports[(0, 1)] == ports[(0,)] == cfg.launcher.port
    # tp 2 holds both GPUs and overlaps nothing.
    assert by[2].user_attrs["gpus"] == [0, 1]
    assert not any(_overlap(by[2], by[n]) for n in (0, 1, 4, 5))
    # What each server process saw: its trial's GPUs, in NVML's (PCI bus) order.
    for t in ran:
        seen = fake.env_seen[t.number]
        assert seen["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, t.user_attrs["gpus"]))
        assert seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

    # GPU numbers in the record and gpu.csv; the memory headroom constraint from --mem-fraction-static.
    for t in ran:
        a = t.user_attrs
        mfs = t.params["mem-fraction-static"]
        assert a["gpu_peak_used_mib"] == pytest.approx(mfs * TOTAL_MIB, rel=0.01)
        assert a["gpu_used_mib_after_startup"] == pytest.approx(mfs * TOTAL_MIB, rel=0.01)
        assert a["gpu_total_mib"] == TOTAL_MIB and a["gpu_mean_util_pct_benchmark"] == 80
        assert len(a["gpu_devices"]) == len(a["gpus"])
        assert a["feasible"] is (mfs < 0.9)
        constraint = t.system_attrs["constraints"][-1]
        assert constraint == pytest.approx(a["gpu_peak_used_fraction"] - 0.9)
        with open(Path(a["trial_dir"]) / "gpu.csv") as f:
            rows = list(csv.DictReader(f))
        assert {int(r["gpu"]) for r in rows} == set(a["gpus"])
        assert {r["phase"] for r in rows} >= {"startup", "benchmark"}
        assert max(float(r["used_mib"]) for r in rows) == pytest.approx(a["gpu_peak_used_mib"], abs=0.1)
    assert by[2].user_attrs["gpu_mean_power_w_benchmark"] == 600  # two GPUs at 300 W


def test_a_gpu_taken_between_the_wait_and_the_launch_reads_as_gpu_busy(monkeypatch, tmp_path, unique_study):
    """SGLang 0.5.17 words a GPU taken by someone else exactly like a too-low --mem-fraction-static; the memory in
    use at the launch itself tells them apart."""
    fake = FakeNvml(n=1).install(monkeypatch)
    real_wait = gpu.wait_until_free
    waits = []

    def wait_then_someone_takes_the_gpu(*args, **kwargs):
        fake.extra.clear()
        waited = real_wait(*args, **kwargs)
        waits.append(waited)
        if len(waits) == 1:  # first trial only: another process grabs 20 GiB right after our wait
            fake.extra[0] = 20_000
        return waited

    monkeypatch.setattr(gpu, "wait_until_free", wait_then_someone_takes_the_gpu)
    space = _space(tmp_path, {"schedule-policy": {"choices": ["fcfs"]}})
    cfg = load_config(
        write_run(
            tmp_path,
            study=unique_study,
            space=space,
            trials=2,
            gpus=[0],
            env={"SGLANG_STANDIN_FAULTS": "oom_kv_startup:"},
        )
    )
    try:
        study = Tuner(cfg).run()
    finally:
        gpu.reset()
    classes = [t.user_attrs["failure_class"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert classes == ["gpu_busy", "oom_kv"]
