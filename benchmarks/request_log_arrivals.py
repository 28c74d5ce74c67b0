"""Replay a request log's gaps, or fit a gamma burstiness to them? Measured on a generated bursty log.

The log: bursts of ``--burst`` requests ~20 ms apart, ~3 s of quiet between bursts (an on/off process, what a
batch job or a retrying client sends). Each way of scaling it to ``--scale`` times its rate gives one level of
``--n`` arrivals; for each we report the coefficient of variation of the gaps (what a gamma fit matches: its
shape is 1/CV^2), the index of dispersion of counts (variance / mean of the number of arrivals in windows of
10 and 100 mean gaps: 1 for Poisson, and for a gamma renewal process about CV^2 in long windows only), and the
most arrivals in any window of 10 mean gaps (the peak a server's queue must absorb).

Ways: ``replay`` (tuner.bench.workload.log_arrivals: the log's gaps in order, scaled), ``gamma`` (bench_serving's
gamma arrivals with shape 1/CV^2 of the log's gaps, at the level's rate), ``poisson``.

Run: ``python benchmarks/request_log_arrivals.py`` (seconds; numpy only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tuner.bench.request_log import log_traffic
from tuner.bench.workload import Level, arrival_times, log_arrivals


def bursty_log(path: Path, n: int, burst: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gaps = np.where(np.arange(n) % burst == 0, rng.exponential(3.0, n), rng.exponential(0.02, n))
    gaps[0] = 0.0
    t = 1_767_225_600.0 + np.cumsum(gaps)
    with path.open("w") as f:
        for i in range(n):
            usage = {"prompt_tokens": int(rng.integers(20, 800)), "completion_tokens": int(rng.integers(8, 300))}
            f.write(json.dumps({"timestamp": float(t[i]), "usage": usage}) + "\n")


def shape(at: np.ndarray) -> dict[str, float]:
    gaps = np.diff(at)
    mean = gaps.mean()
    out = {"rate": 1 / mean, "cv": gaps.std() / mean}
    for w in (10, 100):
        counts = np.histogram(at, bins=np.arange(0, at[-1] + w * mean, w * mean))[0]
        out[f"idc{w}"] = counts.var() / counts.mean()
    counts = np.histogram(at, bins=np.arange(0, at[-1] + 10 * mean, 10 * mean))[0]
    out["peak10"] = float(counts.max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        bursty_log(path, args.n, args.burst, args.seed)
        t = log_traffic(str(path))
    rate = args.scale * t.rate
    times = np.cumsum(t.gaps_s)
    level = Level(1, 1, 1, args.n, rate)
    rows = {
        "log (its own rate)": times,
        f"replay at {args.scale:g}x": log_arrivals(t, args.n, rate),
        f"gamma fit at {args.scale:g}x": arrival_times(level, args.seed, 1 / t.gap_cv**2),
        f"poisson at {args.scale:g}x": arrival_times(level, args.seed),
    }
    print(f"log: {args.n} requests, {t.rate:.2f} req/s, gap CV {t.gap_cv:.2f} (gamma shape {1 / t.gap_cv**2:.3f})")
    print("| arrivals | req/s | gap CV | IDC 10 gaps | IDC 100 gaps | peak in 10 mean gaps |")
    print("|---|---|---|---|---|---|")
    for name, at in rows.items():
        s = shape(at)
        print(
            f"| {name} | {s['rate']:.2f} | {s['cv']:.2f} | {s['idc10']:.1f} | {s['idc100']:.1f} | {s['peak10']:.0f} |"
        )


if __name__ == "__main__":
    main()
