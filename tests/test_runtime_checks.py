"""What the tuner checks and records while it runs: a GPU someone else holds, the KV pool SGLang sized, a space
that changed under a resumed study, a baseline SGLang refuses, levels measured before a server died, and what
people see of it (deploy-best.sh overrides, counts, the status table, the report at 1000 px)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import optuna
import pytest

from tests.conftest import ROOT, STANDIN, free_port, tune, wait_healthy, write_run, write_space
from tests.test_gpu import FakeNvml, no_nvml  # noqa: F401 - no_nvml is a fixture
from tests.test_views import CHROMIUM, needs_chromium
from tuner.config.run import load_config
from tuner.errors import SetupError
from tuner.search.storage import load_existing_study
from tuner.search.study import Tuner
from tuner.serve import gpu
from tuner.sglang.kv import KvCapacity

DATA = ROOT / "tests" / "data"


def _read(run: Path) -> optuna.Study:
    return load_existing_study(load_config(run, check=False))


# -- a GPU held by someone else at study start


@pytest.fixture
def one_gpu(monkeypatch):
    fake = FakeNvml(n=1).install(monkeypatch)
    yield fake
    gpu.reset()


def test_a_gpu_another_process_holds_stops_the_study_before_any_launch(one_gpu, tmp_path, unique_study):
    one_gpu.holders[0] = [(4242, 40000.0)]
    one_gpu.extra[0] = 40000.0
    cfg = load_config(write_run(tmp_path, study=unique_study, trials=1))
    with pytest.raises(SetupError) as err:
        Tuner(cfg).prepare()
    message = str(err.value)
    assert "\n" not in message
    assert "GPU 0: 40500 MiB used by pid 4242" in message and "(40000 MiB)" in message
    assert "--allow-shared-gpu" in message
    assert not (tmp_path / "trials").exists() and not (tmp_path / "studies").exists()  # nothing launched


def test_memory_no_process_accounts_for_is_someone_elses_too(one_gpu, tmp_path, unique_study):
    one_gpu.extra[0] = 5000.0  # another container's server: NVML lists no process we can see
    cfg = load_config(write_run(tmp_path, study=unique_study, trials=1))
    with pytest.raises(SetupError, match="processes NVML cannot name"):
        Tuner(cfg).prepare()


def test_an_idle_gpu_showing_the_drivers_reservation_is_idle(one_gpu, tmp_path, unique_study):
    one_gpu.extra[0] = 115.0  # 615 MiB in all: what the idle H200 shows (docs/h200.md)
    Tuner(load_config(write_run(tmp_path, study=unique_study, trials=1))).prepare()


def test_with_allow_shared_gpu_every_trial_records_who_else_held_it(one_gpu, tmp_path, unique_study):
    one_gpu.holders[0] = [(os.getpid(), 30000.0)]
    one_gpu.extra[0] = 30000.0
    run = write_run(tmp_path, study=unique_study, trials=2, gpus_shared=True, workload={"concurrency": [2]})
    tuner = Tuner(load_config(run))
    tuner.prepare()
    assert any("shared GPU" in w for w in tuner.warnings)
    study = tuner.run()
    me = Path("/proc/self/comm").read_text().strip()
    for t in study.trials:
        assert t.user_attrs["gpu_shared"] == [{"gpu": 0, "pid": os.getpid(), "name": me, "mib": 30000.0}]
        assert (
            json.loads((Path(t.user_attrs["trial_dir"]) / "trial.json").read_text())["gpu_shared"][0]["pid"]
            == os.getpid()
        )
    status = tune("status", "-c", str(run))
    assert status.returncode == 0, status.stderr
    assert f"shared GPU: trials 0, 1 ran beside other processes (GPU 0: pid {os.getpid()}" in status.stdout
    report = tune("report", "-c", str(run), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert "shared GPU: trials 0, 1" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.usefixtures("no_nvml")
def test_without_nvml_no_trial_waits_for_a_gpu(tmp_path, unique_study):
    class Phases:
        def __init__(self):
            self.seen: list[str] = []

        def phase(self, trial: int, name: str, detail: str = "") -> None:
            self.seen.append(name)

    phases = Phases()
    Tuner(
        load_config(write_run(tmp_path, study=unique_study, trials=1, workload={"concurrency": [1]})), progress=phases
    ).run()
    assert "launching" in phases.seen and "waiting for GPU" not in phases.seen


# -- KV capacity


def test_kv_capacity_is_read_from_sglang_0_5_17s_startup_line():
    log = (DATA / "sglang-0.5.17-h200-healthy.log").read_text()
    assert KvCapacity.of({}, log) == KvCapacity(851140, 4096)
    # Without the log line (a log rotated away): /get_server_info, as 0.5.x nests it.
    info = {
        "max_total_num_tokens": 3363,
        "max_running_requests": None,
        "internal_states": [{"max_total_num_tokens": 3363, "max_running_requests": 1681}],
    }
    assert KvCapacity.of(info, "") == KvCapacity(3363, 1681)


def test_a_kv_pool_too_small_for_the_workload_is_infeasible_and_keeps_its_numbers(tmp_path, unique_study):
    # 8 concurrent requests of 64 + 16 tokens need 640 tokens of KV cache; a pool of 500 cannot hold them.
    space = write_space(tmp_path / "space.yaml", params={"max-total-tokens": {"choices": [500, 100000]}})
    run = write_run(
        tmp_path, study=unique_study, space=space, trials=2, baseline=False, env={"SGLANG_STANDIN_FAULTS": ""}
    )
    tuner = Tuner(load_config(run))
    study = tuner.prepare()
    for tokens in (500, 100000):
        study.enqueue_trial({"max-total-tokens": tokens})
    tuner.run()
    small, large = sorted(study.trials, key=lambda t: t.params["max-total-tokens"])
    for t in (small, large):
        logged = re.search(
            r"max_total_num_tokens=(\d+), .*max_running_requests=(\d+)",
            (Path(t.user_attrs["trial_dir"]) / "server.log").read_text(),
        )
        assert (t.user_attrs["max_total_num_tokens"], t.user_attrs["max_running_requests"]) == tuple(
            map(int, logged.groups())
        )
        record = json.loads((Path(t.user_attrs["trial_dir"]) / "trial.json").read_text())
        assert record["kv_capacity"]["max_total_num_tokens"] == t.user_attrs["max_total_num_tokens"]
    assert small.user_attrs["max_total_num_tokens"] == 500
    a = small.user_attrs
    assert a["failure_class"] == "none" and a["limit_class"] == "kv_pool_too_small"
    assert "500 < 640" in a["limit_detail"] and "--max-total-tokens" in a["limit_hint"]
    assert a["feasible"] is False and small.values[0] > 0 and len(a["levels"]) == 2  # measured, kept
    names = study.user_attrs["constraint_names"]
    assert small.system_attrs["constraints"][names.index("kv_capacity")] > 0
    assert large.user_attrs["feasible"] is True and "limit_class" not in large.user_attrs
    from tuner.views.dashboard import trial_note

    note = trial_note(small.number, a)
    assert "Limit: **kv_pool_too_small**" in note and "KV pool: 500 tokens" in note
    assert large.system_attrs["constraints"][names.index("kv_capacity")] <= 0

    status = tune("status", "-c", str(run))
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])}
    assert "kv_tokens" in status.stdout and "kv_pool_too_small" in rows[str(small.number)]
    assert re.search(r" 500( |$)", rows[str(small.number)])


def test_status_draws_a_table_on_a_terminal(tmp_path, unique_study):
    run = write_run(tmp_path, study=unique_study, trials=1, workload={"concurrency": [1]})
    assert tune("start", "-c", str(run)).returncode == 0
    env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "220", "NO_COLOR": "1"}
    drawn = tune("status", "-c", str(run), env=env)
    assert drawn.returncode == 0, drawn.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", drawn.stdout)  # bold headers
    assert re.search(r"┃ *trial *┃ *state *┃", text) and "│ baseline (SGLang defaults) │" in text
    plain = tune("status", "-c", str(run))
    assert "┃" not in plain.stdout and "baseline (SGLang defaults)" in plain.stdout


# -- a space whose parameter changed kind under a resumed study


def test_resuming_with_a_parameter_of_another_kind_is_refused_before_any_trial(tmp_path, unique_study):
    space = write_space(tmp_path / "space.yaml", params={"mem-fraction-static": {"low": 0.7, "high": 0.9}})
    run = write_run(tmp_path, study=unique_study, space=space, trials=1, baseline=False, workload={"concurrency": [1]})
    assert tune("start", "-c", str(run)).returncode == 0
    write_space(space, params={"mem-fraction-static": {"choices": [0.8, 0.85]}})
    again = tune("start", "-c", str(run), "--trials", "2")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    [line] = again.stderr.strip().splitlines()
    assert "mem-fraction-static is choices [0.8, 0.85] here but a float range 0.7..0.9" in line
    assert "new --study name" in line
    assert [t.state.name for t in _read(run).trials] == ["COMPLETE"]


def test_a_trial_whose_sampling_fails_is_recorded_failed_never_left_running(tmp_path, unique_study):
    space = write_space(tmp_path / "space.yaml", params={"mem-fraction-static": {"low": 0.7, "high": 0.9}})
    tuner = Tuner(load_config(write_run(tmp_path, study=unique_study, space=space, trials=2, baseline=False)))
    study = tuner.prepare()
    # What the check above prevents, reached anyway (another host added it after this one's check).
    study.add_trial(
        optuna.trial.create_trial(
            params={"mem-fraction-static": 0.8},
            values=[1.0],
            distributions={"mem-fraction-static": optuna.distributions.CategoricalDistribution([0.8, 0.85])},
        )
    )
    with pytest.raises(SetupError, match="Optuna refused to sample the space"):
        tuner.run()
    states = [t.state.name for t in study.get_trials()]
    assert "RUNNING" not in states and states.count("FAIL") == 1
    [failed] = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed.user_attrs["failure_class"] == "sampling_error"
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # nothing re-queued to fail again


# -- a baseline SGLang refuses


def test_a_baseline_refused_as_invalid_flag_stops_the_study(tmp_path, unique_study):
    # A build whose parser refuses at launch what its --help does not show (a type --help cannot tell).
    wrapper = tmp_path / "sglang-strict"
    wrapper.write_text(f"""#!/bin/sh
