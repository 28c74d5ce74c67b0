"""Optuna storage plumbing: database URLs and their drivers, SQLite locking, redaction of passwords in messages,
heartbeats for a running trial, re-queueing stale trials, and writing a trial's attributes in one commit; and the
study on it, opened (or created) with its sampler and the objective it was created for."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial
from sqlalchemy.exc import IntegrityError, ProgrammingError

from tuner.config.run import RunConfig
from tuner.errors import SetupError
from tuner.search.objective import objective_for
from tuner.search.samplers import make_sampler
from tuner.serve.poller import Poller
from tuner.trial.record import StudyRecord, TrialRecord

log = logging.getLogger(__name__)

# Who this tuner is among the workers of a study (several processes, on one host or many).
HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}"
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")

# The module SQLAlchemy's dialect imports -> what to pip install for it.
DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "mysql": "mysql-connector-python",
    "psycopg2": "psycopg2-binary",
    "psycopg": "'sglang-tuner[postgres]'",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}


def open_storage(config: RunConfig, create: bool = True) -> RDBStorage:
    """The study's storage; ``create=False`` (status, export, report, dashboard) never creates a file or folder."""
    url = config.storage_url
    if "://" not in url:
        raise SetupError(f"--storage {url!r} is not a database URL (sqlite:///studies/x.db, postgresql://...)")
    if url.startswith("sqlite:") and _in_memory(url):
        raise SetupError(
            f"--storage {url} is an SQLite database in memory, gone when the tuner exits and seen by no other "
            f"command: a study must be a file (sqlite:///studies/{config.study}.db) or a server (postgresql://...)"
        )
    url = _with_installed_driver(url)
    kwargs: dict = {}
    if url.startswith("sqlite:///"):
        file = Path(url[len("sqlite:///") :])
        if not create and not file.is_file():
            raise SetupError(
                f"no study {config.study!r}: {file} does not exist (a run file's relative paths are "
                f"relative to its folder; --storage is relative to the current one)"
            )
        _refuse_foreign_sqlite(url, file)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"--storage {url}: cannot create its folder {file.parent} ({exc.strerror})") from None
        if create:
            _check_writable(url, file)
        # Several slots of one tuner write to one SQLite file: wait for the lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if config.heartbeat_s:
        kwargs.update(
            heartbeat_interval=int(config.heartbeat_s),
            grace_period=int(2 * config.heartbeat_s),
            heartbeat_stale_trial_callback=_RetryStale(),
        )
    try:
        storage = _rdb_storage(url, kwargs)
        if url.startswith("sqlite:"):
            _sqlite_begin_immediate(storage)
        return storage
    except ImportError as exc:
        raise SetupError(f"--storage {_redact(config.storage_url)}: {_missing_driver(url, exc)}") from None
    except Exception as exc:  # SQLAlchemy's errors for bad URLs and unreachable servers are many
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SetupError(f"--storage {_redact(config.storage_url)}: cannot open it ({first})") from None


def _rdb_storage(url: str, kwargs: dict) -> RDBStorage:
    """Optuna's storage, opened again after a lost race to create its tables: hosts started together on an empty
    database each create them, and PostgreSQL refuses all but one creator of each table (a unique violation in its
    catalogue, or "already exists"); by a later try the winner has made them."""
    for attempt in range(1, 6):
        try:
            return RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError) as exc:
            if not (isinstance(exc, IntegrityError) or "already exists" in str(exc)):
                raise
            time.sleep(0.2 * attempt)
    return RDBStorage(url, **kwargs)


def check_writable(config: RunConfig) -> None:
    """Before anything is made for a run: an SQLite study there already, on a disk that cannot be written, is
    refused (``open_storage`` checks it again, and makes what is missing)."""
    url = config.storage_url
    if url.startswith("sqlite:///") and not _in_memory(url):
        file = Path(url[len("sqlite:///") :])
        if file.parent.is_dir():
            _check_writable(url, file)


def _check_writable(url: str, file: Path) -> None:
    """The study's SQLite file and its folder (SQLite writes its journal beside it) can be written: a study on a
    read-only disk is refused before anything is recorded, not at its first write."""
    try:
        if file.exists():
            os.close(os.open(file, os.O_RDWR))
        with tempfile.TemporaryFile(dir=file.parent):
            pass
    except OSError as exc:
        raise SetupError(
            f"--storage {url}: cannot write {file if file.exists() else file.parent} ({exc.strerror}): tune start "
            f"records every trial there; copy the study to a writable disk and point --storage at it "
            f"(tune status, report and export only read it)"
        ) from None


