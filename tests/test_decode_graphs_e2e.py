"""Issue 25, piece 1: a trial's decode steps without a CUDA graph, read from its server.log during `tune start`
and shown by `tune status`, the trial's dashboard note and the report (through the stand-in, which logs "cuda
graph: False" once the running batch outgrows --cuda-graph-max-bs-decode)."""

from __future__ import annotations

import optuna
import pytest

from conftest import tune, write_run, write_space


@pytest.mark.parametrize(("graph_bs", "graphless"), [(2, True), (16, False)])
def test_graphless_decode_is_recorded_and_shown(tmp_path, graph_bs: int, graphless: bool) -> None:
    space = write_space(
        tmp_path / "space.yaml",
        fixed={"cuda-graph-max-bs-decode": graph_bs},
        params={"schedule-policy": {"choices": ["fcfs", "lof"]}},
    )
    run = write_run(
        tmp_path,
        space=space,
        trials=1,
        workload={"concurrency": [1, 8], "output_len": 64, "num_prompts": 32},
    )
    started = tune("start", "--config", str(run))
    assert started.returncode == 0, started.stderr + started.stdout
    storage = f"sqlite:///{tmp_path}/studies/t.db"
    trial = optuna.load_study(study_name="t", storage=storage).trials[0]
    graphs = trial.user_attrs["decode_graphs"]
    assert graphs["logged"] > 0
    # Each level's own lines: one request at a time always fits the graph.
    levels = trial.user_attrs["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 8] and all(lv["decode_logged"] > 0 for lv in levels)
    assert levels[0]["decode_graphless"] == 0 and (levels[1]["decode_graphless"] > 0) is graphless

    status = tune("status", "--config", str(run))
    assert status.returncode == 0, status.stderr
    from optuna_dashboard import get_note

    note = get_note(optuna.Trial(optuna.load_study(study_name="t", storage=storage), trial._trial_id))
    if graphless:
        assert graphs["graphless"] > 0 and graphs["graphless_min_running"] > graph_bs
        assert graphs["largest_graphed_running"] is None or graphs["largest_graphed_running"] <= graph_bs
        assert "no_graph" in status.stdout
        assert "trial 0: decode ran without a CUDA graph" in status.stdout
        assert "--cuda-graph-max-bs-decode" in status.stdout
        assert "**without a CUDA graph**" in note
        by_level = f"by level: c=1 0/{levels[0]['decode_logged']}, c=8 {levels[1]['decode_graphless']}/"
        assert by_level in status.stdout and by_level in note
    else:
        assert graphs["graphless"] == 0 and graphs["first_graphless_at"] is None
        assert "no_graph" not in status.stdout and "without a CUDA graph" not in status.stdout
        assert f"every one of {graphs['logged']} logged steps ran with a CUDA graph" in note

    report = tune("report", "--config", str(run), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert ("decode ran without a CUDA graph" in page) is graphless
