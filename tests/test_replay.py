"""Replay: the README's demo command on the committed H200 surface, `tune record` of a real (stand-in) study and
its replay, modelled answers and failures, and replay's bad inputs. No GPU and no SGLang anywhere here."""

from __future__ import annotations

import json
import os
import shutil
import time

import optuna
import yaml

from conftest import ROOT, tune, write_run, write_space
from tuner.config import load_config
from tuner.study import load_existing_study
from tuner.surface import Surface

H200 = ROOT / "surfaces" / "h200-qwen3-8b-random.json"


def demo_checkout(tmp_path):
    """The files the demo reads, in a folder of their own: the demo writes studies/, trials/ and reports/ there."""
    for name in ("runs", "search_spaces", "surfaces"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_readme_demo_replays_recorded_h200_trials_and_says_so_everywhere(tmp_path):
    env = demo_checkout(tmp_path)
    t0 = time.monotonic()
    done = tune("start", "-c", "runs/demo.yaml", cwd=tmp_path, env=env)
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert "replay: every trial is answered from surfaces/h200-qwen3-8b-random.json" in done.stdout
    assert elapsed < 60, f"the demo took {elapsed:.0f} s"  # seconds on a laptop; this only catches blunders

    surface = Surface.load(H200)
    rows = {r.trial: r for r in surface.rows}
    study = optuna.load_study(study_name="demo-h200-replay", storage=f"sqlite:///{tmp_path}/studies/demo-h200-replay.db")
    trials = study.trials
    assert len(trials) == 20 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["replayed"] for t in trials)
    # The baseline is the recorded baseline, exactly, with its recorded seconds (not slept).
    base = trials[0]
    assert base.user_attrs["modelled"] is False and base.user_attrs["replay_of"] == [0]
    assert base.values[0] == rows[0].levels[-1].output_throughput
    assert base.user_attrs["startup_s"] == round(rows[0].startup_s, 3)
    assert base.user_attrs["gpu_peak_used_mib"] == rows[0].gpu_peak_used_mib
    exact = [t for t in trials if not t.user_attrs["modelled"]]
    modelled = [t for t in trials if t.user_attrs["modelled"]]
    assert len(exact) >= 2 and modelled
    for t in exact:  # a recorded config gets its own row
        row = rows[t.user_attrs["replay_of"][0]]
        assert {k: v for k, v in t.user_attrs["flags"].items() if k not in ("model-path", "host", "port")} == row.flags
        assert [lv["output_throughput"] for lv in t.user_attrs["levels"]] == \
               [round(lv.output_throughput, 2) for lv in row.levels]
    # Trial files as a real study writes them, the server log saying what answered.
    trial_dir = tmp_path / "trials" / "demo-h200-replay" / str(modelled[0].number)
    assert (trial_dir / "benchmark.csv").is_file()
    assert "REPLAY, not a measurement: modelled from the nearest recorded trials" in (trial_dir / "server.log").read_text()
    assert json.loads((trial_dir / "trial.json").read_text())["replay"]["modelled"] is True

    status = tune("status", "-c", "runs/demo.yaml", cwd=tmp_path, env=env)
    assert status.returncode == 0 and "REPLAY of recorded trials, not a measurement: 20 of 20" in status.stdout
    assert "modelled (" in status.stdout and "replayed" in status.stdout

    report = tune("report", "-c", "runs/demo.yaml", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "reports" / "demo-h200-replay" / "report.html").read_text()
    assert "REPLAY of recorded trials, not a measurement" in html and "NVIDIA H200" in html
    assert "REPLAY of recorded trials" in (tmp_path / "reports" / "demo-h200-replay" / "comparison.md").read_text()

    exported = tune("export", "-c", "runs/demo.yaml", "--out", "out", cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    script = (tmp_path / "out" / "deploy-best.sh").read_text()
    assert "# REPLAY: the numbers below are replayed from recorded trials, never measured" in script
    assert "# Replayed with ISL 512 / OSL 128" in script and "# Measured" not in script
    assert "exec python3 -m sglang.launch_server" in script  # the recorded servers' command
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["replayed"] is True

    from optuna_dashboard import get_note

    note = get_note(optuna.Trial(study, modelled[0]._trial_id))
    assert "**REPLAYED, not measured**: modelled (" in note and "SGLang 0.5.17" in note


def test_record_a_real_study_then_replay_it_with_the_same_seed_gives_the_same_trials(tmp_path, unique_study):
    space = write_space(tmp_path / "space.yaml")
    real = write_run(tmp_path, study=unique_study, space=space, trials=6,
                     env={"SGLANG_STANDIN_FAULTS": "oom_kv_startup:mem-fraction-static<0.8"})
    assert tune("start", "-c", str(real)).returncode == 0
    recorded = load_existing_study(load_config(real))
    classes = [t.user_attrs["failure_class"] for t in recorded.trials]
    assert "oom_kv" in classes and "none" in classes, classes  # the seed gives both; both must be recorded

    help_text = tmp_path / "help.txt"
    help_text.write_text(tune_help())
    out = tmp_path / "surfaces" / "standin.json"
    done = tune("record", "-c", str(real), "--out", str(out), "--gpu-name", "stand-in", "--sglang-help",
                str(help_text))
    assert done.returncode == 0, done.stderr
    surface = Surface.load(out)
    assert [r.trial for r in surface.rows] == list(range(6))
    assert [r.failure_class or "none" for r in surface.rows] == classes
    assert surface.header.workload.concurrency == [1, 8] and "mem-fraction-static" in \
        {f.name for f in surface.header.catalog}
    ok = next(r for r in surface.rows if r.ok)
    assert [lv.concurrency for lv in ok.levels] == [1, 8]

    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    replay = write_run(replay_dir, study=unique_study + "-r", space=space, trials=6,
                       launcher={"kind": "replay", "surface": str(out)})
    done = tune("start", "-c", str(replay))
    assert done.returncode == 0, done.stderr
    replayed = load_existing_study(load_config(replay)).trials
    for real_t, rep_t in zip(recorded.trials, replayed):
        assert rep_t.params == real_t.params
        assert rep_t.user_attrs["failure_class"] == real_t.user_attrs["failure_class"]
        assert rep_t.values == real_t.values
        assert rep_t.user_attrs["feasible"] == real_t.user_attrs["feasible"]
        assert rep_t.system_attrs["constraints"] == real_t.system_attrs["constraints"]
        assert rep_t.user_attrs["modelled"] is False

    # Configs recorded nowhere: one next to a recorded failure is predicted to fail like it (the nearest row
    # outweighs the others), one next to a recorded success is answered with numbers.
    for row in (next(r for r in surface.rows if not r.ok), next(r for r in surface.rows[1:] if r.ok)):
        flags = {**row.flags, "mem-fraction-static": round(row.flags["mem-fraction-static"] + 0.004, 3)}
        answer = surface.answer(flags)
        assert answer.modelled and answer.sources[0] == row.trial
        assert answer.failure_class == row.failure_class
        assert bool(answer.levels) == row.ok

    # A replayed study is no surface.
    again = tune("record", "-c", str(replay), "--out", str(tmp_path / "x.json"), "--gpu-name", "x",
                 "--sglang-help", str(help_text))
    assert again.returncode != 0 and "is a replay" in again.stderr


def tune_help() -> str:
    import subprocess
    import sys

    from conftest import STANDIN

    return subprocess.run([sys.executable, str(STANDIN), "--help"], capture_output=True, text=True).stdout


def test_replay_bad_inputs_are_one_line_errors(tmp_path):
    space = write_space(tmp_path / "space.yaml", fixed={"enable-foo": True})
    cases = {
        "not a flag of this SGLang (SGLang 0.5.17 --help (recorded in the surface))": {"space": str(space)},
        "workload.concurrency: [8] not recorded in": {"workload": {"input_len": 512, "output_len": 128,
                                                                   "concurrency": [1, 8]}},
        "workload: ISL 64 / OSL 16, but": {},
        "workload.num_prompts: 16, but": {"workload": {"input_len": 512, "output_len": 128,
                                                       "concurrency": [1, 16, 64], "num_prompts": 16}},
        "objective.metrics [goodput] searches request rates": {
            "objective": {"metrics": ["goodput"], "slo": {"p99_ttft_ms": 500}},
            "workload": {"input_len": 512, "output_len": 128, "concurrency": [1, 16, 64]}},
        "nope.json: no such file": {"launcher": {"kind": "replay", "surface": "nope.json"}},
        "model.path 'other/model'": {"model": {"path": "other/model"}},
    }
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "header": {}}')
    cases["not a surface file (header.model: Field required)"] = {"launcher": {"kind": "replay", "surface": str(bad)}}
    for i, (message, extra) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        run = write_run(folder, study=f"bad{i}", space=ROOT / "search_spaces/h200-qwen3-8b.yaml",
                        launcher={"kind": "replay", "surface": str(H200)}, model={"path": "Qwen/Qwen3-8B"})
        raw = yaml.safe_load(run.read_text())
        for key, value in extra.items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and key != "workload" else value
        run.write_text(yaml.safe_dump(raw))
        done = tune("start", "-c", str(run))
        assert done.returncode == 2, (message, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (message, lines)


def test_the_model_learns_which_flags_matter_from_the_rows():
    # On the H200 only --cuda-graph-max-bs-decode moved c=64 throughput (2.2x); trial 8 was the best recorded.
    surface = Surface.load(H200)
    weights = surface.flag_weights()
    assert weights["cuda-graph-max-bs-decode"] > max(weights["schedule-policy"], weights["chunked-prefill-size"])
    best = next(r for r in surface.rows if r.trial == 8)
    answer = surface.answer({**best.flags, "cuda-graph-max-bs-decode": 16})
    assert answer.modelled
    assert answer.levels[-1].output_throughput < 0.5 * best.levels[-1].output_throughput  # the cliff, modelled