case " $* " in *" --help "*) ;; *) set -- "$@" --max-running-requests lots ;; esac
exec {sys.executable} {STANDIN} "$@"
""")
    wrapper.chmod(0o755)
    run = write_run(
        tmp_path, study=unique_study, trials=3, launcher={"command": [str(wrapper)]}, workload={"concurrency": [1]}
    )
    done = tune("start", "-c", str(run))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "baseline (trial 0" in line and "invalid_flag" in line and "every later trial would fail too" in line
    assert "invalid int value: 'lots'" in line
    trials = _read(run).trials
    assert [t.user_attrs.get("failure_class") for t in trials] == ["invalid_flag"]
    # Resumed as it is: refused at once, before another launch.
    again = tune("start", "-c", str(run))
    assert again.returncode == 2 and "every later trial would fail too" in again.stderr
    assert len(_read(run).trials) == 1


# -- levels measured before a server died


def test_levels_measured_before_the_server_died_are_kept(tmp_path, unique_study):
    # The stand-in's scripted OOM fires once more than 8 requests run: c=1 and c=4 complete, c=16 kills it. At the
    # stand-in's real pace a request lasts about 0.3 s, and c=16's 64 requests keep 16 in flight for seconds: a
    # client slowed down by a loaded machine still has 9 at once. (With 16 requests of a few ms each, they could
    # all finish one by one as a slow client sent them, and the OOM never fire.)
    run = write_run(
        tmp_path,
        study=unique_study,
        trials=1,
        env={"SGLANG_STANDIN_FAULTS": "oom_under_load:", "SGLANG_STANDIN_SPEED": "1.0"},
        workload={"concurrency": [1, 4, 16], "num_prompts": None, "output_len": 64},
    )
    assert tune("start", "-c", str(run)).returncode == 0
    [t] = _read(run).trials
    a = t.user_attrs
    assert a["failure_class"] == "oom_runtime" and a["feasible"] is False
    assert [lv["concurrency"] for lv in a["levels"]] == [1, 4]
    assert all(lv["output_throughput"] > 0 for lv in a["levels"])
    rows = (Path(a["trial_dir"]) / "benchmark.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "4"]
    record = json.loads((Path(a["trial_dir"]) / "trial.json").read_text())
    assert [lv["concurrency"] for lv in record["levels"]] == [1, 4]


# -- what people see


def test_deploy_best_serves_on_the_host_port_and_gpus_the_environment_names(tmp_path, unique_study):
    run = write_run(tmp_path, study=unique_study, trials=1, workload={"concurrency": [1]})
    assert tune("start", "-c", str(run)).returncode == 0
    out = tmp_path / "export"
    assert tune("export", "-c", str(run), "--out", str(out)).returncode == 0
    script = out / "deploy-best.sh"
    measured = _read(run).trials[0].user_attrs["flags"]["port"]
    port = free_port()
    proc = subprocess.Popen(
        ["bash", str(script)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "CUDA_VISIBLE_DEVICES": "3"},
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        info = httpx.get(f"http://127.0.0.1:{port}/get_server_info", timeout=2).json()
        assert info["port"] == port != measured
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=3" in environ
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    # Without overrides: what was measured.
    text = script.read_text()
    assert f"PORT=${{PORT:-{measured}}}" in text and "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}" in text
    assert '--port "$PORT"' in text and '--host "$HOST"' in text


def test_counts_leave_out_interrupted_trials_and_a_reached_budget_says_so(tmp_path, unique_study):
    run = write_run(tmp_path, study=unique_study, trials=2, workload={"concurrency": [1]})
    first = tune("start", "-c", str(run), "--trials", "1")
    assert first.returncode == 0, first.stderr
    study = _read(run)
    interrupted = study.ask()  # what Ctrl-C leaves: a FAIL trial marked interrupted
    interrupted.set_user_attr("failure_class", "interrupted")
    study.tell(interrupted, state=optuna.trial.TrialState.FAIL)
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    assert ": 2 launched (budget 2); 1 interrupted and run again; " in done.stdout
    over = tune("start", "-c", str(run), "--trials", "1")
    assert over.returncode == 0
    assert (
        f"study '{unique_study}' already has 2 launched trials; budget 1 reached: pass --trials N > 2 to run more"
        in over.stdout
    )
    assert len(_read(run).trials) == 3


@needs_chromium
def test_the_report_fits_a_1000_px_window(tmp_path):
    from tuner.views.report import build_report

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/r.db", study_name="wide", direction="maximize")
    study.set_user_attr("metrics", ["output_throughput"])
    study.set_user_attr("at_concurrency", 64)
    for n, gain in enumerate((1.0, 1.013)):
        levels = [
            {
                "concurrency": c,
                "output_throughput": 18626.076 * gain * c / 64,
                "median_ttft_ms": 400.822,
                "p99_ttft_ms": 745.981,
                "median_tpot_ms": 10.673,
                "failed": 0,
            }
            for c in (1, 16, 64)
        ]
        study.add_trial(
            optuna.trial.create_trial(
                value=levels[-1]["output_throughput"],
                user_attrs={
                    "baseline": n == 0,
                    "feasible": True,
                    "failure_class": "none",
                    "levels": levels,
                    "output_throughput": levels[-1]["output_throughput"],
                    "flags": {"chunked-prefill-size": 4096 * (n + 1)},
                },
                params={} if n == 0 else {"chunked-prefill-size": 8192},
                distributions={} if n == 0 else {"chunked-prefill-size": optuna.distributions.IntDistribution(1, 9000)},
            )
        )
    page = build_report(study, tmp_path / "report").html
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            """<script>
document.body.setAttribute('data-widest', Math.max(...[...document.querySelectorAll('table')]
  .map(t => Math.ceil(t.getBoundingClientRect().right))));
</script></body>""",
        )
    )
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1000,800",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    widest = int(re.search(r'data-widest="(\d+)"', dom).group(1))
    assert 0 < widest <= 1000, f"a table reaches {widest} px in a 1000 px window"
