"""GPU truth from NVML: memory, utilisation and power sampled through a trial, and a free GPU before the next.

pynvml (nvidia-ml-py) is the only boundary: tests replace its functions, and a machine without NVML gets one
notice and trials that run without GPU numbers.

GPU indices are NVML indices (PCI bus order). The tuner launches servers with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
so that ``CUDA_VISIBLE_DEVICES`` means the same GPUs as the ones sampled here.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

from tuner.errors import Cancelled, SetupError, TunerError
from tuner.serve.poller import Poller

log = logging.getLogger(__name__)
MIB = 1024 * 1024
# Memory above a GPU's idle level that still counts as "free": the driver and other tools wobble by some MiB.
FREE_SLACK_MIB = 1024.0
# What a GPU with no process on it may show as used: NVML's v1 memory query counts the driver's reservation
# (615 MiB on the H200, docs/h200.md), which grows with the card. More than this, or any compute process, is
# someone else's: a server measured beside it gets a fraction of the KV pool (3,363 tokens instead of ~900k).
IDLE_MAX_MIB = 1024.0
IDLE_MAX_FRACTION = 0.01
_init_lock = threading.Lock()
_state: dict[str, bool | str] = {}


class GpuError(TunerError):
    """A GPU index NVML does not know, and similar machine problems (reported as one line)."""


class GpuNotFree(TunerError):
    """The trial's GPUs did not return to their idle memory in time; names the processes holding them."""


def nvml_available(*, quiet: bool = False) -> bool:
    """Initialise NVML once per process; say once why it is not there.

    ``quiet``: the caller reports the absence itself (the Tuner does, as one of its warnings), so this
    module never logs it.
    """
    with _init_lock:
        if "ok" not in _state:
            try:
                pynvml.nvmlInit()
                _state["ok"] = True
            except pynvml.NVMLError as exc:
                _state["ok"] = False
                _state["why"] = str(exc) or type(exc).__name__
                if not quiet:
                    log.warning("NVML is not available (%s): trials run without GPU memory numbers", _state["why"])
        return bool(_state["ok"])


def unavailable_reason() -> str | None:
    """Why NVML is not there (None when it is)."""
    return None if nvml_available(quiet=True) else str(_state.get("why", "unknown"))


def reset() -> None:
    """Forget the NVML state (tests install or remove a fake NVML between cases)."""
    with _init_lock:
        _state.clear()


def check_indices(gpus: tuple[int, ...] | list[int]) -> None:
    """Refuse GPU indices NVML does not have, before any launch. Without NVML nothing can be checked."""
    if not gpus or not nvml_available():
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
    except (pynvml.NVMLError, AttributeError):
        count = None
    missing = []
    for g in gpus:
        if count is not None and g >= count:
            missing.append(g)
            continue
        try:
            pynvml.nvmlDeviceGetHandleByIndex(g)
        except pynvml.NVMLError:
            missing.append(g)
    if missing:
        seen = f"NVML sees {count} GPU{'s' if count != 1 else ''}" if count is not None else "NVML does not know them"
        raise GpuError(f"--gpus {','.join(map(str, gpus))}: no GPU {', '.join(map(str, missing))} ({seen})")


@dataclass(frozen=True)
class Sample:
    t: float
    phase: str
    gpu: int
    used_mib: float
    total_mib: float
    util_pct: float
    power_w: float


@dataclass(frozen=True)
class DeviceStats:
    """One GPU over one trial."""

    gpu: int
    peak_used_mib: float
    peak_used_mib_benchmark: float
    mean_used_mib_benchmark: float
    used_mib_after_startup: float
    total_mib: float
    mean_util_pct_benchmark: float
    mean_power_w_benchmark: float

    @property
    def peak_used_fraction(self) -> float:
        return self.peak_used_mib / self.total_mib if self.total_mib else 0.0

    def record(self) -> dict[str, float]:
        return {
            "gpu": self.gpu,
            "peak_used_mib": round(self.peak_used_mib, 1),
            "peak_used_mib_benchmark": round(self.peak_used_mib_benchmark, 1),
            "mean_used_mib_benchmark": round(self.mean_used_mib_benchmark, 1),
            "used_mib_after_startup": round(self.used_mib_after_startup, 1),
            "total_mib": round(self.total_mib, 1),
            "peak_used_fraction": round(self.peak_used_fraction, 4),
            "mean_util_pct_benchmark": round(self.mean_util_pct_benchmark, 1),
            "mean_power_w_benchmark": round(self.mean_power_w_benchmark, 1),
        }


