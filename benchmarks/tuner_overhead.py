"""Tuner overhead per trial and failure detection, measured with the stand-in server (no GPU needed).

Targets (developers' guide):
  - "Tuner overhead per trial beyond server startup and benchmark time: at most 1 s."
  - "A server that dies is noticed within 1 s; an invalid flag never costs a launch."

Three parts, run in one process, one after another (side by side under the same load):

1. overhead: a real ``Tuner`` study (tuner.config.run.load_config + tuner.search.study.Tuner, one slot) of N trials. The
   tuner's own methods are wrapped from outside to time what PhaseTimes does not show: ask + trial attributes
   before the runner starts, write_artifacts (trial.json/CSVs), the recording (_record: user attrs, constraints,
   artifact uploads, dashboard note, study.tell) and the loop between trials (fail_stale_trials, budget check).
   "true overhead" = wall time of the trial in the loop - startup_s - benchmark_s.
2. death: TrialRunner directly; once the benchmark runs, the server leader is SIGKILLed (os.kill, the pid from
   on_launch) at a recorded time.monotonic(); run_benchmark is wrapped to time the moment ServerDied is raised.
   Also die_under_load (the stand-in's os._exit(1) mid-stream): its exit time is taken from os.waitid(WNOWAIT)
   in a thread blocked on the server pid (does not reap it, so Popen still sees the exit).
3. invalid flag: ``tune start`` with a space naming a flag SGLang lacks; the launcher command is a wrapper that
   logs every invocation, so server launches (anything but --help) are counted; server.log files too.

    python benchmarks/tuner_overhead.py [--trials 10] [--deaths 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import FAST_ENV, STANDIN, free_port, write_run, write_space
from tuner.bench import client
from tuner.bench.workload import SLO
from tuner.config.run import load_config
from tuner.search import study as study_mod
from tuner.serve.process import ProcessLauncher
from tuner.sglang.flags import ServerFlags
from tuner.trial import runner
from tuner.trial.runner import TrialPlan, TrialRunner


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "mean": statistics.fmean(xs), "p50": statistics.median(xs), "max": max(xs), "min": min(xs)}


def fmt_ms(s: dict) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['mean'] * 1000:.0f} / {s['p50'] * 1000:.0f} / {s['max'] * 1000:.0f}"


# ---------------------------------------------------------------------------------------------- 1. overhead


def _per_key_attrs(study, trial, user, system=None):
    """The recording before set_trial_attrs batched it: one storage commit per attribute."""
    for key, value in user.items():
        trial.set_user_attr(key, value)
    for key, value in (system or {}).items():
        study._storage.set_trial_system_attr(trial._trial_id, key, value)


def bench_overhead(work: Path, n: int, grace: float, per_key: bool = False) -> dict:
    """per_key: record attributes one commit each (the tuner before batching), for a side-by-side comparison."""
    work.mkdir(parents=True, exist_ok=True)
    run = write_run(work, study="overhead", trials=n, launcher={"stop_grace_s": grace})
    config = load_config(run)
    stamps: dict[str, list] = {k: [] for k in ("one", "run", "write", "record")}

    def timed(key, fn):
        def wrapper(*a, **kw):
            t0 = time.monotonic()
            try:
                return fn(*a, **kw)
            finally:
                stamps[key].append((t0, time.monotonic()))

        return wrapper

    saved = (
        study_mod.Tuner._one_trial,
        study_mod.Tuner._record,
        TrialRunner.run,
        runner.write_artifacts,
        study_mod.set_trial_attrs,
    )
    if per_key:
        study_mod.set_trial_attrs = _per_key_attrs
    results = []
    orig_run = TrialRunner.run

    def run_wrapper(self, plan):
        r = orig_run(self, plan)
        results.append(r)
        return r

    study_mod.Tuner._one_trial = timed("one", study_mod.Tuner._one_trial)
    study_mod.Tuner._record = timed("record", study_mod.Tuner._record)
    TrialRunner.run = timed("run", run_wrapper)
    runner.write_artifacts = timed("write", runner.write_artifacts)
    load_before = loadavg()
    try:
        t = study_mod.Tuner(config)
        t0 = time.monotonic()
        t.prepare()
        t_prepared = time.monotonic()
        study = t.run()
        t_end = time.monotonic()
    finally:
        (
            study_mod.Tuner._one_trial,
            study_mod.Tuner._record,
            TrialRunner.run,
            runner.write_artifacts,
            study_mod.set_trial_attrs,
        ) = saved
    load_after = loadavg()

    rows = []
    prev_end = t_prepared
    for i, r in enumerate(results):
        one0, one1 = stamps["one"][i]
        run0, run1 = stamps["run"][i]
        w0, w1 = stamps["write"][i]
        rec0, rec1 = stamps["record"][i]
        tm = r.times
        gap = one0 - prev_end  # the worker loop between trials (first: Tuner.run's setup after prepare)
        prev_end = one1
        wall = one1 - one0 + gap
        rows.append(
            {
                "trial": r.plan.number,
                "failure": r.failure.name if r.failure else None,
                "startup_s": tm.startup_s,
                "benchmark_s": tm.benchmark_s,
                "loop_gap_s": gap,
                "ask_attrs_s": run0 - one0,
                "wait_gpu_s": tm.wait_gpu_s,
                "launch_s": tm.launch_s,
                "stop_s": tm.stop_s,
                "runner_other_s": tm.total_s - tm.startup_s - tm.benchmark_s - tm.wait_gpu_s - tm.launch_s - tm.stop_s,
                "write_artifacts_s": w1 - w0,
                "after_run_s": rec0 - run1,
                "record_s": rec1 - rec0,
                "overhead_s": tm.overhead_s,  # the tuner's own number (PhaseTimes)
                "true_overhead_s": wall - tm.startup_s - tm.benchmark_s,
                "wall_s": wall,
            }
        )
    keys = [k for k in rows[0] if k not in ("trial", "failure")]
    return {
        "trials": rows,
        "stats": {k: stats([r[k] for r in rows]) for k in keys},
        "prepare_s": t_prepared - t0,
        "study_wall_s": t_end - t0,
        "complete": len(study.trials),
        "stop_grace_s": grace,
        "per_key": per_key,
        "load_before": load_before,
        "load_after": load_after,
    }


# ---------------------------------------------------------------------------------------------- 2. death


class _Phases:
    def __init__(self):
        self.benchmarking = threading.Event()

    def phase(self, trial, name, detail=""):
        if name == "benchmarking":
            self.benchmarking.set()


def _exit_time(pid: int, box: dict) -> None:
    """Blocks until the server process exits, without reaping it; records when it did."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass  # Popen reaped it first: still just after the exit
    box["exit_t"] = time.monotonic()


