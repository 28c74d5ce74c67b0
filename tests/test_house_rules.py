"""The house rules, checked on every run of the suite: the layout of tuner/ (no import cycle, no import that runs
back up the way a trial's data flows), every import declared in pyproject.toml, ruff and mypy clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

import grimp
import pytest

from conftest import ROOT

# Bottom to top: a package may import only from packages below it (and itself). SGLang's vocabulary is at the
# bottom; a trial's way runs bench -> config -> serve -> trial -> search; views and the CLI only read.
LAYERS = ("errors", "sglang", "bench", "config", "serve", "trial", "search", "views", "cli")


def _layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS.index(part) if part in LAYERS else -1


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tuner")


def test_no_import_cycle(graph) -> None:
    cycles = sorted(
        f"{a} <-> {b}"
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if a < b and graph.chain_exists(importer=b, imported=a)
    )
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_import_runs_back_up(graph) -> None:
    up = sorted(
        f"{a} -> {b}"
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if _layer(b) > _layer(a) >= 0
    )
    assert not up, "imports against the layers " + " < ".join(LAYERS) + ": " + "; ".join(up)


def test_every_module_is_in_a_layer(graph) -> None:
    loose = sorted(m for m in graph.modules if _layer(m) < 0 and m not in ("tuner", "tuner.__main__"))
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def _tool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which(args[0], path=str(ROOT / ".venv" / "bin")) or shutil.which(args[0]) or args[0]
    return subprocess.run([exe, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_import_is_declared() -> None:
    """deptry: the product imports only its `dependencies`; the tests also the `test` extra."""
    product = _tool("deptry", "tuner")
    assert product.returncode == 0, product.stdout + product.stderr
    # DEP002 (declared, unused) is the product's question; DEP004 (a test extra used) is what tests may do.
    tests = _tool("deptry", "tests", "benchmarks", "tools", "--ignore", "DEP002,DEP004")
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_ruff_lint_and_format() -> None:
    lint = _tool("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _tool("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy() -> None:
    typed = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert typed.returncode == 0, typed.stdout + typed.stderr
