"""Build surfaces/h200-qwen3-8b-random.json from the H200 study written up in docs/h200.md.

That study ran before `tune record` existed and its database stayed on the GPU machine; what the repository
keeps is each trial's benchmark.csv (docs/h200/trial-N-benchmark.csv), the flags, startup seconds and NVML
peaks (docs/h200/status.txt, the `tune status` output), the stop seconds (docs/h200.md, "Overhead") and the
SGLang 0.5.17 --help of the same bundle (benchmarks/h200/sglang-0.5.17-help.txt, read on the H200 on
2026-12-02). Studies recorded since are turned into surfaces by `tune record`.

Recorded per trial as it was measured, except two numbers the write-up gives per group, not per trial:
- benchmark_s: the sum of the levels' measured durations (duration_s in benchmark.csv); the warm-up requests and
  cache flushes before each level (well under a second each at these lengths) are not in it.
- stop_s: 5.65 s for trials 0-3 (20 s grace, measured 5.3-6.0 s) and 1.15 s for trials 4-8 (measured 1.12-1.17 s).
Trial 7 was interrupted (the device call's time ran out) and says nothing about its flags: left out; trial 8
re-ran its parameters.

    python benchmarks/h200_surface.py        # rewrites the surface; run from the repository root
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner.config.run import RunConfig
from tuner.sglang.catalog import FlagCatalog
from tuner.trial.surface import (
    SHAPE_KEYS,
    Header,
    RecordedObjective,
    RecordedWorkload,
    Row,
    Surface,
    point_of,
    read_levels,
)

OUT = ROOT / "surfaces" / "h200-qwen3-8b-random.json"
FIXED = {
    "load-format": "dummy",
    "attention-backend": "triton",
    "sampling-backend": "pytorch",
    "grammar-backend": "none",
    "log-level": "info",
}  # search_spaces/h200-qwen3-8b.yaml, every trial


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def rows() -> list[Row]:
    lines = (ROOT / "docs/h200/status.txt").read_text().splitlines()[1:]
    out = []
    for line in lines:
        m = re.match(r"\s*(\d+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$", line)
        if not m:
            continue
        trial, state, cls, _, _, startup, peak, flags_text = m.groups()
        trial = int(trial)
        if state != "COMPLETE":
            continue
        assert cls == "none", f"trial {trial}: only successful trials are in docs/h200 (got {cls})"
        baseline = flags_text.strip() == "baseline (SGLang defaults)"
        tuned = {} if baseline else {k: _value(v) for k, v in re.findall(r"--([a-z0-9-]+) (\S+)", flags_text)}
        levels = read_levels(ROOT / f"docs/h200/trial-{trial}-benchmark.csv")
        out.append(
            Row(
                trial=trial,
                baseline=baseline,
                flags=point_of({**FIXED, **tuned}),
                levels=levels,
                startup_s=float(startup),
                benchmark_s=round(sum(lv.duration_s for lv in levels), 3),
                stop_s=5.65 if trial <= 3 else 1.15,
                gpu_peak_used_mib=float(peak),
            )
        )
    return out


def main() -> None:
    # runs/h200-qwen3-8b.yaml set only ISL, OSL and the levels: every other workload key was its default.
    defaults = RunConfig().to_dict()["workload"]
    shape = {k: defaults[k] for k in SHAPE_KEYS}
    catalog = FlagCatalog.from_help((ROOT / "benchmarks/h200/sglang-0.5.17-help.txt").read_text())
    header = Header(
        model="Qwen/Qwen3-8B",
        model_path="/tmp/sglrt/model-qwen3-8b",
        gpu_name="NVIDIA H200",
        gpu_memory_mib=143771.0,
        sglang_version="0.5.17",
        command=["python3", "-m", "sglang.launch_server"],
        workload=RecordedWorkload(
            input_len=512,
            output_len=128,
            concurrency=[1, 16, 64],
            shape=shape,
            description="random token ids, ignore_eos, 8/64/256 prompts per level, 2 warm-up "
            "requests and a cache flush before each level",
        ),
        objective=RecordedObjective(metrics=["output_throughput"], at_concurrency=64),
        date="2026-11-28",
        source="study h200-qwen3-8b (docs/h200.md)",
        space="search_spaces/h200-qwen3-8b.yaml",
        notes="Qwen3-8B config with dummy weights (--load-format dummy: real shapes, real speed); triton "
        "attention, driver 580.159.04, torch 2.11.0+cu130. Built by benchmarks/h200_surface.py.",
        catalog=list(catalog.flags.values()),
    )
    surface = Surface(header=header, rows=rows())
    surface.save(OUT)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(surface.rows)} rows, {len(header.catalog)} flags in the catalog")


if __name__ == "__main__":
    main()
