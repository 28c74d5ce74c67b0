"""How long a replay takes to start on a large surface: load it, learn its neighbour weights, answer trial 0.

No large recorded surface is committed, so one is synthesised: ``--rows`` configs drawn (seeded) over the flag
values the stand-in surface (benchmarks/surfaces/standin-default.json) recorded, each answered by that surface's
model with equal weights, as a foreign surface of that size would be. The timed start is then what
``tune start`` does with a replay before its first trial is told: ``Surface.load``, then learning the neighbour
weights (``Surface.flag_weights``); then ``tune start`` of a two-trial replay end to end (Python's imports included).

    python benchmarks/replay_start.py [--rows 500]   # prints the seconds; benchmarks/REPLAY_START.md has them
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner.trial.surface import Row, Surface

STANDIN = ROOT / "benchmarks" / "surfaces" / "standin-default.json"


def synthesise(rows: int, seed: int = 0) -> Surface:
    """A surface of ``rows`` rows like the stand-in's: its header, its baseline row, then drawn configs."""
    src = Surface.load(STANDIN)
    rng = random.Random(seed)
    seen: dict[str, list] = {}
    for r in src.rows:
        for k, v in r.flags.items():
            seen.setdefault(k, []).append(v)
    out = [r for r in src.rows if r.baseline][:1]
    while len(out) < rows:
        flags = {k: rng.choice(vs) for k, vs in seen.items() if rng.random() < len(vs) / len(src.rows)}
        a = src.answer(flags, flag_weights={})
        out.append(
            Row(
                trial=len(out),
                flags=flags,
                levels=a.levels,
                failure_class=a.failure_class,
                failure_detail=a.failure_detail,
                startup_s=a.startup_s,
                benchmark_s=a.benchmark_s,
                stop_s=a.stop_s,
                gpu_peak_used_mib=a.gpu_peak_used_mib,
            )
        )
    return src.model_copy(update={"rows": out})


def run_file(folder: Path, surface: Path) -> Path:
    """The stand-in surface's own run file (benchmarks/standin_surface.yaml) as a two-trial replay of ``surface``:
    the baseline (its recorded row), then a drawn config (most likely modelled)."""
    run = yaml.safe_load((ROOT / "benchmarks" / "standin_surface.yaml").read_text())
    run.update(
        study="replay-start",
        storage=f"sqlite:///{folder}/replay-start.db",
        trials_dir=str(folder / "trials"),
        space=str(ROOT / "search_spaces" / "default.yaml"),
        trials=2,
        launcher={"kind": "replay", "surface": str(surface)},
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = synthesise(args.rows).save(folder / "surface.json")
        t0 = time.perf_counter()
        surface = Surface.load(path)
        t1 = time.perf_counter()
        surface.flag_weights()
        t2 = time.perf_counter()
        fails = sum(not r.ok for r in surface.rows)
        print(f"{len(surface.rows)} rows ({fails} failed), {len(surface.flag_weights())} flags weighted")
        print(f"load {t1 - t0:.2f} s, learning the neighbour weights {t2 - t1:.2f} s")
        # The same replay of the 48-row stand-in surface: what a start costs whatever the surface's size.
        for name, surface_path in (("this surface", path), ("the 48-row stand-in surface", STANDIN)):
            run = run_file(folder / name.replace(" ", "-"), surface_path)
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "tuner", "start", "-c", str(run)], capture_output=True, text=True, cwd=ROOT
            )
            if done.returncode != 0:
                sys.exit(f"tune start failed:\n{done.stdout}\n{done.stderr}")
            print(f"tune start, two replayed trials of {name}, end to end: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
