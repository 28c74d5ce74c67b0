"""The Optuna dashboard over a study: trial notes, an artifact store that finds every study's files, the server.

optuna-dashboard is optional (the ``dashboard`` extra): nothing here imports it at module level, and
``note_for`` does nothing without it.
"""

from __future__ import annotations

import io
import logging
import math
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from tuner.errors import TunerError

log = logging.getLogger(__name__)

HIDDEN_FLAGS = ("model-path", "host", "port", "served-model-name")


class DashboardMissing(TunerError):
    pass


# -- notes ------------------------------------------------------------------------------------------------


def note_for(trial: optuna.Trial, result_attrs: dict) -> None:
    """Attach a short Markdown note to a live trial (the dashboard shows it on the trial's page).

    Never raises: a note is a convenience, the trial's record matters more.
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    try:
        attrs = {**trial.user_attrs, **result_attrs}
        save_note(trial, trial_note(trial.number, attrs))
    except Exception as exc:
        log.debug("no dashboard note for trial %s: %s", trial.number, exc)


def fill_missing_notes(study: optuna.Study) -> int:
    """Write the note of every finished trial that has none (a study run where optuna-dashboard was not
    installed, like the H200 image); returns how many were written."""
    from optuna_dashboard import get_note, save_note

    written = 0
    for frozen in study.get_trials(deepcopy=False):
        if not frozen.state.is_finished() or "failure_class" not in frozen.user_attrs:
            continue
        trial = optuna.Trial(study, frozen._trial_id)
        if not get_note(trial):
            save_note(trial, trial_note(frozen.number, frozen.user_attrs))
            written += 1
    return written


def flags_text(flags: dict, *, skip: set[str] | frozenset = frozenset()) -> str:
    from tuner.sglang.flags import format_value

    parts = []
    for k, v in flags.items():
        if k in HIDDEN_FLAGS or k in skip or v is False or v is None:
            continue
        parts.append(f"--{k}" if v is True else f"--{k} {format_value(v)}")
    return " ".join(parts)


def _num(value, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{fmt}}{unit}"


def trial_note(number: int, attrs: dict) -> str:
    cls = attrs.get("failure_class", "none")
    baseline = bool(attrs.get("baseline"))
    title = f"## Trial {number}" + (
        " — baseline (SGLang defaults)"
        if baseline
        else f" — reference {attrs['reference']} (hand-tuned)"
        if attrs.get("reference")
        else ""
    )
    status = "ok" if cls in ("none", None) else f"**{cls}**"
    if cls in ("none", None) and attrs.get("feasible") is False:
        status = "**infeasible** (a constraint is violated)"
    lines = [title, ""]
    if attrs.get("replayed"):
        from tuner.trial.surface import replay_mark

        launcher = attrs.get("launcher", {})
        lines += [
            f"**REPLAYED, not measured**: {replay_mark(attrs)} of {attrs.get('replay_surface')} "
            f"({launcher.get('recorded', '?')}, {launcher.get('gpu', '?')}, "
            f"SGLang {launcher.get('sglang_version', '?')})"
            + (
                ": no recorded trial had these flags, the numbers are modelled from the nearest ones"
                if attrs.get("modelled")
                else ""
            ),
            "",
        ]
    lines += [
        f"Outcome: {status}" + (f" — stopped early: {attrs['stopped_early']}" if attrs.get("stopped_early") else "")
    ]
    flags = flags_text(attrs.get("flags", {}))
    lines += ["", f"Flags: `{flags}`" if flags else "Flags: SGLang defaults"]
    if cls not in ("none", None):
        if attrs.get("failure_explanation"):
            lines += ["", attrs["failure_explanation"]]
        if attrs.get("failure_detail"):
            lines += ["", f"Detail: `{attrs['failure_detail']}`"]
        if attrs.get("failure_hint"):
            lines += ["", f"Hint: {attrs['failure_hint']}"]
    if attrs.get("limit_class"):
        lines += [
            "",
            f"Limit: **{attrs['limit_class']}**: {attrs.get('limit_detail', '')}",
            "",
            attrs.get("limit_explanation", ""),
            "",
            f"Hint: {attrs.get('limit_hint', '')}",
        ]
    if attrs.get("max_total_num_tokens") is not None:
        lines += [
            "",
            f"KV pool: {attrs['max_total_num_tokens']} tokens, "
            f"max_running_requests {attrs.get('max_running_requests', '?')}",
        ]
    if attrs.get("gpu_shared"):
        lines += [
            "",
            "Shared GPU: "
            + ", ".join(
                f"GPU {h['gpu']} pid {h['pid']} {h.get('name') or ''} ({_num(h.get('mib'), '.0f', ' MiB')})"
                for h in attrs["gpu_shared"]
            ),
        ]
    gpu = attrs.get("gpu_peak_used_mib")
    lines += [
        "",
        "| output tok/s | request/s | median TTFT | p99 TTFT | median TPOT | startup | GPU peak |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| "
        + " | ".join(
            [
                _num(attrs.get("output_throughput"), ".1f"),
                _num(attrs.get("request_throughput"), ".2f"),
                _num(attrs.get("median_ttft_ms"), ".1f", " ms"),
                _num(attrs.get("p99_ttft_ms"), ".1f", " ms"),
                _num(attrs.get("median_tpot_ms"), ".2f", " ms"),
                _num(attrs.get("startup_s"), ".1f", " s"),
                _num(gpu / 1024 if gpu else None, ".1f", " GiB"),
            ]
        )
        + " |",
    ]
    levels = attrs.get("levels") or []
    if len(levels) > 1:
        lines += ["", "| concurrency | output tok/s | median TTFT | p99 TTFT |", "|---:|---:|---:|---:|"]
        for lv in levels:
            lines.append(
                f"| {lv['concurrency']} | {lv['output_throughput']:.1f} | {lv['median_ttft_ms']:.1f} ms "
                f"| {lv['p99_ttft_ms']:.1f} ms |"
            )
    lines += ["", "The server log, benchmark.csv, gpu.csv and trial.json are under Artifacts, below."]
    return "\n".join(lines) + "\n"


# -- artifacts --------------------------------------------------------------------------------------------


class MultiDirArtifactStore:
    """A FileSystemArtifactStore over several folders: each study of a storage may keep its files elsewhere.

    Artifact ids are UUIDs, so reading looks in every folder; writing goes to the first.
    """

    def __init__(self, paths: list[Path]):
        from optuna.artifacts import FileSystemArtifactStore

        self.paths = paths
        self._stores = [FileSystemArtifactStore(str(p)) for p in paths]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self._stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of {', '.join(map(str, self.paths))}")

    def write(self, artifact_id: str, content_body: BinaryIO | io.BytesIO) -> None:
        self._stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self._stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(artifact_id)


def artifact_dirs(storage, first: Path | None = None) -> list[Path]:
    """The artifact folder of every study in the storage (from its recorded run config), ``first`` first."""
    found: list[Path] = [first.resolve()] if first else []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        run = summary.user_attrs.get("run_config") or {}
        if run.get("artifacts"):
            path = Path(run["artifacts"])
        elif run.get("trials_dir"):
            path = Path(run["trials_dir"]) / summary.study_name / "artifacts"
        else:
            continue
        path = path.resolve()
        if path.is_dir() and path not in found:
            found.append(path)
    return [p for p in found if p.is_dir()]


# -- the server -------------------------------------------------------------------------------------------


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def make_dashboard(storage, artifact_paths: list[Path], host: str, port: int) -> WSGIServer:
    """A threaded WSGI server running optuna-dashboard (not started: call ``serve_forever``)."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise DashboardMissing("optuna-dashboard is not installed: pip install 'sglang-tuner[dashboard]'") from None
    store = MultiDirArtifactStore(artifact_paths) if artifact_paths else None
    app = wsgi(storage, artifact_store=store)
    try:
        return make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise DashboardMissing(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def study_url(host: str, port: int, study: optuna.Study | None) -> str:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown}:{port}/dashboard"
    return f"{base}/studies/{study._study_id}" if study is not None else base


def serve(storage, study: optuna.Study | None, artifact_paths: list[Path], host: str, port: int, echo=print) -> None:
    server = make_dashboard(storage, artifact_paths, host, port)
    if study is not None and (written := fill_missing_notes(study)):
        echo(f"wrote the missing notes of {written} trials")
    echo(f"dashboard: {study_url(host, port, study)}  (Ctrl-C to stop)")
    if artifact_paths:
        echo(f"artifacts: {', '.join(map(str, artifact_paths))}")
    else:
        echo("artifacts: none found (trial files will not open)")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
