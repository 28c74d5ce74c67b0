"""Your traffic as the workload: a request log the tests generate (known lengths, shared system prompts, bursts)
turned into prompts and arrivals that keep its length distribution, its prefix sharing token for token, and its
burstiness at a scaled rate; SGLang's own JSON request log read as the same traffic; and `tune start` on it
against the stand-in."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from test_standin import launch, stop, wait_ready

from conftest import tune as tune_cli
from conftest import write_run, write_space
from tuner.bench.client import run_benchmark
from tuner.bench.request_log import RequestLogError, log_traffic, read_request_log, traffic
from tuner.bench.workload import SLO, Level, Workload, build_prompts, level_arrivals
from tuner.config.run import ConfigError, load_config
from tuner.search.storage import load_existing_study

GROUPS = 4
SYSTEM_WORDS = 200  # each group's system prompt, in words (one token each)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Log:
    """A generated log: per request its arrival, group (-1: no system prompt), words of question, output."""

    def __init__(self, n: int = 600, seed: int = 5):
        rng = np.random.default_rng(seed)
        # bursts of 20 requests 20 ms apart on average, 3 s of quiet between bursts on average
        gaps = np.where(np.arange(n) % 20 == 0, rng.exponential(3.0, n), rng.exponential(0.02, n))
        gaps[0] = 0.0
        self.arrivals = T0 + np.cumsum(gaps)
        self.group = np.where(rng.random(n) < 0.7, rng.integers(0, GROUPS, n), -1)
        self.question = rng.integers(20, 800, n)  # words
        self.output = rng.integers(8, 300, n)
        self.systems = [" ".join(f"s{g}w{k:03d}" for k in range(SYSTEM_WORDS)) for g in range(GROUPS)]
        self.questions = [" ".join(f"q{w:05d}" for w in rng.integers(0, 100_000, q)) for q in self.question]

    @property
    def input_tokens(self) -> np.ndarray:
        return self.question + np.where(self.group >= 0, SYSTEM_WORDS, 0) + 2  # the two role words

    def messages(self, i: int) -> list[dict]:
        g = self.group[i]
        return [
            {"role": "system", "content": self.systems[g] if g >= 0 else ""},
            {"role": "user", "content": self.questions[i]},
        ]

    def openai(self, path: Path, *, text: bool = True) -> Path:
        with path.open("w") as f:
            for i in np.random.default_rng(1).permutation(len(self.arrivals)):  # a log in finishing order
                rec = {
                    "timestamp": datetime.fromtimestamp(self.arrivals[i], UTC).isoformat(),
                    "request": {"model": "m", "messages": self.messages(i)} if text else {"model": "m"},
                    "response": {
                        "usage": {"prompt_tokens": int(self.input_tokens[i]), "completion_tokens": int(self.output[i])}
                    },
                }
                f.write(json.dumps(rec) + "\n")
        return path

    def sglang(self, path: Path) -> Path:
        """SGLang's --log-requests-format json events, with its other log lines around them."""
        lines = ["[2026-01-01 00:00:00] INFO:     Started server process [123]"]
        for i in range(len(self.arrivals)):
            e2e = 0.5 + i % 7
            text = "\n".join(f"{m['role']}\n{m['content']}" for m in self.messages(i))
            obj = {"rid": f"r{i}", "text": text, "sampling_params": {"max_new_tokens": int(self.output[i])}}
            received = {"rid": f"r{i}", "obj": obj}
            lines.append(json.dumps({"timestamp": "2026-01-01T00:00:00", "event": "request.received", **received}))
            meta = {
                "prompt_tokens": int(self.input_tokens[i]),
                "completion_tokens": int(self.output[i]),
                "e2e_latency": e2e,
            }
            finished = {"rid": f"r{i}", "obj": obj, "out": {"text": "...", "meta_info": meta}}
            when = datetime.fromtimestamp(self.arrivals[i] + e2e, UTC).isoformat()
            lines.append(json.dumps({"timestamp": when, "event": "request.finished", **finished}))
            lines.append("[2026-01-01 00:00:01] Decode batch, #running-req: 3, #token: 1200")
        path.write_text("\n".join(lines) + "\n")
        return path

    def sglang_metrics(self, path: Path) -> Path:
        """SGLang's --export-metrics-to-file lines, in finishing order; half of them without request_received_ts
        (then their end time less e2e_latency)."""
        with path.open("w") as f:
            for i in np.random.default_rng(2).permutation(len(self.arrivals)):
                text = "\n".join(f"{m['role']}\n{m['content']}" for m in self.messages(i))
                params = {"text": text, "sampling_params": {"max_new_tokens": int(self.output[i])}, "stream": True}
                meta = {"prompt_tokens": int(self.input_tokens[i]), "completion_tokens": int(self.output[i])}
                times = (
                    {"request_received_ts": float(self.arrivals[i])}
                    if i % 2
                    else {"e2e_latency": 1.5, "response_sent_to_client_ts": float(self.arrivals[i]) + 1.5}
                )
                f.write(json.dumps({"request_parameters": json.dumps(params), "id": f"r{i}", **meta, **times}) + "\n")
        return path


