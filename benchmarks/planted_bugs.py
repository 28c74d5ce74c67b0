"""A test of the tests: plant each bug of issues 16 and 20 in a copy of the repository and expect the tests to fail.

Each bug is one small edit of the product code (a string replaced once); only the tests that name the behaviour
run, so the whole table takes a few minutes on two cores. Exit status 1 when a bug survives (no test failed).
Not part of CI's pytest run: it runs the relevant tests ten times over.

    python benchmarks/planted_bugs.py            # all ten
    python benchmarks/planted_bugs.py tpot busy  # some, by name

Results (2 shared cores, 2026-12-02; Docker and PostgreSQL running): see benchmarks/RESULTS.md, "Planted bugs".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug(
        "default-flags",
        "every trial launches SGLang's defaults; the sampled flags are still recorded",
        "tuner/trial/runner.py",
        "spec = LaunchSpec(plan.flags,",
        "spec = LaunchSpec(ServerFlags.of({k: v for k, v in plan.flags.as_dict().items() "
        "if k in ('model-path', 'host', 'port')}),",
        ("tests/test_tuning_loop.py::test_twelve_trials_find_a_config_better_than_sglang_defaults",),
    ),
    Bug(
        "tpot",
        "TPOT divided by output_len instead of output_len - 1",
        "tuner/bench/metrics.py",
        "return (self.latency - self.ttft) / (self.output_len - 1)",
        "return (self.latency - self.ttft) / self.output_len",
        ("tests/test_benchmark_client.py",),
    ),
    Bug(
        "busy",
        '"GPU busy before launch" is always False',
        "tuner/trial/runner.py",
        "busy_before = bool(shared) or any(",
        "busy_before = False and any(",
        ("tests/test_gpu.py",),
    ),
    Bug(
        "digest",
        "export pins the tag (re-resolved now) instead of the image digest measured with the trial",
        "tuner/cli.py",
        "        cfg.launcher.image = digest",
        "        pass",
        ("tests/test_docker_launcher.py::test_a_short_study_through_the_cli_with_the_docker_launcher",),
    ),
    Bug(
        "heartbeat",
        "the heartbeat thread stops after the first failed beat",
        "tuner/search/storage.py",
        'log.warning("heartbeat for trial id %s failed: %s", self.trial_id, exc)',
        'log.warning("heartbeat for trial id %s failed: %s", self.trial_id, exc)\n            self._stop.set()',
        ("tests/test_claims.py::test_heartbeat_goes_on_after_a_failed_beat", "tests/test_postgres.py"),
    ),
    Bug(
        "orphans",
        "the process launcher's orphan cleanup reports nothing",
        "tuner/serve/process.py",
        "return sorted(set(stopped))",
        "return []",
        ("tests/test_faults.py::test_next_start_kills_an_orphaned_server",),
    ),
    Bug(
        "constraints",
        "the constraints system attribute is not written",
        "tuner/search/study.py",
        'system={"constraints": constraints}',
        "system={}",
        ("tests/test_tuning_loop.py::test_a_trial_that_breaks_its_slo_skips_the_remaining_levels",),
    ),
    Bug(
        "oom-runtime",
        "an out-of-memory under load is classified as crashed",
        "tuner/sglang/failures.py",
        "    if _OOM.search(log):\n        return OOM_RUNTIME",
        "    if _OOM.search(log):\n        return CRASHED",
        ("tests/test_failures.py",),
    ),
    # Issue 20: two bugs no test caught.
    Bug(
        "slo-limit",
        "a level whose p99 equals an SLO limit fails the load search (< instead of <=)",
        "tuner/bench/load_search.py",
        "if not value <= limit:",
        "if not value < limit:",
        ("tests/test_load_search.py",),
    ),
    Bug(
        "interpolated",
        "a replayed level interpolated between recorded rates is not marked modelled",
        "tuner/trial/replay.py",
        'if how != "recorded":',
        'if how != "recorded" and not how.startswith("interpolated"):',
        ("tests/test_replay.py",),
    ),
)

_IGNORE = shutil.ignore_patterns(".git", "mutants", "__pycache__", ".pytest_cache", "trials", "studies", "reports")


def plant(bug: Bug) -> tuple[bool, float, str]:
    """(caught, seconds, the first failing test or why not)."""
    with tempfile.TemporaryDirectory(prefix=f"planted-{bug.name}-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=_IGNORE)
        source = copy / bug.path
        text = source.read_text()
        if text.count(bug.old) != 1:
            raise SystemExit(f"{bug.name}: {bug.path} no longer contains the line to break once; update BUGS")
        source.write_text(text.replace(bug.old, bug.new))
        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *bug.tests],
            cwd=copy,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - t0
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    if run.returncode == 1 and failed:
        return True, seconds, failed[0]
    if run.returncode == 0:
        return False, seconds, "all tests passed"
    return False, seconds, f"pytest exited {run.returncode}: {run.stdout.strip().splitlines()[-1:]}"


def main(names: list[str]) -> int:
    chosen = [b for b in BUGS if not names or b.name in names]
    survived = 0
    print(f"{'bug':<12} {'caught':<7} {'s':>5}  by")
    for bug in chosen:
        caught, seconds, by = plant(bug)
        survived += not caught
        print(f"{bug.name:<12} {'yes' if caught else 'NO':<7} {seconds:5.0f}  {by}", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} planted bugs caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
