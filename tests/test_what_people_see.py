"""Issue 23, what people see: the demo study (replayed H200 trials) read at 80 columns, in the report, the export
and the dashboard's notes. One demo run is shared by the module."""

from __future__ import annotations

import os
import re
import shutil

import optuna
import pytest

from conftest import ROOT, tune


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo, started once in a folder of its own: (folder, env, study)."""
    where = tmp_path_factory.mktemp("demo")
    for name in ("runs", "search_spaces", "surfaces"):
        shutil.copytree(ROOT / name, where / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = tune("start", "-c", "runs/demo.yaml", cwd=where, env=env)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="demo-h200-replay", storage=f"sqlite:///{where}/studies/demo-h200-replay.db")
    return where, env, study


def test_status_reads_at_80_columns_in_a_pipe_and_on_a_terminal(demo):
    where, env, _ = demo
    for extra in ({"COLUMNS": "80"}, {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}):
        shown = tune("status", "-c", "runs/demo.yaml", cwd=where, env={**env, **extra})
        assert shown.returncode == 0, shown.stderr
        lines = re.sub(r"\x1b\[[0-9;]*m", "", shown.stdout).splitlines()
        # The table always fits; prose wraps between words on a terminal, and stays one line a sentence in a pipe.
        table = (
            lines
            if "TTY_COMPATIBLE" in extra
            else lines[: next(i for i, x in enumerate(lines) if x.startswith("best:"))]
        )
        assert all(len(line) <= 80 for line in table), max(table, key=len)
        assert len(lines) < 120, len(lines)  # 733 lines before: a column per character
        # Every number whole on one line, every flag with its value.
        assert re.search(r"^ +3 +COMPLETE +none +yes +4,677\.7 +trial 3$", shown.stdout, re.M), shown.stdout
        assert "      --mem-fraction-static 0.7 --cuda-graph-max-bs-decode 128" in lines
        assert not any(line.rstrip().endswith("--") or line.rstrip().endswith("-") for line in lines)


def test_progress_of_a_replay_estimates_from_this_machines_clock_and_counts_what_is_done():
    """A replayed trial says it lasted its recorded 160 s; it took milliseconds here: ~18:27 left was wrong."""
    import io
    from types import SimpleNamespace

    from tuner.trial.runner import PhaseTimes
    from tuner.views.progress import LineProgress, done_line

    study = optuna.create_study()
    out = io.StringIO()
    p = LineProgress(20, force=True, stream=out, live=False)
    for n in range(3):
        p.phase(n, "starting", "replayed: 140 s recorded")
        study.tell(study.ask(), 1.0)
        result = SimpleNamespace(
            plan=SimpleNamespace(number=n),
            failure=None,
            times=PhaseTimes(startup_s=140.0, total_s=160.0),
            benchmark=None,
            levels=(),
            replayed=object(),
            launched=True,
        )
        p.trial_done(study, result)  # type: ignore[arg-type]
    p.close()
    eta = p.eta_s()
    assert eta is not None and eta < 5, eta  # 17 trials of milliseconds, not of 160 s
    assert "3/20 done" in p._render().renderables[0].plain  # type: ignore[attr-defined]
    assert "trial 2 replayed: 160 s recorded (startup 140 s)" in done_line(study, result, 20)  # type: ignore[arg-type]


def test_the_report_of_a_replay_does_not_call_its_re_runs_a_confirmation(demo):
    where, env, study = demo
    from tuner.views.report import confirmation_lines

    assert confirmation_lines(study) and not any("one run: no interval" in line for line in confirmation_lines(study))
    assert "trial 3 (top): output_throughput 4677.67 (replayed: each re-run gives the recorded answer)" in (
        confirmation_lines(study)
    )
    done = tune("report", "-c", "runs/demo.yaml", cwd=where, env=env)
    assert done.returncode == 0, done.stderr
    for name in ("comparison.md", "report.html"):
        text = (where / "reports" / "demo-h200-replay" / name).read_text()
        assert "Confirmed by re-runs" not in text and "Re-runs of a replay: not a confirmation" in text


def test_importances_rank_the_flag_that_halves_throughput_first_and_say_how(demo):
    where, env, study = demo
    from tuner.views.importance import METHOD, importances

    found = importances(study)
    top = found[0]
    assert top.flag == "cuda-graph-max-bs-decode" and top.share > 0.9 and top.low > 0.5, found
    memory = next(i for i in found if i.flag == "mem-fraction-static")
    assert memory.share < 0.3 and memory.high > memory.share  # an interval, not a bare number
    if not (where / "reports" / "demo-h200-replay" / "report.html").is_file():
        assert tune("report", "-c", "runs/demo.yaml", cwd=where, env=env).returncode == 0
    html = (where / "reports" / "demo-h200-replay" / "report.html").read_text()
    assert "Parameter importances" in html and "(one-way ANOVA, epsilon-squared;" in html  # the method, named
    assert "90% bootstrap interval over the trials" in html and METHOD.endswith("bootstrap interval over the trials")


def test_deploy_best_of_a_fixed_rate_without_an_slo_does_not_say_slo_broken():
    from tuner.trial.record import RecordedLevel, export_choice
    from tuner.views.export import _header

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    level = RecordedLevel(8, 4.0, 0, 900.0, 4.0, 3.9, 20.0, 80.0, 9.0, 12.0, 0)  # no slo_pass: none was set
    trial.set_user_attr("flags", {"mem-fraction-static": 0.8})
    trial.set_user_attr("levels", [level.write()])
    trial.set_user_attr("feasible", True)
    study.tell(trial, 900.0)
    header = _header(study, export_choice(study))
    assert "4.00 req/s" in header and "SLO broken" not in header and "no SLO set" in header


def test_deploy_best_of_a_replay_says_its_dummy_weights_serve_no_real_answers(demo, tmp_path):
    where, env, _ = demo
    done = tune("export", "-c", "runs/demo.yaml", "--out", str(tmp_path), cwd=where, env=env)
    assert done.returncode == 0, done.stderr
    script = (tmp_path / "deploy-best.sh").read_text()
    assert "--load-format dummy" in script
    assert "# WARNING: --load-format dummy: random weights, as the recorded servers ran; this server will not" in (
        script
    )
    assert "model path /tmp/sglrt/model-qwen3-8b is the recording machine's" in script
    assert "echo 'deploy-best.sh: WARNING: --load-format dummy" in script  # said again when it runs


def test_notes_and_tables_say_what_a_trial_is_and_has(demo):
    _, _, study = demo
    from optuna_dashboard import get_note

    from tuner.views.dashboard import trial_note
    from tuner.views.report import html_table, trials_frame

    # A replayed trial's note lists the files its folder has: no gpu.csv (it sampled no GPU).
    note = get_note(optuna.Trial(study, study.trials[4]._trial_id))
    assert "benchmark.csv and trial.json are under Artifacts" in note and "gpu.csv" not in note
    # Flags one code span each, so a note wraps between them instead of running off its right edge.
    assert "`--mem-fraction-static 0.81` `--cuda-graph-max-bs-decode 16`" in note
    # A trial predicted to fail and never launched is not "measured".
    skipped = trial_note(5, {"launched": False, "flags": {"mem-fraction-static": 0.99}})
    assert "gpu.csv" in skipped  # a measured-study trial still names it
    frame = trials_frame(study)
    assert "no (measured)" not in set(frame["replayed"])
    # The trials table breaks between flags, never at a flag name's hyphens.
    page = html_table(frame.head(2))
    assert "<span class=flag>--mem-fraction-static 0.84</span> <span class=flag>--cuda-graph" in page


def test_a_never_launched_trial_in_a_replayed_study_is_not_labelled_measured():
    from tuner.trial.record import ReplayMark, TrialRecord
    from tuner.views.report import trials_frame

    study = optuna.create_study(direction="maximize")
    for attrs in (
        TrialRecord(replay=ReplayMark("s.json", (1,), False)).attrs(),
        TrialRecord(launched=False).attrs(),
    ):
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, 1.0)
    assert list(trials_frame(study)["replayed"]) == ["trial 1", "not launched (predicted to fail)"]


def test_parallel_coordinates_draw_the_worst_trials_in_a_visible_colour(demo):
    _, _, study = demo
    from tuner.views.report import _figures

    figs, _ = _figures(study)
    fig = next(fig for title, fig in figs if title == "Parallel coordinates")
    trials = [t.line.color for t in fig.data if t.mode == "lines" and str(t.line.color).startswith("rgb")]
    assert len(trials) == 19  # one line per tuned trial
    for color in trials:
        assert sum(float(x) for x in re.findall(r"[\d.]+", color)) < 3 * 200, color  # never near-white


def test_the_dashboard_study_page_of_a_replay_says_so(demo):
    _, _, study = demo
    from optuna_dashboard import get_note, save_note

    from tuner.views.dashboard import mark_replay

    save_note(study, "kept")
    assert mark_replay(study) and not mark_replay(study)
    note = get_note(study)
    assert note.startswith("**REPLAY of recorded trials, not a measurement") and note.endswith("\n\nkept")


def test_a_count_is_a_whole_number_when_another_trial_has_none(tmp_path):
    """An H100 before study (two trials still waiting, so no KV pool): status showed trial 0's pool as
    "363,119.0" and its running-request limit as "4,096.0", pandas having made the columns float; a study whose
    trials all had one showed "363118"."""
    db = tmp_path / "before.db"
    shutil.copy(ROOT / "benchmarks" / "h200" / "gpu-seconds" / "h100-pair" / "before-again.db", db)
    run = ROOT / "benchmarks" / "h200" / "gpu-seconds-before.yaml"
    shown = tune("status", "-c", str(run), "--storage", f"sqlite:///{db}", env={**os.environ, "COLUMNS": "120"})
    assert shown.returncode == 0, shown.stderr
    # gpu_peak_mib, kv_tokens, max_running
    assert re.search(r"^ +0 +COMPLETE .* 67\.896 +75,237\.6 +363119 +4096 ", shown.stdout, re.M), shown.stdout
    assert re.search(r"^ +3 +WAITING .* – +– +– +–", shown.stdout, re.M), shown.stdout