@dataclass
class GpuStats:
    """Per trial: the numbers that go into its record (the samples go to gpu.csv).

    With several GPUs (tp x dp > 1) the memory numbers are the fullest GPU's (headroom is about the fullest
    one), utilisation is the mean over the GPUs and power their sum; ``devices`` holds each GPU's own numbers.
    """

    peak_used_mib: float = 0.0
    peak_used_mib_benchmark: float = 0.0
    mean_used_mib_benchmark: float = 0.0
    used_mib_after_startup: float = 0.0
    total_mib: float = 0.0
    mean_util_pct_benchmark: float = 0.0
    mean_power_w_benchmark: float = 0.0
    peak_used_fraction_: float | None = None
    devices: list[DeviceStats] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list, repr=False)

    @property
    def peak_used_fraction(self) -> float:
        if self.peak_used_fraction_ is not None:
            return self.peak_used_fraction_
        return self.peak_used_mib / self.total_mib if self.total_mib else 0.0

    def record(self) -> dict:
        if not self.samples:
            return {}  # no NVML here: absent, not zero
        return {
            "gpu_peak_used_mib": round(self.peak_used_mib, 1),
            "gpu_peak_used_mib_benchmark": round(self.peak_used_mib_benchmark, 1),
            "gpu_mean_used_mib_benchmark": round(self.mean_used_mib_benchmark, 1),
            "gpu_used_mib_after_startup": round(self.used_mib_after_startup, 1),
            "gpu_total_mib": round(self.total_mib, 1),
            "gpu_peak_used_fraction": round(self.peak_used_fraction, 4),
            "gpu_mean_util_pct_benchmark": round(self.mean_util_pct_benchmark, 1),
            "gpu_mean_power_w_benchmark": round(self.mean_power_w_benchmark, 1),
            "gpu_devices": [d.record() for d in self.devices],
        }

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "phase", "gpu", "used_mib", "total_mib", "util_pct", "power_w"])
            for s in self.samples:
                w.writerow(
                    [
                        f"{s.t:.3f}",
                        s.phase,
                        s.gpu,
                        f"{s.used_mib:.1f}",
                        f"{s.total_mib:.1f}",
                        f"{s.util_pct:.0f}",
                        f"{s.power_w:.1f}",
                    ]
                )


def stats_of(samples: list[Sample]) -> GpuStats:
    """Startup is from launch to ready, benchmark from ready to the last level; peak covers the whole trial."""
    if not samples:
        return GpuStats()
    devices = []
    for g in sorted({s.gpu for s in samples}):
        mine = [s for s in samples if s.gpu == g]
        bench = [s for s in mine if s.phase == "benchmark"]
        startup = [s for s in mine if s.phase == "startup"]
        devices.append(
            DeviceStats(
                gpu=g,
                peak_used_mib=max(s.used_mib for s in mine),
                peak_used_mib_benchmark=max((s.used_mib for s in bench), default=0.0),
                mean_used_mib_benchmark=_mean(s.used_mib for s in bench),
                # The last sample before the benchmark: the server's footprint once loaded (weights, KV pool, graphs).
                used_mib_after_startup=startup[-1].used_mib if startup else 0.0,
                total_mib=max(s.total_mib for s in mine),
                mean_util_pct_benchmark=_mean(s.util_pct for s in bench),
                mean_power_w_benchmark=_mean(s.power_w for s in bench),
            )
        )
    fullest = max(devices, key=lambda d: (d.peak_used_fraction, d.peak_used_mib))
    return GpuStats(
        peak_used_mib=max(d.peak_used_mib for d in devices),
        peak_used_mib_benchmark=max(d.peak_used_mib_benchmark for d in devices),
        mean_used_mib_benchmark=max(d.mean_used_mib_benchmark for d in devices),
        used_mib_after_startup=max(d.used_mib_after_startup for d in devices),
        total_mib=fullest.total_mib,
        mean_util_pct_benchmark=_mean(d.mean_util_pct_benchmark for d in devices),
        mean_power_w_benchmark=sum(d.mean_power_w_benchmark for d in devices),
        peak_used_fraction_=max(d.peak_used_fraction for d in devices),
        devices=devices,
        samples=list(samples),
    )


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