def _in_memory(url: str) -> bool:
    """SQLAlchemy's in-memory SQLite: no path (sqlite://), :memory:, or a URI with mode=memory."""
    path = url.split("://", 1)[1] if "://" in url else ""
    return path in ("", "/") or path.lstrip("/").split("?")[0] == ":memory:" or "mode=memory" in path


def _refuse_foreign_sqlite(url: str, file: Path) -> None:
    """Optuna adds its tables to any database it opens: never to another application's (read, not written)."""
    if not file.is_file() or file.stat().st_size == 0:
        return
    import sqlite3

    try:
        db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error:
        return  # not a database at all: RDBStorage says so below
    if tables and "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise SetupError(
            f"--storage {url}: {file} is not an Optuna study database (its tables: {shown}); "
            f"point --storage (or storage:) at another file, e.g. sqlite:///studies/NAME.db"
        )


def _missing_driver(url: str, exc: ImportError) -> str:
    """Optuna re-raises the driver's ImportError without its name; the ModuleNotFoundError behind it has it."""
    cause = exc.__cause__ or exc.__context__
    module = getattr(cause, "name", None) or exc.name or "?"
    dialect = url.split("://", 1)[0]
    package = DRIVER_PACKAGES.get(module.split(".")[0], module)
    hint = " (or mysql+pymysql://... with pip install pymysql)" if module == "MySQLdb" else ""
    return (
        f"the {dialect} driver is not installed (SQLAlchemy needs the Python module {module}): "
        f"pip install {package}{hint}"
    )


