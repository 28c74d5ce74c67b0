"""Does the tuner's NVML peak match nvidia-smi's? Samples nvidia-smi beside a tuning run and compares per trial.

While the study runs (through the library, tuner.study.Tuner), a background ``nvidia-smi
--query-gpu=timestamp,index,memory.used --format=csv,noheader,nounits -lms 200`` writes every GPU's used memory
to ``smi.csv``. Afterwards each COMPLETE trial with a ``gpu_peak_used_mib`` is matched with the nvidia-smi
samples of its GPUs inside its time window, and the two peaks are compared.

The window is the trial's ``started_at``..``ended_at`` user attributes (set once it holds its GPUs, and after its
server stopped) when it has them, else Optuna's ``datetime_start``..``datetime_complete`` (which include the
time the trial waited for its GPUs). Both clocks are this host's local time.

Run (on a GPU machine)::

    python benchmarks/nvml_vs_smi.py -c runs/qwen3-8b.yaml --trials 4 --gpus 0
    python benchmarks/nvml_vs_smi.py -c runs/qwen3-8b.yaml --compare-only --smi-log bench-out/nvml_vs_smi/smi.csv

``--compare-only`` skips the run and compares an existing study (the run file's) with an earlier smi.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna
from optuna.trial import TrialState

from tuner.config.run import load_config

SMI_QUERY = ["--query-gpu=timestamp,index,memory.used", "--format=csv,noheader,nounits", "-lms", "200"]


class SmiLogger:
    """nvidia-smi in the background; each line becomes (local time, gpu index, used MiB) in a CSV file."""

    def __init__(self, path: Path, interval_ms: int = 200):
        self.path = path
        self.cmd = ["nvidia-smi", *SMI_QUERY[:-1], str(interval_ms)]
        self.proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._pump, name="nvidia-smi", daemon=True)
        self.lines = 0

    def __enter__(self) -> SmiLogger:
        if not shutil.which("nvidia-smi"):
            raise SystemExit("nvidia-smi is not on PATH: this comparison needs an NVIDIA driver")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread.start()
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "gpu", "used_mib"])
            for line in self.proc.stdout:
                parsed = parse_smi_line(line)
                if parsed:
                    w.writerow([parsed[0].isoformat(), parsed[1], parsed[2]])
                    f.flush()
                    self.lines += 1

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._thread.join(timeout=5)


def parse_smi_line(line: str) -> tuple[dt.datetime, int, float] | None:
    """'2025/01/31 12:00:00.123, 0, 1234' -> (time, 0, 1234.0); the receive time if the stamp does not parse."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3:
        return None
    try:
        gpu, used = int(parts[1]), float(parts[2])
    except ValueError:
        return None  # "[N/A]" and the like
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(parts[0], fmt), gpu, used
        except ValueError:
            continue
    return dt.datetime.now(), gpu, used


def read_smi_log(path: Path) -> list[tuple[dt.datetime, int, float]]:
    with open(path, newline="") as f:
        return [(dt.datetime.fromisoformat(r["time"]), int(r["gpu"]), float(r["used_mib"])) for r in csv.DictReader(f)]


def window(t: optuna.trial.FrozenTrial) -> tuple[dt.datetime, dt.datetime] | None:
    a = t.user_attrs
    if a.get("started_at") and a.get("ended_at"):
        return dt.datetime.fromisoformat(a["started_at"]), dt.datetime.fromisoformat(a["ended_at"])
    if t.datetime_start and t.datetime_complete:
        return t.datetime_start, t.datetime_complete
    return None


def compare(study: optuna.Study, samples: list[tuple[dt.datetime, int, float]]) -> list[dict]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        nvml = t.user_attrs.get("gpu_peak_used_mib")
        win = window(t)
        gpus = set(t.user_attrs.get("gpus") or [])
        if nvml is None or win is None or not gpus:
            continue
        mine = [used for when, g, used in samples if g in gpus and win[0] <= when <= win[1]]
        smi = max(mine) if mine else None
        diff = 100.0 * (nvml - smi) / smi if smi else None
        rows.append(
            {
                "trial": t.number,
                "gpus": ",".join(map(str, sorted(gpus))),
                "window_s": (win[1] - win[0]).total_seconds(),
                "smi_samples": len(mine),
                "smi_peak_mib": smi,
                "nvml_peak_mib": float(nvml),
                "diff_pct": diff,
                "failure_class": t.user_attrs.get("failure_class", ""),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    def num(v, fmt):
        return format(v, fmt) if v is not None else "n/a"

    lines = [
        "| trial | GPUs | window (s) | smi samples | nvidia-smi peak (MiB) | NVML peak (MiB) | diff % | class |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trial']} | {r['gpus']} | {r['window_s']:.1f} | {r['smi_samples']} | "
            f"{num(r['smi_peak_mib'], '.0f')} | {num(r['nvml_peak_mib'], '.0f')} | "
            f"{num(r['diff_pct'], '+.2f')} | {r['failure_class']} |"
        )
    diffs = [abs(r["diff_pct"]) for r in rows if r["diff_pct"] is not None]
    if diffs:
        lines += [
            "",
            f"{len(diffs)} trials compared: mean |diff| {sum(diffs) / len(diffs):.2f} %, max |diff| {max(diffs):.2f} %",
        ]
    else:
        lines += ["", "no trial could be compared (no NVML numbers, or no nvidia-smi samples in the windows)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", type=Path, required=True, help="run file (YAML)")
    ap.add_argument("--trials", type=int, help="trials in the study (default: the run file's)")
    ap.add_argument("--gpus", help="GPU indices, e.g. 0,1 (default: the run file's)")
    ap.add_argument("--study", help="study name (default: the run file's + a time stamp, so the run starts fresh)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/nvml_vs_smi"))
    ap.add_argument("--smi-log", type=Path, help="nvidia-smi samples CSV (default: <out>/smi.csv)")
    ap.add_argument("--interval-ms", type=int, default=200)
    ap.add_argument("--compare-only", action="store_true", help="no run: compare the study with --smi-log")
    args = ap.parse_args()
    smi_log = args.smi_log or args.out / "smi.csv"
    base = load_config(args.config)
    study_name = args.study or (
        base.study if args.compare_only else f"{base.study}-nvml-vs-smi-{dt.datetime.now():%Y%m%d-%H%M%S}"
    )
    cfg = load_config(args.config, {"study": study_name, "trials": args.trials, "gpus": args.gpus})

    if args.compare_only:
        from tuner.search.storage import load_existing_study

        study = load_existing_study(cfg)
    else:
        from tuner.search.study import Tuner

        tuner = Tuner(cfg)
        tuner.prepare()
        for w in tuner.warnings:
            print(f"warning: {w}", file=sys.stderr)
        with SmiLogger(smi_log, args.interval_ms) as smi:
            study = tuner.run()
        print(f"nvidia-smi: {smi.lines} samples in {smi_log}", file=sys.stderr)

    rows = compare(study, read_smi_log(smi_log))
    text = f"# NVML vs nvidia-smi peak used memory, study {study.study_name!r}\n\n" + table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nvml_vs_smi.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