class GpuSampler(Poller):
    """Samples the trial's GPUs in a thread from launch to stop; ``phase`` tags each sample."""

    def __init__(self, gpus: tuple[int, ...], interval_s: float = 0.1):
        super().__init__("nvml-sampler", interval_s, join_s=2)
        self.gpus = tuple(gpus) if gpus and nvml_available() else ()
        self.phase = "startup"
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def __enter__(self) -> GpuSampler:
        if self.gpus:
            self.sample_now()  # the launch sample, not one interval later
            self.start()
        return self

    def tick(self) -> None:
        self.sample_now()

    def sample_now(self) -> None:
        """One sample of each GPU, tagged with the phase as it is now (the trial calls this at phase changes)."""
        with self._lock:  # the thread and the trial both sample: keep each round's samples together
            phase = self.phase
            t = time.monotonic() - self._t0
            for gpu in self.gpus:
                try:
                    used, total, util, power = read(gpu)
                except pynvml.NVMLError:
                    continue
                self._samples.append(Sample(t, phase, gpu, used, total, util, power))

    def stats(self) -> GpuStats:
        with self._lock:
            samples = list(self._samples)
        return stats_of(samples)


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


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def used_mib(gpus: tuple[int, ...]) -> dict[int, float]:
    """Used memory of each GPU now; a GPU NVML cannot read right now is left out."""
    if not gpus or not nvml_available():
        return {}
    out = {}
    for g in gpus:
        try:
            out[g] = read(g)[0]
        except pynvml.NVMLError:
            continue
    return out


def total_mib(gpus: tuple[int, ...]) -> float | None:
    """The smallest total memory among these GPUs (what a trial spread over them can count on); None without NVML."""
    if not gpus or not nvml_available():
        return None
    try:
        return min(read(g)[1] for g in gpus)
    except pynvml.NVMLError:
        return None


def wait_until_free(
    gpus: tuple[int, ...],
    idle_mib: dict[int, float],
    timeout_s: float = 60.0,
    slack_mib: float = FREE_SLACK_MIB,
    poll_s: float = 0.2,
) -> float:
    """Block until each GPU is back to its idle memory (what it used before the study began).

    Returns the seconds waited. Raises GpuNotFree naming the processes NVML sees on the GPUs still in use.
    """
    if not gpus or not nvml_available():
        return 0.0
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        busy = {g: u for g, u in used_mib(gpus).items() if u > idle_mib.get(g, 0.0) + slack_mib}
        if not busy:
            return time.monotonic() - t0
        if time.monotonic() >= deadline:
            holders = "; ".join(
                f"GPU {g}: {u:.0f} MiB used (idle {idle_mib.get(g, 0.0):.0f} MiB) by "
                f"{processes_on(g) or 'processes NVML cannot name (another container or user?)'}"
                for g, u in sorted(busy.items())
            )
            raise GpuNotFree(
                f"GPU memory not released {timeout_s:.0f} s after the last server stopped: {holders}. "
                f"Stop those processes or choose other --gpus"
            )
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Holder:
    """A compute process NVML lists on a GPU."""

    gpu: int
    pid: int
    name: str  # empty when the process is in another PID namespace (a container) or gone
    mib: float | None  # None when NVML does not say (no permission, MIG)

    def __str__(self) -> str:
        mem = f"{self.mib:.0f} MiB" if self.mib is not None else "? MiB"
        return f"pid {self.pid}{' ' + self.name if self.name else ''} ({mem})"

    def record(self) -> dict:
        return {
            "gpu": self.gpu,
            "pid": self.pid,
            "name": self.name,
            "mib": round(self.mib, 1) if self.mib is not None else None,
        }


def holders(gpus: tuple[int, ...]) -> list[Holder]:
    """The compute processes on these GPUs now (none without NVML)."""
    if not gpus or not nvml_available():
        return []
    out = []
    for g in gpus:
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(g))
        except pynvml.NVMLError:
            continue
        for p in procs:
            mem = getattr(p, "usedGpuMemory", None)
            out.append(
                Holder(g, p.pid, _proc_name(p.pid), mem / MIB if isinstance(mem, (int, float)) and mem >= 0 else None)
            )
    return out


def processes_on(gpu: int) -> str:
    """'pid 123 python (30000 MiB), ...' for the compute processes NVML lists on one GPU."""
    return ", ".join(map(str, holders((gpu,))))


@dataclass(frozen=True)
class GpuInUse:
    """A GPU that something other than an idle driver holds: its processes, or memory no process accounts for."""

    gpu: int
    used_mib: float
    holders: tuple[Holder, ...]

    def __str__(self) -> str:
        who = ", ".join(map(str, self.holders)) or "processes NVML cannot name (another container or user?)"
        return f"GPU {self.gpu}: {self.used_mib:.0f} MiB used by {who}"


def in_use(gpus: tuple[int, ...]) -> list[GpuInUse]:
    """The GPUs among ``gpus`` that are not idle now: any compute process, or more memory than an idle GPU shows."""
    if not gpus or not nvml_available():
        return []
    out = []
    procs = holders(gpus)
    for g in gpus:
        try:
            used, total, _, _ = read(g)
        except pynvml.NVMLError:
            continue
        mine = tuple(h for h in procs if h.gpu == g)
        if mine or used > max(IDLE_MAX_MIB, IDLE_MAX_FRACTION * total):
            out.append(GpuInUse(g, used, mine))
    return out


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # in another PID namespace (a container) or gone
