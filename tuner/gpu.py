"""GPU truth from NVML: memory, utilisation and power sampled through a trial, and a free GPU before the next.

pynvml (nvidia-ml-py) is the only boundary: tests replace its functions, and a machine without NVML gets one
notice and trials that run without GPU numbers.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

log = logging.getLogger(__name__)
MIB = 1024 * 1024
_init_lock = threading.Lock()
_state: dict[str, bool | str] = {}


def nvml_available() -> bool:
    """Initialise NVML once per process; say once why it is not there."""
    with _init_lock:
        if "ok" not in _state:
            try:
                pynvml.nvmlInit()
                _state["ok"] = True
            except pynvml.NVMLError as exc:
                _state["ok"] = False
                _state["why"] = str(exc)
                log.warning("NVML is not available (%s): trials run without GPU memory numbers", exc)
        return bool(_state["ok"])


@dataclass(frozen=True)
class Sample:
    t: float
    phase: str
    gpu: int
    used_mib: float
    total_mib: float
    util_pct: float
    power_w: float


@dataclass
class GpuStats:
    """Per trial: the numbers that go into its record (the samples go to gpu.csv)."""

    peak_used_mib: float = 0.0
    mean_used_mib_benchmark: float = 0.0
    used_mib_after_startup: float = 0.0
    total_mib: float = 0.0
    mean_util_pct_benchmark: float = 0.0
    mean_power_w_benchmark: float = 0.0
    samples: list[Sample] = field(default_factory=list, repr=False)

    @property
    def peak_used_fraction(self) -> float:
        return self.peak_used_mib / self.total_mib if self.total_mib else 0.0

    def record(self) -> dict[str, float]:
        if not self.samples:
            return {}  # no NVML here: absent, not zero
        return {
            "gpu_peak_used_mib": round(self.peak_used_mib, 1),
            "gpu_mean_used_mib_benchmark": round(self.mean_used_mib_benchmark, 1),
            "gpu_used_mib_after_startup": round(self.used_mib_after_startup, 1),
            "gpu_total_mib": round(self.total_mib, 1),
            "gpu_peak_used_fraction": round(self.peak_used_fraction, 4),
            "gpu_mean_util_pct_benchmark": round(self.mean_util_pct_benchmark, 1),
            "gpu_mean_power_w_benchmark": round(self.mean_power_w_benchmark, 1),
        }

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "phase", "gpu", "used_mib", "total_mib", "util_pct", "power_w"])
            for s in self.samples:
                w.writerow([f"{s.t:.3f}", s.phase, s.gpu, f"{s.used_mib:.1f}", f"{s.total_mib:.1f}",
                            f"{s.util_pct:.0f}", f"{s.power_w:.1f}"])


def read(gpu: int) -> tuple[float, float, float, float]:
    """(used MiB, total MiB, utilisation %, power W) of one GPU, by NVML index."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except pynvml.NVMLError:
        util = 0.0
    try:
        power = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    except pynvml.NVMLError:
        power = 0.0
    return mem.used / MIB, mem.total / MIB, util, power


class GpuSampler:
    """Samples the trial's GPUs in a thread from launch to stop; ``phase`` tags each sample."""

    def __init__(self, gpus: tuple[int, ...], interval_s: float = 0.1):
        self.gpus = gpus if nvml_available() else ()
        self.interval_s = interval_s
        self.phase = "startup"
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> "GpuSampler":
        if self.gpus:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            self._stop.wait(self.interval_s)

    def sample_now(self) -> None:
        t = time.monotonic() - self._t0
        for gpu in self.gpus:
            try:
                used, total, util, power = read(gpu)
            except pynvml.NVMLError:
                continue
            self._samples.append(Sample(t, self.phase, gpu, used, total, util, power))

    def stats(self) -> GpuStats:
        samples = list(self._samples)
        if not samples:
            return GpuStats()
        # Per instant, the trial's GPUs together: tp=2 uses both, and headroom is about the fullest one.
        peak = max(s.used_mib for s in samples)
        total = max(s.total_mib for s in samples)
        bench = [s for s in samples if s.phase == "benchmark"]
        startup = [s for s in samples if s.phase == "startup"]
        return GpuStats(
            peak_used_mib=peak,
            mean_used_mib_benchmark=_mean(s.used_mib for s in bench),
            used_mib_after_startup=max((s.used_mib for s in startup[-len(self.gpus):]), default=0.0),
            total_mib=total,
            mean_util_pct_benchmark=_mean(s.util_pct for s in bench),
            mean_power_w_benchmark=_mean(s.power_w for s in bench),
            samples=samples,
        )


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


class GpuNotFree(RuntimeError):
    pass


def used_mib(gpus: tuple[int, ...]) -> dict[int, float]:
    if not gpus or not nvml_available():
        return {}
    return {g: read(g)[0] for g in gpus}


def wait_until_free(gpus: tuple[int, ...], idle_mib: dict[int, float], timeout_s: float = 60.0,
                    slack_mib: float = 1024.0) -> None:
    """Block until each GPU is back to its idle memory (what it used before the study began)."""
    if not gpus or not nvml_available():
        return
    deadline = time.monotonic() + timeout_s
    while True:
        busy = {g: u for g, u in used_mib(gpus).items() if u > idle_mib.get(g, 0.0) + slack_mib}
        if not busy:
            return
        if time.monotonic() > deadline:
            holders = ", ".join(f"GPU {g}: {u:.0f} MiB used by {processes_on(g) or 'unknown processes'}"
                                for g, u in busy.items())
            raise GpuNotFree(f"GPU memory not released after {timeout_s:.0f} s ({holders})")
        time.sleep(0.2)


def processes_on(gpu: int) -> str:
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        return ""
    return ", ".join(f"pid {p.pid} ({(p.usedGpuMemory or 0) / MIB:.0f} MiB)" for p in procs)
