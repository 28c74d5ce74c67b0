"""Workload shapes against hand-computed expectations: bench_serving's range ratio, gamma arrivals (burstiness),
the generated-shared-prefix structure, and 32k-token prompts through the client and the stand-in."""

import numpy as np
import pytest
import yaml
from test_standin import launch, stop, wait_ready

from tuner.bench.client import run_benchmark
from tuner.bench.workload import SLO, Level, LoadSearch, SharedPrefix, Workload, arrival_times, build_prompts


def test_range_ratio_lengths_are_uniform_between_len_times_ratio_and_len():
    lv = Level(concurrency=1, input_len=100, output_len=16, num_prompts=4000)
    prompts = build_prompts(Workload(levels=(lv,), range_ratio=0.5), lv)
    ins = np.array([p.prompt_len for p in prompts])
    outs = np.array([p.output_len for p in prompts])
    assert ins.min() == 50 and ins.max() == 100 and len(set(ins)) == 51  # [int(100 * 0.5), 100], both ends
    assert outs.min() == 8 and outs.max() == 16
    assert abs(ins.mean() - 75) < 1.5 and abs(outs.mean() - 12) < 0.3
    assert all(len(p.ids) == p.prompt_len for p in prompts)
    text = build_prompts(Workload(levels=(lv,), range_ratio=0.5, prompt_kind="text"), lv)
    assert all(len(p.text.split()) == p.prompt_len for p in text)
    # ratio 0 still asks for at least one token
    tiny = build_prompts(Workload(levels=(lv,), range_ratio=0.0), lv)
    assert min(p.prompt_len for p in tiny) == 1 and min(p.output_len for p in tiny) == 1
    fixed = build_prompts(Workload(levels=(lv,)), lv)
    assert {p.prompt_len for p in fixed} == {100} and {p.output_len for p in fixed} == {16}


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_arrivals_keep_the_rate_and_have_cv_squared_one_over_burstiness(burstiness):
    lv = Level(concurrency=1, input_len=1, output_len=1, num_prompts=40_000, request_rate=10.0)
    gaps = np.diff(arrival_times(lv, seed=3, burstiness=burstiness))
    assert abs(gaps.mean() - 0.1) < 0.004  # mean gap 1/rate whatever the burstiness
    cv2 = gaps.var() / gaps.mean() ** 2  # gamma(k, theta): var / mean^2 = 1 / k
    assert abs(cv2 - 1 / burstiness) < 0.08 / burstiness


