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
        table = [line for line in lines if not line.startswith(("REPLAY", "/", "(", "from "))]
        assert all(len(line) <= 80 for line in table), max(table, key=len)
        assert len(lines) < 120, len(lines)  # 733 lines before: a column per character
        # Every number whole on one line, every flag with its value.
        assert re.search(r"^ +3 +COMPLETE +none +yes +4,677\.7 +trial 3$", shown.stdout, re.M), shown.stdout
        assert "      --mem-fraction-static 0.7 --cuda-graph-max-bs-decode 128" in lines
        assert not any(line.rstrip().endswith("--") or line.rstrip().endswith("-") for line in lines)
