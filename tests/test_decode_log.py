"""Decode steps without a CUDA graph, read from SGLang's decode log lines (real 0.5.17 lines from the H200)."""

from __future__ import annotations

from conftest import ROOT
from tuner.sglang.decode_log import DecodeGraphs

H200_LOG = ROOT / "tests" / "data" / "sglang-0.5.17-h200-healthy.log"


def test_a_real_h200_log_with_graphs_everywhere_says_nothing() -> None:
    graphs = DecodeGraphs.of(H200_LOG.read_text())
    assert graphs.logged > 0 and graphs.graphless == 0
    assert graphs.largest_graphed_running == 64 and graphs.summary() is None


def test_graphless_steps_are_counted_with_their_batch_sizes_and_first_time() -> None:
    log = "\n".join(
        [
            "[2026-11-28 13:56:46] Decode batch, #running-req: 200, #token: 1, token usage: 0.04, cuda graph: True, "
            "gen throughput (token/s): 2358.64, #queue-req: 0",
            "[2026-11-28 13:56:47 TP0] Decode batch (iter 80), #running-req: 300, #token: 1, token usage: 0.05, "
            "cuda graph: False, gen throughput (token/s): 1900.00, #queue-req: 12",
            "[2026-11-28 13:56:48] Prefill batch, #new-seq: 4, #new-token: 2048, cuda graph: False",
            "[2026-11-28 13:56:49] Decode batch, #running-req: 260, #token: 1, token usage: 0.05, cuda graph: False, "
            "gen throughput (token/s): 1800.00, #queue-req: 3",
            "[2026-11-28 13:56:50] Decode batch, #running-req: 256, #token: 1, token usage: 0.05, cuda graph: True, "
            "gen throughput (token/s): 3000.00, #queue-req: 0",
        ]
    )
    graphs = DecodeGraphs.of(log)
    assert (graphs.logged, graphs.graphless) == (4, 2)  # the prefill line is not a decode step
    assert (graphs.graphless_min_running, graphs.graphless_max_running) == (260, 300)
    assert graphs.first_graphless_at == "2026-11-28 13:56:47" and graphs.largest_graphed_running == 256
    assert graphs.summary() == (
        "decode ran without a CUDA graph in 2 of 4 logged steps, at 260-300 running requests, first at "
        "2026-11-28 13:56:47; the largest batch decoded with a graph: 256: raise --cuda-graph-max-bs-decode or "
        "lower --max-running-requests"
    )


def test_each_level_reads_only_its_own_span_of_the_log(tmp_path) -> None:
    line = (
        "[2026-11-28 13:56:{s:02d}] Decode batch, #running-req: {n}, #token: 1, token usage: 0.04, cuda graph: {g}, "
        "gen throughput (token/s): 1.00, #queue-req: 0\n"
    )
    first = line.format(s=1, n=1, g=True) * 2
    second = line.format(s=2, n=9, g=False) + line.format(s=3, n=4, g=True)
    log = tmp_path / "server.log"
    log.write_text("[2026-11-28 13:56:00] startup\n" + first + second)
    start = len("[2026-11-28 13:56:00] startup\n")
    whole, spans = DecodeGraphs.of_log(log, [start, start + len(first), start + len(first) + len(second)])
    assert [(g.logged, g.graphless) for g in spans] == [(2, 0), (2, 1)] and (whole.logged, whole.graphless) == (4, 1)
    assert spans[1].first_graphless_at == "2026-11-28 13:56:02" and spans[1].largest_graphed_running == 4
    # A level that ended while its last line was being written keeps that line; the next level starts after it.
    cut = start + len(first) - 100  # inside the level's last line, before its "cuda graph:"
    _, spans = DecodeGraphs.of_log(log, [start, cut, start + len(first) + len(second)])
    assert [(g.logged, g.graphless) for g in spans] == [(2, 0), (2, 1)]
    assert DecodeGraphs.of_log(tmp_path / "absent.log", [0, 10]) == (DecodeGraphs(), ())