def bench_death(work: Path, reps: int, mode: str, grace: float) -> dict:
    """mode "sigkill": the benchmark kills the server; mode "die_under_load": the stand-in exits by itself."""
    env = dict(FAST_ENV)
    # Slow enough serving that the benchmark is mid-level when the server dies.
    env["SGLANG_STANDIN_SPEED"] = "0.2"
    if mode == "die_under_load":
        env["SGLANG_STANDIN_FAULTS"] = "die_under_load:"
    else:
        env["SGLANG_STANDIN_FAULTS"] = ""
    (work / mode).mkdir(parents=True, exist_ok=True)
    cfg = load_config(
        write_run(
            work / mode,
            study=f"death-{mode}",
            env=env,
            workload={"input_len": 64, "output_len": 64, "concurrency": [4], "num_prompts": 400, "warmup_requests": 1},
        )
    )
    workload = cfg.workload.build(SLO())
    launcher = ProcessLauncher(cfg.launcher.command, cfg.launcher.env)

    orig_rb = runner.run_benchmark
    died_at: dict = {}

    def rb(*a, **kw):
        try:
            return orig_rb(*a, **kw)
        except client.ServerDied:
            died_at["t"] = time.monotonic()
            raise

    runner.run_benchmark = rb
    rows = []
    load_before = loadavg()
    try:
        for i in range(reps):
            died_at.clear()
            box: dict = {}
            phases = _Phases()
            servers = []

            def on_launch(server, servers=servers, box=box):  # this rep's, not the loop's latest
                servers.append(server)
                threading.Thread(target=_exit_time, args=(server.proc.pid, box), daemon=True).start()

            trial_runner = TrialRunner(
                launcher, workload, cfg.model.path, cfg.study, stop_grace_s=grace, progress=phases, on_launch=on_launch
            )
            port = free_port()
            flags = ServerFlags.of({"model-path": cfg.model.path, "host": "127.0.0.1", "port": port})
            plan = TrialPlan(i, flags, (), "127.0.0.1", port, work / mode / "trials" / str(i), 30.0)
            killer = None
            if mode == "sigkill":

                def kill(phases=phases, box=box, servers=servers):  # this rep's, even if it outlives join(5)
                    phases.benchmarking.wait(60)
                    time.sleep(random.uniform(0.3, 0.8))  # mid-level, at a random phase of the 100 ms poll
                    box["kill_t"] = time.monotonic()
                    os.kill(servers[0].proc.pid, signal.SIGKILL)

                killer = threading.Thread(target=kill, daemon=True)
                killer.start()
            result = trial_runner.run(plan)
            t_done = time.monotonic()
            if killer:
                killer.join(5)
            t_dead = box.get("kill_t", box.get("exit_t"))
            rows.append(
                {
                    "rep": i,
                    "failure": result.failure.name if result.failure else None,
                    "exit_code": result.exit_code,
                    "detail": result.failure_detail,
                    "detect_s": died_at["t"] - t_dead if "t" in died_at and t_dead else None,
                    "trial_end_s": t_done - t_dead if t_dead else None,
                    "stop_s": result.times.stop_s,
                    "exit_seen_s": box["exit_t"] - box["kill_t"] if "kill_t" in box and "exit_t" in box else None,
                }
            )
    finally:
        runner.run_benchmark = orig_rb
    return {
        "mode": mode,
        "reps": rows,
        "detect": stats([r["detect_s"] for r in rows]),
        "trial_end": stats([r["trial_end_s"] for r in rows]),
        "classes": sorted({str(r["failure"]) for r in rows}),
        "load_before": load_before,
        "load_after": loadavg(),
    }


