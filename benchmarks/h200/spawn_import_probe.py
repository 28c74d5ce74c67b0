"""What SGLang's scheduler process does while it imports, measured on the GPU machine (issue 22).

A scheduler is started by multiprocessing's spawn: a fresh interpreter imports the launching module
(sglang.launch_server, as __mp_main__) and the module of its target (sglang.srt.managers.scheduler) before it runs.
This script does the same imports the same way and prints how long they took, whether they initialised CUDA or
made a CUDA context (NVML lists this process), which environment variables they read as a stand-by's recorder
counts them (a waiting interpreter that did these imports ahead may serve a scheduler only if none of the variables
that differ was read), and the file descriptors left open. Run on the GPU machine from the repository root after
`source .gpu/env.sh`, with the root on PYTHONPATH:
    python3 benchmarks/h200/spawn_import_probe.py
"""

import importlib
import os
import runpy
import sys
import time

from tuner.serve.prestart_boot import record_reads

# The product's own recorder: what a stand-by would be judged on (a scan of the whole environment is no read).
_, reads = record_reads()
# What SGLang's launching process sets before it starts its scheduler (engine._set_envs_and_config), as a spawned
# scheduler has them from birth.
for key, value in {
    "CUDA_DEVICE_MAX_CONNECTIONS": "8",
    "CUDA_MODULE_LOADING": "AUTO",
    "TRTLLM_ENABLE_PDL": "1",
    "NCCL_CUMEM_ENABLE": "0",
    "NCCL_NVLS_ENABLE": "0",
    "CUTE_DSL_LOG_LEVEL": "30",
    "CUTE_DSL_LOG_TO_CONSOLE": "1",
    "SGLANG_RUN_ID": "sglang-run-probe",
    "SGLANG_TUNER_TRIAL": "probe",  # the tuner's own mark, new each trial (a read of it refused the H200's stand-bys)
}.items():
    os.environ[key] = value
reads.clear()
t0 = time.monotonic()
MAIN, TARGET = "sglang.launch_server", "sglang.srt.managers.scheduler"  # on the GPU machine only
runpy.run_module(MAIN, run_name="__mp_main__", alter_sys=True)
t1 = time.monotonic()
importlib.import_module(TARGET)
t2 = time.monotonic()
torch = sys.modules["torch"]

print(f"imports: sglang.launch_server {t1 - t0:.1f} s, then the scheduler module {t2 - t1:.1f} s")
print(f"torch.cuda initialised while importing: {torch.cuda.is_initialized()}")
sglang_reads = sorted(k for k in reads if not k.startswith("SGLANG_"))
print(f"environment variables read: {len(reads)}; {sum(k.startswith('SGLANG_') for k in reads)} SGLANG_*; others:")
print("  " + " ".join(sglang_reads))
print(
    "  read and set by SGLang's launcher (where):",
    sorted(
        (k, reads[k])
        for k in reads.keys()
        & {
            "CUDA_DEVICE_MAX_CONNECTIONS",
            "CUDA_MODULE_LOADING",
            "TRTLLM_ENABLE_PDL",
            "NCCL_CUMEM_ENABLE",
            "NCCL_NVLS_ENABLE",
            "CUTE_DSL_LOG_LEVEL",
            "CUTE_DSL_LOG_TO_CONSOLE",
            "SGLANG_RUN_ID",
            "SGLANG_TUNER_TRIAL",
            "PROMETHEUS_MULTIPROC_DIR",
            "CUDA_VISIBLE_DEVICES",
        }
    ),
)
fds = {}
for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
print(f"open fds ({len(fds)}): {fds}")
try:
    pynvml = importlib.import_module("pynvml")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
    print(f"NVML compute processes on GPU 0: {pids}; this one ({os.getpid()}) holds a context: {os.getpid() in pids}")
except Exception as e:  # a probe reports what it could not see
    print(f"NVML: {e}")
print(f"modules loaded: {len(sys.modules)}")
