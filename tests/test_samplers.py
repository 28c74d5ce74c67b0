"""The starts that use what is known before the first launch (tuner/search/samplers.py), each in a real replayed
`tune start` on the committed H200 surface (SQLite): the walk from SGLang's defaults, the Sobol start, the warm
start from an earlier study's surface. Which of them is faster to a good config is benchmarks/SAMPLERS.md's."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import ROOT, tune, write_run, write_space
from tuner.config.space import load_space
from tuner.search.samplers import DefaultsWalk, start_point, warm_start_params
from tuner.trial.record import TrialRecord
from tuner.views.dashboard import trial_note

H200 = ROOT / "surfaces" / "h200-qwen3-8b-random.json"
CHAT = ROOT / "surfaces" / "h200-qwen3-8b-chat.json"
SPACE = ROOT / "search_spaces" / "h200-qwen3-8b.yaml"
# The stand-in's surface: SGLang's defaults there are 0.79 of the best, so a walk has something to keep.
STANDIN = {
    "space": str(ROOT / "search_spaces" / "default.yaml"),
    "launcher": {"kind": "replay", "surface": str(ROOT / "benchmarks" / "surfaces" / "standin-default.json")},
    "workload": {"input_len": 128, "output_len": 48, "concurrency": [4, 16], "num_prompts": 48},
    "objective": {"metrics": ["output_throughput"], "at_concurrency": 16},
}


def replay(tmp_path, study: str, trials: int, surface: dict | None = None, **sampler) -> optuna.Study:
    """`tune start` of a replayed study on the H200 surface (or ``surface``'s keys); the finished study."""
    run = tmp_path / f"{study}.yaml"
    run.write_text(
        yaml.safe_dump(
            {
                "study": study,
                "storage": f"sqlite:///{tmp_path}/{study}.db",
                "trials_dir": str(tmp_path / "trials"),
                "space": str(SPACE),
                "trials": trials,
                "launcher": {"kind": "replay", "surface": str(H200)},
                "workload": {"input_len": 512, "output_len": 128, "concurrency": [1, 16, 64]},
                "objective": {"metrics": ["output_throughput"], "at_concurrency": 64},
                "sampler": {"seed": 3, **sampler},
                "confirm": None,
                **(surface or {}),
            }
        )
    )
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/{study}.db")


def test_defaults_walk_starts_from_the_baseline_and_moves_one_flag_per_trial(tmp_path):
    walk = 8
    study = replay(tmp_path, "walk", 10, STANDIN, name="defaults-walk", n_startup_trials=walk)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10 and TrialRecord.of(trials[0]).is_baseline and trials[0].params == {}
    space = load_space(STANDIN["space"])
    start = start_point(space)
    assert start["schedule-policy"] == "fcfs" and start["enable-torch-compile"] is False  # SGLang's own
    assert start["mem-fraction-static"] == 0.82  # sized by SGLang at startup: the space's middle

    def moved(params: dict, point: dict) -> set[str]:
        """The flags SGLang runs with differently: a conditional flag passed at SGLang's own default (the max
        batch size that turning torch compile on brings) is no change."""
        a, b = space.flags_from_params(params).as_dict(), space.flags_from_params(point).as_dict()
        return {k for k in a.keys() | b.keys() if a.get(k, start.get(k)) != b.get(k, start.get(k))}

    best_value, best_point, kept = trials[0].values[0], start, 0
    for t in trials[1:walk]:
        assert len(moved(t.params, best_point)) == 1, (t.number, t.params, best_point)
        if TrialRecord.of(t).feasible and t.values[0] > best_value:  # kept: the next move starts from it
            best_value, best_point, kept = t.values[0], t.params, kept + 1
    assert kept  # the walk did move on from SGLang's defaults
    # After the walk, TPE: no longer one flag away from the incumbent.
    assert any(len(moved(t.params, best_point)) > 1 for t in trials[walk:])


@pytest.mark.parametrize(
    ("flags", "defaults"),
    [
        # SGLang's defaults crash (the baseline fails): no trial is feasible to walk from.
        ({"schedule-policy": ["fcfs", "lpm", "lof"], "schedule-conservativeness": [1.0, 0.5, 1.5]}, "crashed"),
        # The defaults run, but the walk's point for them, both flags SGLang sizes itself at the space's middle,
        # crashes: the baseline stays the incumbent (the public sweep's context length).
        ({"chunked-prefill-size": [4096, 2048, 8192], "mem-fraction-static": [0.8, 0.7, 0.9]}, "ran"),
    ],
    ids=["defaults-crash", "start-point-crashes"],
)
def test_defaults_walk_gets_out_of_an_infeasible_start(tmp_path, flags, defaults):
    """A grid where every config that keeps either flag at the walk's start (each list's first value) crashes:
    each one-flag move from the start fails, so a walk from it would fail every trial. After a failure it draws
    both flags at random until a trial is feasible, then walks on from that one."""
    a, b = flags
    grid = ["a,b,conc,tput,status", f",,16,{'900,' if defaults == 'ran' else ',crashed'}"]
    for x in flags[a]:
        for y in flags[b]:
            ok = x != flags[a][0] and y != flags[b][0]
            grid.append(
                f"{x},{y},16,{1000 + flags[a].index(x) + flags[b].index(y) if ok else ''},{'' if ok else 'crashed'}"
            )
    (tmp_path / "grid.csv").write_text("\n".join(grid) + "\n")
    done = tune(
        "import", "grid.csv", "--out", "grid.json", "--concurrency", "conc", "--failure", "status",
        "--flag", f"a={a}", "--flag", f"b={b}", "--metric", "tput=output_throughput", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    space = {name: {"choices": sorted(values)} for name, values in flags.items()}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"params": space}))
    assert start_point(load_space(tmp_path / "space.yaml")) == {name: values[0] for name, values in flags.items()}
    grid_run = {
        "space": str(tmp_path / "space.yaml"),
        "launcher": {"kind": "replay", "surface": str(tmp_path / "grid.json")},
        "workload": {"concurrency": [16]},
        "objective": {"metrics": ["output_throughput"], "at_concurrency": 16},
    }
    study = replay(tmp_path, "stuck", 8, grid_run, name="defaults-walk", n_startup_trials=8, seed=0)
    trials = [TrialRecord.of(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(trials) == 8 and trials[0].is_baseline and trials[0].failed == (defaults == "crashed")
    first = next((r for r in trials[1:] if r.is_feasible), None)
    assert first is not None, [r.params for r in trials]
    after = trials[first.number + 1]  # the walk again: one flag moved from the feasible trial, the best now
    assert sum(after.params[k] != first.params[k] for k in space) == 1, (first.params, after.params)


def test_sobol_start_covers_each_choice_once_where_random_repeats(tmp_path):
    """Four Sobol points stratify each dimension into quarters: the four chunk sizes are each drawn once (random
    draws would repeat one in 9 studies of 10), after the baseline, which has no params."""
    for seed in (1, 2):
        study = replay(tmp_path, f"sobol{seed}", 6, name="sobol", n_startup_trials=5, seed=seed)
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == 6 and trials[0].params == {}
        assert sorted(t.params["chunked-prefill-size"] for t in trials[1:5]) == [2048, 4096, 8192, 16384]


def test_warm_start_measures_the_earlier_studys_best_configs_within_the_budget(tmp_path):
    starts = warm_start_params(str(CHAT), load_space(SPACE))
    # The chat study's three best: SGLang's defaults (trial 0), trials 7 and 10, as far as this space goes
    # (its schedule policies have no dfs-weight; a flag left to SGLang is its default where one is known).
    assert starts == [
        {"triton-attention-num-kv-splits": 8, "schedule-policy": "fcfs"},
        {"cuda-graph-max-bs-decode": 64, "triton-attention-num-kv-splits": 32, "chunked-prefill-size": 8192},
        {
            "cuda-graph-max-bs-decode": 64,
            "triton-attention-num-kv-splits": 16,
            "chunked-prefill-size": 4096,
            "schedule-policy": "lpm",
        },
    ]
    study = replay(tmp_path, "warm", 6, warm_start=str(CHAT))
    trials = study.get_trials()
    # The budget is this study's launches: the earlier study's trials never enter it, nor its results.
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert TrialRecord.of(trials[0]).is_baseline
    for t, params in zip(trials[1:], starts, strict=False):
        assert {k: t.params[k] for k in params} == params
    assert all(TrialRecord.of(t).replay is not None for t in trials)  # each measured (replayed) here
    # Marked where the views say a trial's origin (as they name the baseline and references): which trials came
    # from the earlier study, and from which surface.
    assert [TrialRecord.of(t).warm_start for t in trials] == [None, str(CHAT), str(CHAT), str(CHAT), None, None]
    assert "warm start from" not in trial_note(4, TrialRecord.of(trials[4]))
    assert trial_note(1, TrialRecord.of(trials[1])).startswith(f"## Trial 1 — warm start from {CHAT} (a best")
    run = str(tmp_path / "warm.yaml")
    status = tune("status", "-c", run)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("warm start from") == 3, status.stdout
    assert tune("report", "-c", run, cwd=tmp_path).returncode == 0
    html = (tmp_path / "reports" / "warm" / "report.html").read_text()
    assert html.count(f"warm start from {CHAT}:") == 3


@pytest.mark.parametrize("name", ["defaults-walk", "sobol"])
def test_a_resumed_study_keeps_its_start(tmp_path, name):
    """A second `tune start` with a larger budget goes on from the trials there (the hand-over counts them)."""
    replay(tmp_path, name, 3, name=name, n_startup_trials=4)
    study = replay(tmp_path, name, 6, name=name, n_startup_trials=4)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6


def test_a_resumed_warm_start_measures_each_earlier_config_once(tmp_path):
    """The warm configs are queued when the study is made: a run stopped after the first one leaves the others
    queued for the next run, which queues none again (else each resume would spend the budget on them anew)."""
    starts = warm_start_params(str(CHAT), load_space(SPACE))
    replay(tmp_path, "warm", 2, warm_start=str(CHAT))
    study = replay(tmp_path, "warm", 7, warm_start=str(CHAT))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 7
    for t, params in zip(trials[1:4], starts, strict=True):
        assert {k: t.params[k] for k in params} == params
    # Queued once: only those three trials had their params given (Optuna keeps a queued trial's as fixed_params).
    assert [t.number for t in trials if t.system_attrs.get("fixed_params")] == [1, 2, 3]


def test_defaults_walk_starts_where_sglang_settled_in_the_baseline(tmp_path):
    """A real (stand-in) study: the memory fraction SGLang chose for itself in trial 0 (the stand-in's 0.85, from
    /get_server_info) is where the walk starts, not the space's middle (0.81)."""
    space = write_space(tmp_path / "space.yaml")
    assert start_point(load_space(space))["mem-fraction-static"] == 0.81
    # A seed whose first move is the schedule policy, so trial 1 keeps the memory fraction it starts from.
    seed = next(s for s in range(20) if DefaultsWalk(load_space(space), s).order[1] == "schedule-policy")
    run = write_run(tmp_path, trials=2, space=space, sampler={"name": "defaults-walk", "seed": seed}, confirm=None)
    done = tune("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/studies/t.db")
    base, first = study.get_trials(states=(TrialState.COMPLETE,))
    assert TrialRecord.of(base).settled.mem_fraction_static == 0.85
    assert first.params == {"schedule-policy": "lof", "mem-fraction-static": 0.85}


def test_recorded_only_answers_every_sampled_trial_from_its_own_recorded_row_once(tmp_path):
    """A recorded sweep replayed as a table (launcher.recorded_only): each sampled trial is moved to a recorded
    row not tried yet, so none is modelled and none repeats; without it the same study models most trials."""
    recorded = {**STANDIN, "launcher": {**STANDIN["launcher"], "recorded_only": True}}
    for surface, modelled in ((recorded, False), (STANDIN, True)):
        (tmp_path / str(modelled)).mkdir()
        study = replay(tmp_path / str(modelled), "rows", 12, surface)
        sampled = [TrialRecord.of(t) for t in study.get_trials(states=(TrialState.COMPLETE,))][1:]  # not the baseline
        marks = [r.replay for r in sampled if r.replay]
        assert len(marks) == 11
        if modelled:
            assert sum(m.modelled for m in marks) > 5
            continue
        assert not any(m.modelled for m in marks), [m.text() for m in marks]
        assert len({m.sources for m in marks}) == 11  # each recorded row once


class _Proposes(optuna.samplers.BaseSampler):
    """Proposes ``point`` every trial (what RecordedRows moves)."""

    def __init__(self, point: dict):
        self.point = point

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.point[param_name]


def test_recorded_only_moves_a_proposal_to_the_nearest_untried_row():
    """A proposal one step from a recorded config gets that config; proposed again, the nearest other one."""
    from tuner.search.samplers import RecordedRows
    from tuner.trial.surface import Surface

    surface = Surface.load(STANDIN["launcher"]["surface"])
    space = load_space(STANDIN["space"])
    row = RecordedRows(optuna.samplers.RandomSampler(seed=0), space, surface).rows[5]
    near = {**row, "mem-fraction-static": round(row["mem-fraction-static"] + 0.01, 2)}
    rows = RecordedRows(_Proposes(near), space, surface)
    study = optuna.create_study(sampler=rows, direction="maximize")
    study.optimize(lambda t: space.sample(t) and 1.0, n_trials=2)
    first, second = (t.params for t in study.trials)
    assert first == row
    others = [r for r in rows.rows if r != row]
    assert second == others[surface.nearest(space.flags_from_params(near).as_dict(), others)] != row