def _sqlite_begin_immediate(storage: RDBStorage) -> None:
    """Every SQLite transaction takes the write lock when it begins (BEGIN IMMEDIATE), not at its first write.

    Optuna's read-then-write steps (popping a queued trial: "still WAITING? then RUNNING") rely on SELECT ... FOR
    UPDATE, which SQLite ignores: with several slots, two threads read the same queued trial as WAITING and both
    run it. Taking the lock first makes each step atomic across threads and processes; waiting for the lock is
    bounded by the connection's busy timeout, so no "database is locked" either.
    """
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite issues no BEGIN of its own; the hook below does

    @event.listens_for(storage.engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened before the hooks (schema check) are not reused


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; we ship psycopg 3, so use it when psycopg2 is absent."""
    # Only whether psycopg2 is installed: it is never imported here.
    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _redact(url: str) -> str:
    """The URL without its user and password: everything in the host part up to its last "@"."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rsplit('@', 1)[1]}{slash}{path}"


class _RetryStale:
    """A trial whose worker stopped heartbeating is failed by Optuna; run its parameters again."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        enqueue_retry(study, trial, reason=f"worker {TrialRecord.of(trial).worker or '?'} stopped heartbeating")


def enqueue_retry(study: optuna.Study, trial: FrozenTrial, reason: str = "interrupted") -> None:
    r = TrialRecord.of(trial)
    again = TrialRecord(
        retry_of=trial.number,
        retry_reason=reason,
        baseline=r.baseline or None,
        reference=r.reference or None,
        warm_start=r.warm_start,
    )
    study.enqueue_trial(dict(trial.params), user_attrs=again.attrs())


class _Heartbeat(Poller):
    """Records the trial's heartbeat while it runs, so other workers can tell this one is alive."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval_s: float | None):
        super().__init__("heartbeat", interval_s or 0.0, join_s=5)
        self.storage, self.trial_id = study._storage, trial._trial_id

    def __enter__(self) -> _Heartbeat:
        if self.interval_s:
            assert isinstance(self.storage, BaseHeartbeat)  # heartbeat_s opens an RDBStorage, which beats
            self.storage.record_heartbeat(self.trial_id)
            self.start()
        return self

    def tick(self) -> None:
        assert isinstance(self.storage, BaseHeartbeat)  # started by __enter__ only where it is one
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception as exc:
            log.warning("heartbeat for trial id %s failed: %s", self.trial_id, exc)


def set_trial_attrs(study: optuna.Study, trial: optuna.Trial, user: dict, system: dict | None = None) -> None:
    """Several attributes of a running trial in one storage transaction.

    ``trial.set_user_attr`` commits once per key; on SQLite each commit is a sync to disk (~10 ms on a busy
    disk), and a trial's record has ~40 keys: 0.3-0.5 s of tuner overhead per trial (benchmarks/RESULTS.md).
    Optuna has no public batch write, so with an RDB storage its own per-key writer runs in one session, which
    commits once; if Optuna's internals move, the public per-key calls below still work.
    """
    system = system or {}
    backend = getattr(study._storage, "_backend", study._storage)
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        write = None
    if isinstance(backend, RDBStorage) and write is not None:
        with _create_scoped_session(backend.scoped_session, True) as session:
            for model_cls, attrs in (
                (models.TrialUserAttributeModel, user),
                (models.TrialSystemAttributeModel, system),
            ):
                for key, value in attrs.items():
                    write(session, model_cls, trial._trial_id, key, value)
        trial._cached_frozen_trial.user_attrs.update(user)  # what Trial.set_user_attr keeps as well
        trial._cached_frozen_trial.system_attrs.update(system)
        return
    for key, value in user.items():
        trial.set_user_attr(key, value)
    for key, value in system.items():
        study._storage.set_trial_system_attr(trial._trial_id, key, value)


# Seeds tried after a taken one: first + k * SEED_STRIDE, far from the trial-count offsets of one study.
SEED_STRIDE = 1_000_003
_SEED_KEY = "tuner:sampler_seed:"


def claim_seed(study: optuna.Study, first: int, worker: str) -> int:
    """A sampler seed no other worker of this study has had: ``first`` when it is free, else the next free one of
    first + k * SEED_STRIDE, so workers that open one study at the same moment (same history, same ``first``)
    never share a random stream, while a lone worker keeps drawing what ``first`` draws.

    The claim is a study system attribute inserted, not upserted: the storage's unique (study, key) constraint
    (and SQLite's BEGIN IMMEDIATE) lets exactly one worker have each seed, on one host or many.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, RDBStorage):
        return first
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy.exc import IntegrityError

    for k in range(100_000):
        seed = (first + k * SEED_STRIDE) % 2**32
        try:
            with _create_scoped_session(backend.scoped_session) as session:
                taken = (
                    session.query(models.StudySystemAttributeModel)
                    .filter_by(study_id=study._study_id, key=f"{_SEED_KEY}{seed}")
                    .one_or_none()
                )
                if taken is not None:
                    continue
                session.add(
                    models.StudySystemAttributeModel(
                        study_id=study._study_id, key=f"{_SEED_KEY}{seed}", value_json=json.dumps(worker)
                    )
                )
            return seed
        except IntegrityError:  # another worker inserted it between our read and our write
            continue
    raise SetupError(f"study {study.study_name!r}: no free sampler seed left (100000 sessions)")


def open_study(config: RunConfig, storage: RDBStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(config)
    objective = objective_for(config)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=config.study,
            directions=objective.directions,
            sampler=make_sampler(config, config.sampler.seed),
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SetupError(f"study {config.study!r}: {exc}") from None
    if config.sampler.name == "gp" and (config.baseline or config.references):
        # GPSampler models only the params every finished trial has; the baseline and references have none
        # (benchmarks/SAMPLERS.md: with the baseline first it draws exactly what random search draws).
        log.warning(
            "sampler gp with the baseline or references samples at random (they have no params): "
            "set baseline: false and no references, or use sampler: {name: tpe}"
        )
    if [d.name.lower() for d in study.directions] != objective.directions:
        raise SetupError(
            f"study {config.study!r} already exists with objectives {_list(StudyRecord.of(study).metrics)}: "
            f"use another --study name for {list(objective.metrics)}"
        )
    if StudyRecord.of(study).metrics is None:
        searched = objective.load_search is not None
        StudyRecord(
            metrics=tuple(objective.metrics),
            constraint_names=tuple(objective.constraint_names),
            at_concurrency=objective.at_concurrency,
            slo=objective.slo if searched else None,
            load_search=vars(objective.load_search) if searched else None,
            space=str(config.space),
        ).write(study)
        study.set_metric_names(list(objective.metrics))
    # The latest run's settings: export rebuilds the launcher (command, env, image) from them.
    StudyRecord(run_config=config.to_dict()).write(study)
    # A seeded sampler made anew on resume would replay the same random startup draws (seen on the H200:
    # trial 4 repeated trial 1). Offset the seed by the trials already there: still reproducible from the same
    # history. Workers that open the study at the same moment see the same history: each claims its own seed
    # in the storage (the first one gets this one), so no two draw the same flags, on one host or several.
    seed = config.sampler.seed
    if seed is not None:
        seed = claim_seed(study, seed + len(study.trials), WORKER)
    study.sampler = make_sampler(config, seed)
    return study


def load_existing_study(config: RunConfig) -> optuna.Study:
    storage = open_storage(config, create=False)
    try:
        return optuna.load_study(study_name=config.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SetupError(
            f"no study {config.study!r} in {_redact(config.storage_url)} (studies there: {', '.join(names) or 'none'})"
        ) from None


def _list(values: tuple | None) -> list | None:
    return list(values) if values is not None else None