def _run_file(tmp_path: Path, **kw) -> Path:
    """write_run's run file with a request-log workload: without the lengths it sets, which the log gives."""
    run = write_run(tmp_path, **kw)
    raw = yaml.safe_load(run.read_text())
    del raw["workload"]["input_len"], raw["workload"]["output_len"]
    run.write_text(yaml.safe_dump(raw, sort_keys=False))
    return run


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = a[:n] != b[:n]
    return int(np.argmax(diff)) if diff.any() else n


def _workload(path: Path, **kw) -> Workload:
    t = log_traffic(str(path))
    lv = Level(1, int(t.input_lens.mean()), int(t.output_lens.mean()), len(t))
    return Workload(levels=(lv,), request_log=str(path), **kw)


def test_the_workload_keeps_the_logs_length_distribution(tmp_path):
    log = Log()
    w = _workload(log.openai(tmp_path / "log.jsonl"))
    for n in (len(log.arrivals), 3 * len(log.arrivals)):  # the log once, and three times over
        prompts = build_prompts(w, Level(1, 1, 1, n))
        ins = np.array([p.prompt_len for p in prompts])
        outs = np.array([p.output_len for p in prompts])
        assert all(len(p.ids) == p.prompt_len for p in prompts)  # what is sent has the logged length
        q = [5, 25, 50, 75, 95, 99]
        order = np.argsort(log.arrivals)
        assert np.percentile(ins, q) == pytest.approx(np.percentile(log.input_tokens[order], q), abs=1)
        assert np.percentile(outs, q) == pytest.approx(np.percentile(log.output[order], q), abs=1)
        assert ins[: len(order)].tolist() == log.input_tokens[order].tolist()  # request by request, in order


@pytest.mark.parametrize("kind", ["ids", "text"])
def test_requests_with_a_common_system_prompt_share_it_token_for_token(tmp_path, kind):
    log = Log(n=200)
    w = _workload(log.openai(tmp_path / "log.jsonl"), prompt_kind=kind)
    n = len(log.arrivals)
    prompts = build_prompts(w, Level(1, 1, 1, 2 * n))
    seqs = [p.ids if kind == "ids" else np.array(p.text.split()) for p in prompts]
    assert [len(s) for s in seqs] == [p.prompt_len for p in prompts]
    group = log.group[np.argsort(log.arrivals)]
    shared_prefix = SYSTEM_WORDS + 2  # "system" and the system prompt's words (the rest is random)
    for i in range(n):
        for j in range(i + 1, n):
            c = _common(seqs[i], seqs[j])
            if group[i] >= 0 and group[i] == group[j]:
                assert shared_prefix - 1 <= c <= shared_prefix + 1, (i, j, c)
            else:
                assert c <= 3, (i, j, c)  # the role word, and an id or word drawn alike by chance
    # the second pass over the log shares within itself, never with the first (it would be all cache hits)
    assert max(_common(seqs[i], seqs[n + i]) for i in range(n)) <= 3
    # warm-up prompts share nothing with the measured ones
    warm = build_prompts(w, Level(1, 1, 1, n), warmup=True)
    warm_seqs = [p.ids if kind == "ids" else np.array(p.text.split()) for p in warm]
    assert max(_common(a, b) for a in warm_seqs[:50] for b in seqs[:50]) <= 3


