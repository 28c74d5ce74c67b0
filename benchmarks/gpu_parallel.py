"""Serial vs parallel trials: the same N trials on one GPU, then on several (one trial per GPU), wall times compared.

Each mode runs a fresh study (same run file, same sampler seed) through the library (tuner.study.Tuner), with
its own SQLite storage and trials folder under ``--out``, so the two never share a trial. Reported per mode:
wall time, seconds per trial, speedup over serial, trials completed and feasible, and the best objective.

A space whose trials need several GPUs (``gpus_per_trial: tp-size * dp-size`` with tp-size 2 on two GPUs) runs
those trials alone, so expect less than an N-fold speedup from it.

Run (on a machine with 2 GPUs)::

    python benchmarks/gpu_parallel.py -c runs/qwen3-8b.yaml --trials 8 --gpus 0,1 --out bench-out/gpu_parallel

and read ``bench-out/gpu_parallel/gpu_parallel.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optuna.trial import TrialState

from tuner.config.run import load_config
from tuner.search.study import Tuner


def run_mode(run_file: Path, mode: str, gpus: list[int], trials: int, out: Path, stamp: str) -> dict:
    study = f"gpu-parallel-{mode}-{stamp}"
    cfg = load_config(
        run_file,
        {
            "study": study,
            "trials": trials,
            "gpus": gpus,
            "storage": f"sqlite:///{(out / 'studies' / f'{study}.db').resolve()}",
            "trials_dir": str((out / "trials").resolve()),
            "artifacts": str((out / "artifacts" / study).resolve()),
        },
    )
    tuner = Tuner(cfg)
    row = {"mode": mode, "gpus": ",".join(map(str, gpus)), "study": study, "trials": trials}
    t0 = time.monotonic()
    try:
        tuner.prepare()  # reads SGLang's --help: not part of the trials' wall time
        for w in tuner.warnings:
            print(f"  warning: {w}", file=sys.stderr)
        t0 = time.monotonic()
        st = tuner.run()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row.update(wall_s=time.monotonic() - t0, error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return row
    row["wall_s"] = time.monotonic() - t0
    done = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feasible = [t for t in done if t.user_attrs.get("feasible")]
    row["complete"] = len(done)
    row["feasible"] = len(feasible)
    row["trial_s_sum"] = sum(float(t.user_attrs.get("total_s", 0.0)) for t in done)
    if feasible and len(st.directions) == 1:
        sign = 1 if st.directions[0].name == "MAXIMIZE" else -1
        best = max(feasible, key=lambda t: sign * t.values[0])
        row["best"] = f"{best.values[0]:.1f} (trial {best.number})"
    return row


def markdown(rows: list[dict], run_file: Path, trials: int) -> str:
    serial = next((r for r in rows if r["mode"] == "serial" and "error" not in r), None)
    lines = [
        f"# Serial vs parallel trials ({dt.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"Run file `{run_file}`, {trials} trials per mode.",
        "",
        "| mode | GPUs | wall (s) | s / trial | speedup | complete | feasible | sum of trial times (s) | best |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['gpus']} | {r['wall_s']:.1f} | | | | | | error: {r['error']} |")
            continue
        speedup = f"{serial['wall_s'] / r['wall_s']:.2f}x" if serial and r["wall_s"] else ""
        per = r["wall_s"] / r["complete"] if r["complete"] else float("nan")
        lines.append(
            f"| {r['mode']} | {r['gpus']} | {r['wall_s']:.1f} | {per:.1f} | {speedup} | {r['complete']} | "
            f"{r['feasible']} | {r['trial_s_sum']:.1f} | {r.get('best', '')} |"
        )
    lines += [
        "",
        "Parallel runs one trial per GPU (a tp x dp trial holds all its GPUs); the sum of trial times "
        "close to serial's means the servers did not slow each other down.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", type=Path, required=True, help="run file (YAML)")
    ap.add_argument("--trials", type=int, default=6, help="trials per mode (default 6)")
    ap.add_argument("--gpus", default="0,1", help="GPUs of the parallel mode; serial uses the first (default 0,1)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/gpu_parallel"))
    ap.add_argument("--only", choices=["serial", "parallel"], help="run one mode only")
    args = ap.parse_args()
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    if len(gpus) < 2 and args.only != "serial":
        ap.error("--gpus needs at least two GPUs for the parallel mode")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = []
    for mode, use in (("serial", gpus[:1]), ("parallel", gpus)):
        if args.only and args.only != mode:
            continue
        print(f"{mode}: {args.trials} trials on GPU(s) {use}", file=sys.stderr)
        rows.append(run_mode(args.config, mode, use, args.trials, args.out, stamp))
        print(f"  {rows[-1].get('wall_s', 0):.1f} s", file=sys.stderr)
    text = markdown(rows, args.config, args.trials)
    (args.out / "gpu_parallel.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
