"""The Optuna dashboard over a study: trial notes, an artifact store that finds every study's files, what its pages
show beyond optuna-dashboard's own (pages that fit the window, the report's importances, a replay's mark), the server.

optuna-dashboard is optional (the ``dashboard`` extra): nothing here imports it at module level, and
``note_for`` does nothing without it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from tuner.errors import TunerError
from tuner.sglang.flags import ServerFlags
from tuner.trial.numbers import number
from tuner.trial.record import StudyRecord, TrialRecord, records, replay_notice
from tuner.views.importance import METHOD, importances, trials_for

log = logging.getLogger(__name__)


class DashboardMissing(TunerError):
    pass


# -- notes ------------------------------------------------------------------------------------------------


def note_for(trial: optuna.Trial, result_attrs: Mapping[str, Any]) -> None:
    """Attach a short Markdown note to a live trial (the dashboard shows it on the trial's page).

    Never raises: a note is a convenience, the trial's record matters more.
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    try:
        save_note(trial, trial_note(trial.number, {**trial.user_attrs, **result_attrs}))
    except Exception as exc:
        log.debug("no dashboard note for trial %s: %s", trial.number, exc)


def fill_missing_notes(study: optuna.Study) -> int:
    """Write the note of every finished trial that has none (a study run where optuna-dashboard was not
    installed, like the H200 image); returns how many were written."""
    from optuna_dashboard import get_note, save_note

    written = 0
    for frozen in study.get_trials(deepcopy=False):
        record = TrialRecord.of(frozen)
        if not frozen.state.is_finished() or record.failure is None:
            continue
        trial = optuna.Trial(study, frozen._trial_id)
        if not get_note(trial):
            save_note(trial, trial_note(frozen.number, record))
            written += 1
    return written


def mark_replay(study: optuna.Study) -> bool:
    """Head the study page's note with the replay notice (a replayed study looked measured there); whatever the
    note said is kept below it. True when it was written now."""
    from optuna_dashboard import get_note, save_note

    notice = replay_notice(records(study))
    if not notice:
        return False
    body = get_note(study)
    if notice in body:
        return False
    save_note(study, f"**{notice}**" + (f"\n\n{body}" if body else ""))
    return True


def _num(value, fmt: str, unit: str = "") -> str:
    """A dash where the trial has no such number (it failed), "not recorded" for NaN."""
    return "–" if value is None else number(value, fmt, unit)


def trial_note(number: int, record: TrialRecord | Mapping[str, Any]) -> str:
    """A trial's note, from its record (or the user attributes it is stored as)."""
    r = record if isinstance(record, TrialRecord) else TrialRecord.from_attrs(record)
    cls = r.failure_class or "none"
    title = f"## Trial {number}" + (
        f" — {r.baseline_words}"
        if r.baseline
        else f" — reference {r.reference} (hand-tuned)"
        if r.reference
        else f" — warm start from {r.warm_start} (a best config of that earlier study)"
        if r.warm_start
        else ""
    )
    status = "ok" if not r.failed else f"**{cls}**"
    if not r.failed and r.feasible is False:
        status = "**infeasible** (a constraint is violated)"
    lines = [title, ""]
    if r.replay:
        launcher = r.launcher or {}
        lines += [
            f"**REPLAYED, not measured**: {r.replay.text()} of {r.replay.surface} "
            f"({launcher.get('recorded', '?')}, {launcher.get('gpu', '?')}, "
            f"SGLang {launcher.get('sglang_version', '?')})"
            + (
                ": no recorded trial had these flags, the numbers are modelled from the nearest ones"
                if r.replay.modelled
                else ""
            ),
            "",
        ]
    lines += [f"Outcome: {status}" + (f" — stopped early: {r.stopped_early}" if r.stopped_early else "")]
    flags = (r.flags or ServerFlags()).text()
    # One code span per flag: a single long span does not wrap, and ran off the note's right edge.
    spans = " ".join(f"`{f}`" for f in re.split(r" (?=--)", flags))
    lines += ["", f"Flags: {spans}" if flags else "Flags: SGLang defaults"]
    if r.failed and r.failure is not None:
        if r.failure.explanation:
            lines += ["", r.failure.explanation]
        if r.failure.detail:
            lines += ["", f"Detail: `{r.failure.detail}`"]
        if r.failure.hint:
            lines += ["", f"Hint: {r.failure.hint}"]
    if r.limit:
        lines += [
            "",
            f"Limit: **{r.limit.name}**: {r.limit.detail or ''}",
            "",
            r.limit.explanation or "",
            "",
            f"Hint: {r.limit.hint or ''}",
        ]
    if r.kv.max_total_num_tokens is not None:
        running = r.kv.max_running_requests if r.kv.max_running_requests is not None else "?"
        lines += ["", f"KV pool: {r.kv.max_total_num_tokens} tokens, max_running_requests {running}"]
    if r.decode_graphs and r.decode_graphs.graphless:
        lines += ["", f"Decode: **without a CUDA graph**: {r.decode_graphs.summary()}"]
        if r.graphless_by_level:
            lines += ["", f"Graphless of logged decode steps by level: {r.graphless_by_level}"]
    elif r.decode_graphs and r.decode_graphs.logged:
        lines += ["", f"Decode: every one of {r.decode_graphs.logged} logged steps ran with a CUDA graph"]
    if r.gpu_shared:
        lines += [
            "",
            "Shared GPU: "
            + ", ".join(f"GPU {h.gpu} pid {h.pid} {h.name or ''} ({_num(h.mib, '.0f', ' MiB')})" for h in r.gpu_shared),
        ]
    gpu = r.gpu.peak_used_mib
    h = r.headline
    lines += [
        "",
        "| output tok/s | request/s | median TTFT | p99 TTFT | median TPOT | startup | GPU peak |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| "
        + " | ".join(
            [
                _num(h.output_throughput, ".1f"),
                _num(h.request_throughput, ".2f"),
                _num(h.median_ttft_ms, ".1f", " ms"),
                _num(h.p99_ttft_ms, ".1f", " ms"),
                _num(h.median_tpot_ms, ".2f", " ms"),
                _num(r.times.startup_s, ".1f", " s"),
                _num(gpu / 1024 if gpu else None, ".1f", " GiB"),
            ]
        )
        + " |",
    ]
    levels = r.measured_levels
    if len(levels) > 1:
        lines += ["", "| concurrency | output tok/s | median TTFT | p99 TTFT |", "|---:|---:|---:|---:|"]
        for lv in levels:
            lines.append(
                f"| {lv.concurrency} | {_num(lv.output_throughput, '.1f')} | {_num(lv.median_ttft_ms, '.1f', ' ms')} "
                f"| {_num(lv.p99_ttft_ms, '.1f', ' ms')} |"
            )
    # What the trial's folder holds: a replay samples no GPU, so it has no gpu.csv.
    files = (
        "The server log, benchmark.csv and trial.json"
        if r.replay
        else ("The server log, benchmark.csv, gpu.csv and trial.json")
    )
    lines += ["", f"{files} are under Artifacts, below."]
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
        run = StudyRecord.of(summary).run
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


# -- what the pages show ---------------------------------------------------------------------------------

# optuna-dashboard writes each user attribute (levels, argv, flags: up to 750 characters of JSON) and date on one line
# that never breaks, in flex boxes that grow to hold it: a trial page was 6000 px wide. Those lines wrap instead, and
# so does the table of the study's attributes (it was 650 px at least, its run file scrolled sideways). A code span in
# a note (a flag, a failure's detail) is one box: a flag moves to the next line whole (broken at its hyphens it reads
# as two flags), a detail wider than the note wraps within it. A card (the note's) draws scroll bars only when it
# needs them, and one that cut its text off (the best trial's value) can be scrolled instead.
FIT_CSS = """
main div[class] { white-space: normal; }
main p { white-space: pre-wrap; overflow-wrap: anywhere; }
main .MuiTable-root { min-width: 0; }
main .MuiCard-root { overflow: auto; }
main p code { display: inline-block; max-width: 100%; white-space: pre-wrap; overflow-wrap: anywhere; }
"""
# The importance box is answered with the report's importances (below); its title says how they are computed.
IMPORTANCE_CSS = f"""
h6:has(+ #graph-hyperparameter-importances)::after {{
  content: {json.dumps(METHOD[0].upper() + METHOD[1:] + " (after each flag): tune report's importances.")};
  display: block; font-size: 0.8rem; font-weight: normal;
}}
"""
REPLAY_TITLE = "REPLAY, not measured"

_IMPORTANCES = re.compile(r"/api/studies/(\d+)/param_importances/?")
_STUDY = re.compile(r"/api/studies/(\d+)/?")


class TunerPages:
    """optuna-dashboard's WSGI app, with what the tuner changes in its pages: the style that fits them in the
    window, the report's importances in its importance box, and a replayed study's title saying so."""

    def __init__(self, app, storage: optuna.storages.BaseStorage):
        self.app = app
        self.storage = storage
        # study id -> replayed: the page polls the study every few seconds, and reading every trial's record each
        # time would grow with the study. Known once it has a finished trial (a study is replayed or measured).
        self._replayed: dict[int, bool] = {}

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        if path.startswith("/dashboard"):
            # Never "not modified": a browser holding the page from before these styles would keep it.
            environ.pop("HTTP_IF_MODIFIED_SINCE", None)
            environ.pop("HTTP_IF_NONE_MATCH", None)
            return self._rewritten(environ, start_response, self._styled)
        if m := _IMPORTANCES.fullmatch(path):
            return self._importances(int(m[1]), start_response)
        if m := _STUDY.fullmatch(path):
            return self._rewritten(environ, start_response, lambda body: self._titled(int(m[1]), body))
        return self.app(environ, start_response)

    def _rewritten(self, environ, start_response, change):
        seen: list = []

        def hold(status, headers, exc_info=None):
            seen[:] = [status, headers]
            return lambda data: None  # optuna-dashboard (bottle) returns its body, it never writes

        chunks = self.app(environ, hold)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        status, headers = seen
        if status.startswith("200"):
            body = change(body)
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag", "last-modified")]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    @staticmethod
    def _styled(page: bytes) -> bytes:
        return page.replace(b"</head>", f"<style>{FIT_CSS}{IMPORTANCE_CSS}</style></head>".encode(), 1)

    def _study(self, study_id: int) -> optuna.Study:
        return optuna.load_study(study_name=self.storage.get_study_name_from_id(study_id), storage=self.storage)

    def _is_replay(self, study_id: int) -> bool:
        if study_id not in self._replayed:
            done = records(self._study(study_id), (optuna.trial.TrialState.COMPLETE,))
            if not done:
                return False
            self._replayed[study_id] = replay_notice(done) is not None
        return self._replayed[study_id]

    def _titled(self, study_id: int, body: bytes) -> bytes:
        if not self._is_replay(study_id):
            return body
        detail = json.loads(body)
        detail["name"] = f"{detail['name']} ({REPLAY_TITLE})"
        return json.dumps(detail).encode()

    def _importances(self, study_id: int, start_response):
        try:
            study = self._study(study_id)
        except KeyError:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [json.dumps({"reason": f"study_id={study_id} is not found"}).encode()]
        distributions = {n: type(d).__name__ for t in trials_for(study) for n, d in t.distributions.items()}
        answer = {
            "param_importances": [
                [
                    {
                        "name": f"{i.flag} ({i.low:.2f}-{i.high:.2f})",
                        "importance": i.share,
                        "distribution": distributions[i.flag],
                    }
                    for i in importances(study, objective)
                ]
                for objective in range(len(study.directions))
            ]
        }
        body = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


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
    storage = optuna.storages.get_storage(storage)
    app = TunerPages(wsgi(storage, artifact_store=store), storage)
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
    if study is not None:
        mark_replay(study)
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