def test_a_log_without_prompts_keeps_lengths_and_says_prefix_sharing_is_unknown(tmp_path):
    log = Log(n=100)
    t = log_traffic(str(log.openai(tmp_path / "counts.jsonl", text=False)))
    assert (t.parent == -1).all() and t.shared.sum() == 0 and t.with_text == 0
    assert "unknown for 100 of 100 requests" in t.summary()["prefix_sharing"]
    with_text = log_traffic(str(log.openai(tmp_path / "text.jsonl"))).summary()["prefix_sharing"]
    assert 0.1 < with_text < 0.5


@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_arrivals_keep_the_logs_burstiness_at_a_scaled_rate(tmp_path, scale):
    log = Log(n=2000)
    t = log_traffic(str(log.openai(tmp_path / "log.jsonl")))
    gaps = np.diff(np.sort(log.arrivals))
    log_cv = gaps.std() / gaps.mean()
    assert t.rate == pytest.approx(1 / gaps.mean()) and t.gap_cv == pytest.approx(log_cv)
    rate = scale * t.rate
    for n in (len(t), 3 * len(t)):
        at = level_arrivals(_workload(tmp_path / "log.jsonl"), Level(64, 1, 1, n, rate))
        assert at is not None and at[0] == 0 and len(at) == n
        level_gaps = np.diff(at)
        assert level_gaps.mean() == pytest.approx(1 / rate, rel=1e-9)  # the level's rate, exactly
        assert level_gaps.std() / level_gaps.mean() == pytest.approx(log_cv, rel=0.02)  # the log's burstiness
        # the bursts themselves: the gap sequence is the log's, scaled
        assert np.corrcoef(level_gaps[: len(gaps)], gaps)[0, 1] > 0.999
    # a level shorter than the log replays its start, still at the level's rate
    part = np.diff(level_arrivals(_workload(tmp_path / "log.jsonl"), Level(64, 1, 1, len(t) // 3 + 7, rate)))
    assert part.mean() == pytest.approx(1 / rate, rel=1e-9)
    assert np.corrcoef(part, gaps[: len(part)])[0, 1] > 0.999
    assert log_cv > 3  # a bursty log: Poisson arrivals would have a CV of 1
    assert level_arrivals(_workload(tmp_path / "log.jsonl"), Level(64, 1, 1, 10)) is None  # no rate: no schedule


def test_the_client_sends_the_logs_requests_at_its_bursts(tmp_path):
    """Through the client to the stand-in: each request's sent length is the log's, and the send times are the
    log's gaps at the level's rate (Poisson sends would have a gap CV near 1)."""
    log = Log(n=100)
    w = _workload(log.openai(tmp_path / "log.jsonl"), warmup_requests=1, flush_cache=False)
    t = log_traffic(str(tmp_path / "log.jsonl"))
    level = Level(100, w.levels[0].input_len, w.levels[0].output_len, 100, request_rate=50.0)
    proc, base = launch()
    try:
        wait_ready(base, proc)
        res = run_benchmark(base, "Qwen/Qwen3-8B", w, levels=[level])
    finally:
        stop(proc)
    r = res.levels[0]
    assert r.failed == 0 and r.completed == 100, r.errors
    assert r.total_input_tokens == int(t.input_lens.sum())  # the server's usage.prompt_tokens
    sent = np.diff(sorted(rec.start for rec in res.records[0]))
    assert sent.std() / sent.mean() > 0.6 * t.gap_cv  # the bursts, blurred only by the client's own timing
    assert sent.sum() == pytest.approx(99 / 50.0, rel=0.1)


def test_sglangs_request_logs_read_as_the_same_traffic(tmp_path):
    log = Log(n=150)
    a = log_traffic(str(log.openai(tmp_path / "openai.jsonl")))
    b = log_traffic(str(log.sglang(tmp_path / "sglang.log")))
    assert a.input_lens.tolist() == b.input_lens.tolist() and a.output_lens.tolist() == b.output_lens.tolist()
    assert a.parent.tolist() == b.parent.tolist() and a.shared.tolist() == b.shared.tolist()
    assert b.gaps_s == pytest.approx(a.gaps_s, abs=1e-5)  # arrival = finished - e2e_latency
    m = log_traffic(str(log.sglang_metrics(tmp_path / "sglang-request-metrics-20260101_00.log")))
    assert m.input_lens.tolist() == a.input_lens.tolist() and m.output_lens.tolist() == a.output_lens.tolist()
    assert m.parent.tolist() == a.parent.tolist() and m.shared.tolist() == a.shared.tolist()
    assert m.gaps_s == pytest.approx(a.gaps_s, abs=1e-5)
    # --log-requests-level 2 cuts a long text to its ends: that prefix is unknown, the counts are kept
    events = [json.loads(line) for line in (tmp_path / "sglang.log").read_text().splitlines() if line[:1] == "{"]
    finished = [e for e in events if e["event"] == "request.finished"]  # in arrival order, as generated
    long = np.array([len(e["obj"]["text"]) > 2048 for e in finished])
    for e in finished:
        text = e["obj"]["text"]
        e["obj"]["text"] = text[:1024] + "..." + text[-1024:] if len(text) > 2048 else text
    (tmp_path / "cut.log").write_text("\n".join(map(json.dumps, finished)))
    c = traffic(read_request_log(tmp_path / "cut.log"))
    assert long.any() and c.with_text == int((~long).sum()) and (c.parent[long] == -1).all()
    assert c.input_lens.tolist() == a.input_lens.tolist()


@pytest.mark.parametrize(
    "text, words",
    [
        (
            '{"timestamp": 1, "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n{"usage": 3}\n',
            ("log.jsonl:2", "usage"),
        ),
        ('{"timestamp": 1, "usage": {"prompt_tokens": 5}}\n', ("log.jsonl:1", "completion_tokens")),
        ('{"prompt": "hi", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n' * 2, ("log.jsonl:1", "no a time")),
        ('{"timestamp": 1, "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n', ("1 requests", "at least 2")),
        ('{"timestamp": 1, \n', ("log.jsonl:1", "not json")),
        ("[..] Finish: obj=GenerateReqInput(text='hi'), out={}\n", ("--log-requests-format json",)),
        ('{"timestamp": 7, "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n' * 3, ("same time",)),
    ],
)
def test_a_file_that_is_no_request_log_is_one_line_that_says_where(tmp_path, text, words):
    (tmp_path / "log.jsonl").write_text(text)
    with pytest.raises(RequestLogError) as err:
        read_request_log(tmp_path / "log.jsonl")
    assert "\n" not in str(err.value) and all(w in str(err.value).lower() for w in words), str(err.value)


def test_the_run_file_builds_a_request_log_workload_and_checks_the_log_first(tmp_path):
    log = Log(n=100)
    log.openai(tmp_path / "traffic.jsonl")
    run = _run_file(tmp_path, workload={"dataset": "request-log", "path": "traffic.jsonl"})
    c = load_config(run)
    w = c.workload.build(SLO())
    assert w.request_log == str(tmp_path / "traffic.jsonl")  # beside the run file
    assert w.levels[0].input_len == round(log.input_tokens.mean()) and w.describe()["dataset"] == "request-log"
    assert w.describe()["arrival"] == "log" and w.describe()["requests"] == 100
    (tmp_path / "bad.jsonl").write_text("not a log\n")
    bad = _run_file(tmp_path, workload={"dataset": "request-log", "path": "bad.jsonl"})
    with pytest.raises(ConfigError, match=r"workload.path: .*bad.jsonl: 0 requests"):
        load_config(bad)


def test_tune_start_replays_the_log_against_the_standin(tmp_path, unique_study):
    """The load search's levels replay the log at their rates; the server gets the log's lengths (its
    usage.prompt_tokens add up to them) and its radix cache sees the shared system prompts."""
    log = Log(n=120)
    log.openai(tmp_path / "traffic.jsonl")
    space = write_space(tmp_path / "space.yaml", params={"schedule-policy": {"choices": ["fcfs", "lpm"]}})
    run = _run_file(
        tmp_path,
        study=unique_study,
        space=space,
        trials=2,
        workload={"dataset": "request-log", "path": str(tmp_path / "traffic.jsonl"), "num_prompts": None},
        objective={
            "metrics": ["goodput"],
            "slo": {"p99_ttft_ms": 5000},
            "load_search": {
                "start_rate": 20,
                "max_rate": 40,
                "factor": 2,
                "bisect_steps": 0,
                "level_duration_s": 1,
                "min_prompts": 120,
            },
        },
    )
    done = tune_cli("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    study = load_existing_study(load_config(run))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    trial = study.trials[0]
    described = trial.user_attrs["workload"]
    assert described["dataset"] == "request-log" and described["requests"] == 120 and described["arrival"] == "log"
    assert 0.1 < described["prefix_sharing"] < 0.5
    levels = trial.user_attrs["levels"]
    assert [lv["request_rate"] for lv in levels][:1] == [20.0]
    trial_dir = tmp_path / "trials" / unique_study / "0"
    with open(trial_dir / "benchmark.csv") as f:
        first = next(csv.DictReader(f))
    assert int(first["total_input_tokens"]) == int(log.input_tokens.sum())  # the server counted the log's lengths
    server_log = (trial_dir / "server.log").read_text()
    cached = [
        int(line.split("#cached-token: ")[1].split(",")[0])
        for line in server_log.splitlines()
        if "#cached-token: " in line
    ]
    assert sum(cached) > 0.5 * SYSTEM_WORDS * (log.group >= 0).sum()  # the shared system prompts were reused
    assert tune_cli("export", "-c", str(run), "--out", str(tmp_path / "out")).returncode == 0
    header = (tmp_path / "out" / "deploy-best.sh").read_text()
    assert f"with the traffic of {tmp_path / 'traffic.jsonl'} (120 requests at their logged lengths and gaps)" in header


def test_a_log_without_prompts_is_replayed_and_tune_start_says_prefix_sharing_is_not_kept(tmp_path, unique_study):
    log = Log(n=40)
    log.openai(tmp_path / "counts.jsonl", text=False)
    run = _run_file(
        tmp_path,
        study=unique_study,
        trials=1,
        workload={"dataset": "request-log", "path": "counts.jsonl", "num_prompts": None, "concurrency": [4]},
        objective={
            "metrics": ["goodput"],
            "slo": {"p99_ttft_ms": 5000},
            "load_search": {"start_rate": 40, "max_rate": 40, "level_duration_s": 1, "min_prompts": 40},
        },
    )
    done = tune_cli("start", "-c", str(run))
    assert done.returncode == 0, done.stderr
    assert "warning: workload.path " in done.stderr and "prefix sharing unknown for 40 of 40 requests" in done.stderr
    [trial] = load_existing_study(load_config(run)).trials
    assert trial.user_attrs["workload"]["prefix_sharing"].startswith("unknown")


def test_the_longest_request_is_the_logs_not_the_mean(tmp_path):
    """Context-length failures are predicted from the longest request (search.checks); a log's is its own."""
    log = Log(n=100)
    w = _workload(log.openai(tmp_path / "log.jsonl"))
    assert w.longest_request() == int((log.input_tokens + log.output).max())