def test_shared_prefix_groups_share_exactly_the_system_prompt_and_are_shuffled():
    sp = SharedPrefix(groups=3, prompts_per_group=4, system_prompt_len=32, question_len=8, output_len=5)
    lv = Level(concurrency=1, input_len=sp.input_len, output_len=5, num_prompts=24)
    w = Workload(levels=(lv,), shared_prefix=sp, seed=7)
    prompts = build_prompts(w, lv)
    groups = [p.group for p in prompts]
    assert sorted(groups) == sorted([0, 1, 2] * 8)  # two rounds of 3 groups x 4 prompts
    assert groups != [(k % 12) // 4 for k in range(24)]  # not built order: shuffled, as bench_serving does
    assert all(len(p.ids) == 40 and p.prompt_len == 40 and p.output_len == 5 for p in prompts)

    def common(a, b):
        return int(np.argmax(a != b)) if (a != b).any() else len(a)

    for i, a in enumerate(prompts):
        for b in prompts[i + 1 :]:
            assert common(a.ids, b.ids) == (32 if a.group == b.group else 0), (a.group, b.group)
    # the same system prompts in another level of the workload: the prefix is the workload's, not the level's
    other = build_prompts(w, Level(concurrency=1, input_len=40, output_len=5, num_prompts=5))
    by_group = {p.group: p.ids[:32] for p in prompts}
    assert all(np.array_equal(p.ids[:32], by_group[p.group]) for p in other)
    text = build_prompts(Workload(levels=(lv,), shared_prefix=sp, prompt_kind="text"), lv)
    heads = {p.group: p.text.split("\n\n")[0] for p in text}
    assert all(p.text.split("\n\n")[0] == heads[p.group] and len(heads[p.group].split()) == 32 for p in text)
    assert len(set(heads.values())) == 3


def test_32k_token_prompts_go_through_the_client_and_the_standin():
    proc, base = launch()
    try:
        wait_ready(base, proc)
        lv = Level(concurrency=4, input_len=32_000, output_len=4, num_prompts=8)
        res = run_benchmark(base, "Qwen/Qwen3-8B", Workload(levels=(lv,), warmup_requests=1))
    finally:
        stop(proc)
    r = res.levels[0]
    assert r.failed == 0 and r.completed == 8, r.errors
    assert r.total_input_tokens == 8 * 32_000  # the server's usage.prompt_tokens: every id arrived


def test_the_run_file_shape_builds_these_workloads(tmp_path):
    from tuner.config.run import load_config

    run = tmp_path / "run.yaml"
    run.write_text(
        yaml.safe_dump(
            {
                "model": {"path": "m"},
                "workload": {
                    "dataset": "shared-prefix",
                    "range_ratio": 0.5,
                    "concurrency": [4],
                    "shared_prefix": {
                        "groups": 2,
                        "prompts_per_group": 3,
                        "system_prompt_len": 100,
                        "question_len": 10,
                        "output_len": 7,
                    },
                    "arrival": {"process": "gamma", "burstiness": 0.5},
                },
                "objective": {
                    "metrics": ["goodput"],
                    "slo": {"p99_ttft_ms": 2000, "p99_tpot_ms": 50},
                    "load_search": {"start_rate": 1, "max_rate": 8, "max_concurrency": 64},
                },
            }
        )
    )
    c = load_config(run)
    w = c.workload.build(SLO())
    assert w.shared_prefix == SharedPrefix(2, 3, 100, 10, 7) and w.burstiness == 0.5 and w.range_ratio == 0.5
    assert (w.levels[0].input_len, w.levels[0].output_len) == (110, 7)
    assert w.describe()["dataset"] == "shared-prefix" and w.describe()["arrival"] == "gamma"
    assert c.objective.search == LoadSearch(start_rate=1, max_rate=8, max_concurrency=64)
    # defaults stay what they were: fixed concurrency levels, no search
    plain = load_config(None, {"model.path": "m"})
    assert plain.objective.search is None and plain.workload.build(SLO()).describe()["dataset"] == "random"
    # a ShareGPT file named by dataset, as earlier run files did, is still read as one
    data = tmp_path / "d.json"
    data.write_text('[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]')
    legacy = load_config(None, {"model.path": "m", "workload.dataset": str(data)})
    new = load_config(None, {"model.path": "m", "workload.dataset": "sharegpt", "workload.path": str(data)})
    assert legacy.workload.build(SLO()).dataset == new.workload.build(SLO()).dataset == str(data)


@pytest.mark.parametrize("policy", ["fcfs", "lpm"])
def test_shared_prefix_prompts_hit_the_radix_cache(policy):
    """Our shared-prefix prompts really share their system prompt: with the radix cache a group's later requests
    skip its prefill, so TTFT drops well below the same workload with --disable-radix-cache."""
    sp = SharedPrefix(groups=2, prompts_per_group=6, system_prompt_len=2048, question_len=32, output_len=2)
    lv = Level(concurrency=1, input_len=sp.input_len, output_len=2, num_prompts=12)
    w = Workload(levels=(lv,), shared_prefix=sp, warmup_requests=1)
    ttft = {}
    for radix in (True, False):
        proc, base = launch(
            "--schedule-policy", policy, *(() if radix else ("--disable-radix-cache",)), SGLANG_STANDIN_SPEED="1.0"
        )
        try:
            wait_ready(base, proc)
            r = run_benchmark(base, "Qwen/Qwen3-8B", w).levels[0]
        finally:
            stop(proc)
        assert r.failed == 0, r.errors
        ttft[radix] = r.median_ttft_ms
    # uncached: 3 ms + 0.03 ms x 2080 tokens = 65 ms of prefill; cached: the 32-token question, about 4 ms
    assert ttft[True] < 0.5 * ttft[False], ttft


@pytest.mark.parametrize(
    "preset, shape",
    [
        ("seed-concurrency", [(1, 128), (5, 128), (10, 128), (20, 128)]),
        ("seed-response-time", [(1, 10), (1, 50), (1, 100), (1, 500)]),
    ],
)
def test_a_workload_preset_builds_the_seeds_levels(preset, shape):
    """README's ``preset:`` (build once read .levels off the tuple of levels a preset is, and every run file
    with one failed to load)."""
    from tuner.config.run import WorkloadConfig

    levels = WorkloadConfig(preset=preset).build(SLO()).levels
    assert [(lv.concurrency, lv.output_len) for lv in levels] == shape