# ---------------------------------------------------------------------------------------------- 3. invalid flag


def bench_invalid_flag(work: Path, reps: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    calls = work / "launcher-calls.txt"
    wrapper = work / "sglang_wrapper.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"sys.argv = [{str(STANDIN)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
    )
    space = write_space(
        work / "space.yaml",
        params={
            "schedule-policy": {"choices": ["fcfs", "lof"]},
            "enable-warp-drive": {"choices": [True, False]},  # no such SGLang flag
        },
    )
    run = write_run(work, study="invalid", space=space)
    import yaml

    d = yaml.safe_load(run.read_text())
    d["launcher"]["command"] = [sys.executable, str(wrapper)]
    run.write_text(yaml.safe_dump(d, sort_keys=False))

    rows = []
    load_before = loadavg()
    for _ in range(reps):
        calls.unlink(missing_ok=True)
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "tuner", "start", "-c", str(run), "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        wall = time.monotonic() - t0
        invocations = calls.read_text().splitlines() if calls.exists() else []
        rows.append(
            {
                "rc": p.returncode,
                "wall_s": wall,
                "message": (p.stderr or p.stdout).strip().splitlines()[-1:],
                "help_calls": sum(1 for c in invocations if "--help" in c.split()),
                "launches": sum(1 for c in invocations if "--help" not in c.split()),
                "server_logs": len(list((work / "trials").rglob("server.log"))),
            }
        )
    # The same refusal in-process (no interpreter start-up, no imports): Tuner.prepare alone.
    cfg = load_config(run)
    prep = []
    for _ in range(reps):
        calls.unlink(missing_ok=True)
        t0 = time.monotonic()
        try:
            study_mod.Tuner(cfg).prepare()
            refused = False
        except study_mod.SetupError:
            refused = True
        prep.append((time.monotonic() - t0, refused))
    return {
        "cli": rows,
        "cli_wall": stats([r["wall_s"] for r in rows]),
        "prepare": stats([p[0] for p in prep]),
        "prepare_refused": all(p[1] for p in prep),
        "load_before": load_before,
        "load_after": loadavg(),
    }


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--deaths", type=int, default=10)
    ap.add_argument("--grace", type=float, default=0.5, help="stop_grace_s (the tuner's default: 0.5)")
    ap.add_argument(
        "--compare-per-key",
        action="store_true",
        help="also run the study recording one commit per attribute (the tuner before batching)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat part 1 (alternating with --compare-per-key)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"# {datetime.now().isoformat(timespec='seconds')}  {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {loadavg()}"
    )
    out: dict = {"cpu": cpu, "cpus": os.cpu_count(), "date": datetime.now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="tuner-overhead-") as tmp:
        work = Path(tmp)
        out["overhead"] = []
        modes = [False, True] if args.compare_per_key else [False]
        # Alternate batched / per-key studies so both see the same load.
        for rnd in range(args.rounds):
            for per_key in modes:
                ov = bench_overhead(work / f"overhead-{rnd}-{int(per_key)}", args.trials, args.grace, per_key)
                out["overhead"].append(ov)
                print(
                    f"\n## 1. per-trial overhead ({'per-key commits (old)' if per_key else 'batched (now)'}): "
                    f"{args.trials} trials, stop_grace_s {args.grace}, load {ov['load_before']} -> "
                    f"{ov['load_after']} (prepare {ov['prepare_s']:.2f} s, study {ov['study_wall_s']:.1f} s)"
                )
                print(f"{'component':<20} {'mean':>8} {'p50':>8} {'max':>8}   (ms)")
                for k, s in ov["stats"].items():
                    print(f"{k:<20} {s['mean'] * 1000:8.1f} {s['p50'] * 1000:8.1f} {s['max'] * 1000:8.1f}")

        out["death"] = []
        for mode in ("sigkill", "die_under_load"):
            reps = args.deaths if mode == "sigkill" else max(3, args.deaths // 2)
            d = bench_death(work / "death", reps, mode, args.grace)
            out["death"].append(d)
            print(f"\n## 2. death detection ({mode}, {reps} reps), load {d['load_before']} -> {d['load_after']}")
            print(f"   death -> ServerDied raised  mean/p50/max ms: {fmt_ms(d['detect'])}")
            print(f"   death -> trial result       mean/p50/max ms: {fmt_ms(d['trial_end'])}")
            print(f"   classes: {d['classes']}")
            for r in d["reps"]:
                print(
                    f"     rep {r['rep']}: {r['failure']} exit {r['exit_code']} detect "
                    f"{(r['detect_s'] or 0) * 1000:.0f} ms, end {(r['trial_end_s'] or 0) * 1000:.0f} ms, "
                    f"stop {r['stop_s'] * 1000:.0f} ms  ({r['detail'][:60]})"
                )

        inv = out["invalid_flag"] = bench_invalid_flag(work / "invalid", 3)
        print(f"\n## 3. invalid flag, load {inv['load_before']} -> {inv['load_after']}")
        for r in inv["cli"]:
            print(
                f"   tune start: rc {r['rc']}, {r['wall_s']:.2f} s, --help calls {r['help_calls']}, "
                f"launches {r['launches']}, server.log files {r['server_logs']}: {r['message']}"
            )
        print(f"   Tuner.prepare refuses: {inv['prepare_refused']}, mean/p50/max ms: {fmt_ms(inv['prepare'])}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
