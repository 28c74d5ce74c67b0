"""deploy-best.sh of a goodput study says what was measured: the workload, the load-vs-latency levels and the
highest rate holding the SLO, from the real H200 shared-prefix study (docs/h200-chat/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB = ROOT / "docs" / "h200-chat" / "h200-qwen3-8b-chat.db"


def test_goodput_header_names_workload_rates_and_slo(tmp_path):
    db = tmp_path / "chat.db"
    shutil.copy(DB, db)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tuner.cli import app; app()",
            "export",
            "--storage",
            f"sqlite:///{db}",
            "--study",
            "h200-qwen3-8b-chat",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    header = [line for line in (tmp_path / "deploy-best.sh").read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert (
        "Measured with shared-prefix chat (16 groups x 16, system prompt 2048, question 128, output 256 "
        "tokens, poisson arrivals)" in text
    )
    rates = [line for line in header if "req/s: goodput" in line]
    assert [float(line.split()[1]) for line in rates] == [4.0, 8.0, 16.0, 32.0, 24.0, 28.0]
    assert "32.00 req/s: goodput   14.13 req/s, p99 TTFT    956.8 ms, p99 TPOT   45.52 ms, SLO broken" in text
    assert (
        "Highest rate holding the SLO (p99_ttft_ms <= 2000, p99_tpot_ms <= 40): 28 req/s, goodput 22.21 req/s"
    ) in text
    # The best is the baseline itself: no "vs SGLang defaults" against itself, and no concurrency rows.
    assert "vs SGLang defaults" not in text and "concurrency" not in text
