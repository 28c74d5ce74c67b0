"""`tune`: a thin command line over tuner.search, tuner.views and the packages below them."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import typer.core
from pydantic import ValidationError

from tuner.config.run import ConfigError, RunConfig, load_config
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.sglang.catalog import FlagCatalog

# Typer >= 0.22 vendors click as typer._click; older ones use click itself.
_click = getattr(typer.core, "_click", None) or __import__("click")


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (--port abc, an unknown option) as one ``error:`` line too, not a framed box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        twice = self._given_twice(list(sys.argv[1:] if args is None else args))
        if twice:
            typer.echo(f"error: {twice}", err=True)
            sys.exit(2)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except _click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def _given_twice(self, args: list[str]) -> str | None:
        """An option that takes one value given twice (``-c a.yaml -c b.yaml``): click keeps the last silently."""
        command = self.commands.get(args[0]) if args else None
        if command is None:
            return None
        options = {
            name: param
            for param in command.params
            if param.param_type_name == "option"
            and not (getattr(param, "is_flag", False) or param.multiple or getattr(param, "count", False))
            for name in param.opts
        }
        seen: dict[object, str] = {}
        tokens = iter(args[1:])
        for token in tokens:
            if token == "--":
                break
            name, value = token, None
            if token.startswith("--") and "=" in token:
                name, value = token.split("=", 1)
            elif not token.startswith("--") and len(token) > 2 and token[:2] in options:  # -crun.yaml
                name, value = token[:2], token[2:]
            param = options.get(name)
            if param is None:
                continue
            if value is None:
                value = next(tokens, "")
            if param in seen:
                return f"{name} given twice ({seen[param]}, then {value}): give it once"
            seen[param] = value
        return None


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_OneLineUsageErrors,
    help="Tune SGLang launch flags with Optuna against real servers.",
)

ConfigOpt = typer.Option(None, "--config", "-c", help="Run file (YAML): model, launcher, space, workload, objective.")
StudyOpt = typer.Option(None, "--study", help="Study name (default: the run file's, else 'default').")
StorageOpt = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///studies/<study>.db).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config(config: Path | None, overrides: dict, check: bool = True) -> RunConfig:
    try:
        return load_config(config, overrides, check=check)
    except ConfigError as exc:
        _fail(str(exc))
    raise AssertionError


def _out_dir(path: Path) -> Path:
    """The --out folder, made if need be; what stands in its way is one line, not a traceback."""
    if path.exists() and not path.is_dir():
        _fail(f"--out {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--out {path}: cannot create this folder ({exc.strerror})")
    if not os.access(path, os.W_OK):
        _fail(f"--out {path}: this folder is not writable")
    return path


def _unwritable(folder: Path, exc: OSError) -> str:
    name = f" {Path(exc.filename).name}" if exc.filename else ""
    return (
        f"--out {folder}: cannot write{name} there ({exc.strerror or exc}); no file was left half-written: "
        f"free space there or give another --out"
    )


def _confirmation_due(cfg: RunConfig, study) -> bool:
    from tuner.search.confirm import confirmation_due

    return confirmation_due(cfg, study)


def _guard(fn, *args, **kwargs):
    """Every expected failure (a TunerError) becomes one line and exit status 2, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except TunerError as exc:
        _fail(str(exc))


def _existing_study(config: Path | None, study: str | None, storage: str | None):
    """The run config (no model needed) and the study of a command that only reads one, which must exist."""
    from tuner.search.storage import load_existing_study

    cfg = _config(config, {"study": study, "storage": storage}, check=False)
    return cfg, _guard(load_existing_study, cfg)


def _say_replay(study) -> None:
    from tuner.trial.record import records, replay_notice

    notice = replay_notice(records(study))
    if notice:
        typer.echo(notice)


@app.command()
def start(
    config: Path | None = ConfigOpt,
    trials: int | None = typer.Option(
        None, "--trials", "-n", help="Total launches in the study (resumes count; predicted failures do not)."
    ),
    study: str | None = StudyOpt,
    storage: str | None = StorageOpt,
    space: str | None = typer.Option(None, "--space", help="Search space YAML (search_spaces/*.yaml)."),
    model: str | None = typer.Option(None, "--model", help="--model-path passed to SGLang."),
    gpus: str | None = typer.Option(None, "--gpus", help="NVML GPU indices, e.g. 0,1 (one trial per GPU)."),
    port: int | None = typer.Option(None, "--port", help="First server port."),
    launcher: str | None = typer.Option(None, "--launcher", help="process, docker or replay."),
    server_command: str | None = typer.Option(
        None, "--server-command", help="Command that starts SGLang (default python -m sglang.launch_server)."
    ),
    image: str | None = typer.Option(None, "--image", help="Docker image (docker launcher)."),
    heartbeat: float | None = typer.Option(None, "--heartbeat", help="RDB heartbeat seconds (several hosts)."),
    progress: bool | None = typer.Option(None, "--progress/--quiet", help="Live progress (default: on a terminal)."),
    allow_shared_gpu: bool = typer.Option(
        False, "--allow-shared-gpu", help="Measure even if other processes hold the GPUs (recorded per trial)."
    ),
) -> None:
    """Run (or resume) a study until it has --trials launched trials."""
    cfg = _config(
        config,
        {
            "trials": trials,
            "study": study,
            "storage": storage,
            "space": space,
            "model.path": model,
            "gpus": gpus,
            "launcher.port": port,
            "launcher.kind": launcher,
            "launcher.command": server_command,
            "launcher.image": image,
            "heartbeat_s": heartbeat,
            "gpus_shared": allow_shared_gpu or None,
        },
    )
    try:
        # After the run file is checked: optuna and rich take a second or more to import (Ctrl-C lands here too).
        from tuner.search.study import Tuner
        from tuner.views.dashboard import note_for
        from tuner.views.progress import LineProgress

        reporter = (
            LineProgress(cfg.trials, force=bool(progress), slots=len(cfg.gpus)) if progress is not False else None
        )
        tuner = _guard(Tuner, cfg, progress=reporter, on_record=note_for)
        study_obj = _guard(tuner.prepare)
    except KeyboardInterrupt:
        typer.echo("interrupted: stopped while checking the setup, before any trial ran", err=True)
        raise typer.Exit(130) from None
    if reporter:
        reporter.resume_from(study_obj)
    for warning in tuner.warnings:
        typer.echo(f"warning: {warning}", err=True)
    from tuner.trial.record import Budget

    spent = Budget.of(study_obj, cfg.trials)
    done = spent.launched
    confirming = done >= cfg.trials and cfg.confirm is not None and _confirmation_due(cfg, study_obj)
    if confirming:
        typer.echo(
            f"study {cfg.study!r} has its {done} trials; its end-of-study confirmation has not finished: running it"
        )
    elif done >= cfg.trials:
        typer.echo(
            f"study {cfg.study!r} already has {done} launched trials"
            + (f" (and {spent.predicted} predicted to fail, not launched)" if spent.predicted else "")
            + f"; budget {cfg.trials} reached: "
            f"pass --trials N > {done} to run more"
        )
        return
    if tuner.launcher.replays:
        from tuner.trial.replay import recorded_words

        surface = tuner.launcher.surface
        typer.echo(
            f"replay: every trial is answered from {tuner.launcher.path} ({len(surface.rows)} "
            f"recorded trials of {recorded_words(surface)}); no GPU or "
            f"SGLang is used and no number is a new measurement"
        )
    try:
        study_obj = _guard(tuner.run)
    except KeyboardInterrupt:
        if reporter:
            reporter.close()
        if tuner.confirm_interrupted:
            typer.echo(
                f"interrupted during the end-of-study confirmation: none of it recorded; run the same command to "
                f"confirm study {cfg.study!r}",
                err=True,
            )
            raise typer.Exit(130) from None
        typer.echo(
            f"interrupted: the running trial was stopped and recorded; run the same command to resume "
            f"study {cfg.study!r}",
            err=True,
        )
        raise typer.Exit(130) from None
    finally:
        if reporter:
            reporter.close()  # the live status line
    from tuner.views.progress import best_line

    interrupted = tuner.trials_interrupted(study_obj)
    again = f"; {interrupted} interrupted and run again" if interrupted else ""
    typer.echo(
        f"study {cfg.study!r} in {cfg.storage_url}: {Budget.of(study_obj, cfg.trials).text()}{again}; "
        f"{best_line(study_obj)}"
    )
    from tuner.views.report import confirmation_lines

    for line in confirmation_lines(study_obj):
        typer.echo(f"  {line}")


@app.command()
def status(config: Path | None = ConfigOpt, study: str | None = StudyOpt, storage: str | None = StorageOpt) -> None:
    """Trials so far: state, class, objective, startup time and flags."""
    from tuner.views.report import trials_frame

    cfg, st = _existing_study(config, study, storage)
    frame = trials_frame(st)
    if frame.empty:
        typer.echo(f"study {cfg.study!r} has no trials yet")
        return
    from rich.console import Console

    from tuner.trial.record import Budget, records, replay_notice
    from tuner.views.progress import best_line
    from tuner.views.report import confirmation_lines, study_notes, terminal_table

    console = Console(highlight=False)
    table = terminal_table(frame, f"study {cfg.study!r}")
    from rich.measure import Measurement

    # Whether the columns fit; the startup phases, a long text, fold within its cell (or go under the row below).
    fits = terminal_table(frame.drop(columns=["startup"], errors="ignore"), "")
    wide = Measurement.get(console, console.options.update_width(10**4), fits).maximum
    if console.is_terminal and wide <= console.width:
        console.print(table)
    else:  # a narrow terminal, a pipe or a log: one short line per trial, its flags wrapped below it
        import shutil

        from tuner.views.table import compact_lines

        width = console.width if console.is_terminal else shutil.get_terminal_size((80, 24)).columns
        typer.echo(f"study {cfg.study!r}")
        for line in compact_lines(frame, max(width, 40)):
            typer.echo(line)
    # On a terminal, prose wraps between words; in a pipe each sentence stays one line, for grep.
    say = (lambda text: console.print(text, markup=False)) if console.is_terminal else typer.echo
    for note in study_notes(st):
        say(note)
    say(f"trials: {Budget.of(st).text()}")
    say(best_line(st))
    for line in confirmation_lines(st):
        say(f"  {line}")
    notice = replay_notice(records(st))
    if notice:
        say(notice)


@app.command()
def export(
    config: Path | None = ConfigOpt,
    study: str | None = StudyOpt,
    storage: str | None = StorageOpt,
    out: Path = typer.Option(Path("."), "--out", help="Folder for deploy-best.sh and best.json."),
) -> None:
    """Write deploy-best.sh and best.json for the best feasible trial."""
    from tuner.search.launchers import make_launcher
    from tuner.trial.record import StudyRecord, export_choice
    from tuner.views.export import export_best

    cfg, st = _existing_study(config, study, storage)
    out = _out_dir(out)
    run = StudyRecord.of(st).run_config
    if run and config is None:
        cfg = _config(
            None,
            {
                "study": cfg.study,
                "storage": cfg.storage,
                "model.path": run["model"]["path"],
                "launcher": run["launcher"],
            },
        )
    # The image that was measured, not whatever its tag points to now.
    digest = (_guard(export_choice, st).chosen.launcher or {}).get("image_digest")
    if cfg.launcher.kind == "docker" and digest:
        cfg.launcher.image = digest
    try:
        done = _guard(export_best, st, _guard(make_launcher, cfg), out)
    except OSError as exc:
        _fail(_unwritable(out, exc))
    typer.echo(f"trial {done.trial.number}: wrote {done.script} and {done.record}")
    if done.choice.why:
        typer.echo(done.choice.why)
    _say_replay(st)


@app.command()
def dashboard(
    config: Path | None = ConfigOpt,
    study: str | None = StudyOpt,
    storage: str | None = StorageOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    artifacts: Path | None = typer.Option(None, "--artifacts", help="Artifact folder (default: the run's)."),
) -> None:
    """Serve optuna-dashboard on the study's storage, with each trial's server.log, CSVs and notes."""
    from tuner.errors import SetupError
    from tuner.search.storage import load_existing_study, open_storage
    from tuner.views.dashboard import DashboardMissing, artifact_dirs, serve

    cfg = _config(config, {"study": study, "storage": storage}, check=False)
    st = None
    try:
        st = load_existing_study(cfg)
    except SetupError as exc:
        if study or config:
            _fail(str(exc))
        import optuna

        names = [s.study_name for s in optuna.get_all_study_summaries(_guard(open_storage, cfg, create=False))]
        if len(names) == 1:  # the storage's only study: open its page
            cfg, st = _existing_study(None, names[0], cfg.storage)
    if st is not None:
        _say_replay(st)
    first = artifacts or Path(cfg.artifacts or cfg.study_dir / "artifacts")
    try:
        storage_obj = st._storage if st is not None else _guard(open_storage, cfg, create=False)
        serve(
            storage_obj, st, artifact_dirs(storage_obj, first if first.is_dir() else None), host, port, echo=typer.echo
        )
    except DashboardMissing as exc:
        _fail(str(exc))


@app.command()
def report(
    config: Path | None = ConfigOpt,
    study: str | None = StudyOpt,
    storage: str | None = StorageOpt,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for report.html, comparison.csv and comparison.md (default reports/<study>/)."
    ),
) -> None:
    """Write a self-contained HTML report (opens offline) plus the best-vs-baseline table as CSV and Markdown."""
    from tuner.views.report import build_report

    cfg, st = _existing_study(config, study, storage)
    folder = _out_dir(out or Path("reports") / cfg.study)
    try:
        done = build_report(st, folder)
    except OSError as exc:
        _fail(_unwritable(folder, exc))
    typer.echo(f"wrote {done.html} ({len(done.figures)} figures), {done.csv}, {done.markdown}")
    _say_replay(st)
    for why in done.skipped:
        typer.echo(f"  not drawn: {why}")


@app.command()
def record(
    config: Path | None = ConfigOpt,
    study: str | None = StudyOpt,
    storage: str | None = StorageOpt,
    out: Path = typer.Option(..., "--out", help="The surface file to write, e.g. surfaces/h200-qwen3-8b.json."),
    gpu_name: str = typer.Option(..., "--gpu-name", help="The GPU the trials ran on, e.g. 'NVIDIA H200'."),
    sglang_help: Path = typer.Option(
        ..., "--sglang-help", help="That SGLang's `python -m sglang.launch_server --help` output."
    ),
    model: str | None = typer.Option(None, "--model", help="The model's name (default: its model path)."),
    notes: str = typer.Option("", "--notes", help="Anything a reader of the surface should know."),
    trials_dir: Path | None = typer.Option(
        None,
        "--trials-dir",
        help="If the trial folders moved: the trials folder that holds <study>/ (as trials_dir in the run file), "
        "or <study>/ itself.",
    ),
) -> None:
    """Turn a finished study's real trials into a surface file that `launcher: {kind: replay}` replays."""
    from tuner.trial.record import records
    from tuner.trial.surface import SurfaceError, from_study

    if out.is_dir():
        _fail(f"--out {out}: is a folder; give the surface file's path, e.g. {out / 'surface.json'}")
    if out.exists() and not out.is_file():
        _fail(f"--out {out}: not a regular file; give the surface file's path, e.g. surfaces/my-gpu-model.json")
    cfg, st = _existing_study(config, study, storage)
    catalog = _sglang_help(sglang_help)
    versions = {v for r in records(st) if (v := r.sglang_version)}
    try:
        surface = from_study(
            st,
            gpu_name=gpu_name,
            catalog=catalog,
            sglang_version=", ".join(sorted(versions)) or "unknown",
            model=model,
            notes=notes,
            trials_dir=trials_dir,
        )
    except SurfaceError as exc:
        _fail(str(exc))
    try:
        surface.save(out)
    except OSError as exc:
        _fail(f"--out {out}: cannot write the surface ({exc.strerror or exc}); nothing written, give another path")
    failed = sum(not r.ok for r in surface.rows)
    typer.echo(f"wrote {out}: {len(surface.rows)} trials ({failed} failed) of study {cfg.study!r}")


def _sglang_help(sglang_help: Path) -> FlagCatalog:
    """The flag catalog of a saved `launch_server --help`, or one line saying why the file is not one."""
    from tuner.sglang.catalog import FlagCatalog

    # Not is_file(): a pipe (bash's <(python -m sglang.launch_server --help)) is a file to read too.
    if not sglang_help.exists():
        _fail(f"--sglang-help {sglang_help}: no such file (save `python -m sglang.launch_server --help` there)")
    if sglang_help.is_dir():
        _fail(
            f"--sglang-help {sglang_help}: a folder; give the file `python -m sglang.launch_server --help` was saved in"
        )
    try:
        help_text = sglang_help.read_bytes().decode()
    except UnicodeDecodeError:
        help_text = "\0"
    except OSError as exc:
        _fail(f"--sglang-help {sglang_help}: cannot read it ({exc.strerror})")
    if "\0" in help_text:
        _fail(
            f"--sglang-help {sglang_help}: a binary file, not text; save `python -m sglang.launch_server --help` there"
        )
    catalog = FlagCatalog.from_help(help_text, str(sglang_help))
    if "port" not in catalog.flags:
        _fail(f"--sglang-help {sglang_help}: lists no --port; is it SGLang's launch_server --help?")
    return catalog


@app.command("import")
def import_(
    data: list[Path] = typer.Argument(None, help="CSV or JSONL files of launches, or bench_serving --output-file's."),
    out: Path = typer.Option(..., "--out", help="The surface file to write, e.g. surfaces/my-sweep.json."),
    mapping_file: Path | None = typer.Option(
        None, "--mapping", help="A YAML mapping file (docs/surface-format.md); the options below add to it."
    ),
    flag: list[str] = typer.Option([], "--flag", help="COLUMN=FLAG: a column holding an SGLang flag's value."),
    metric: list[str] = typer.Option([], "--metric", help="COLUMN=METRIC: a column of a bench_serving metric."),
    failure: str | None = typer.Option(
        None,
        "--failure",
        help="The column saying a launch failed (empty: it ran), or COLUMN=VALUE: failed where equal.",
    ),
    concurrency: str | None = typer.Option(None, "--concurrency", help="The concurrency column, or one number."),
    startup_s: str | None = typer.Option(None, "--startup-s", help="The column of startup seconds."),
    benchmark_s: str | None = typer.Option(None, "--benchmark-s", help="The column of benchmark seconds."),
    flags: str | None = typer.Option(
        None, "--flags", help="Server flags every line of DATA ran with, e.g. '--chunked-prefill-size 4096'."
    ),
    format: str | None = typer.Option(None, "--format", help="csv, jsonl or bench-serving (default: from the file)."),
    sglang_help: Path | None = typer.Option(
        None, "--sglang-help", help="That SGLang's `launch_server --help` output: flags are checked and it is recorded."
    ),
    objective: str | None = typer.Option(None, "--objective", help="The surface's first metric."),
    at_concurrency: int | None = typer.Option(None, "--at-concurrency", help="The concurrency it is read at."),
    model: str | None = typer.Option(None, "--model", help="The model the launches served."),
    gpu_name: str | None = typer.Option(None, "--gpu-name", help="The GPU they ran on."),
    sglang_version: str | None = typer.Option(None, "--sglang-version", help="The SGLang version."),
    input_len: int | None = typer.Option(None, "--isl", help="The workload's input length (tokens)."),
    output_len: int | None = typer.Option(None, "--osl", help="The workload's output length (tokens)."),
    context_len: int | None = typer.Option(
        None,
        "--context-length",
        min=1,
        help="The model's context length (config.json's max_position_embeddings): a replay predicts every "
        "--context-length above it before launch.",
    ),
    source: str | None = typer.Option(None, "--source", help="Where the data comes from (default: its files)."),
) -> None:
    """Turn another tool's results (CSV, JSONL, SGLang bench_serving's --output-file) into a surface file that
    `launcher: {kind: replay}` replays; what the data does not say is recorded as absent."""
    from tuner.trial.importer import ColumnMapping, MappingError, import_surface, load_column_mapping, parse_flags
    from tuner.trial.importer import parse_pairs as pairs

    if out.is_dir():
        _fail(f"--out {out}: is a folder; give the surface file's path, e.g. {out / 'surface.json'}")
    catalog = _sglang_help(sglang_help) if sglang_help is not None else None
    try:
        base = load_column_mapping(mapping_file) if mapping_file is not None else ColumnMapping()
        given: dict[str, Any] = {
            "format": format,
            "failure": failure,
            "concurrency": int(concurrency) if concurrency and concurrency.isdigit() else concurrency,
            "startup_s": startup_s,
            "benchmark_s": benchmark_s,
            "objective": objective,
            "at_concurrency": at_concurrency,
        }
        facts = {
            "model": model,
            "gpu_name": gpu_name,
            "sglang_version": sglang_version,
            "input_len": input_len,
            "output_len": output_len,
            "context_len": context_len,
            "source": source,
        }
        run_flags = parse_flags(flags) if flags else {}
        mapping = ColumnMapping.model_validate(
            {
                **base.model_dump(),
                **{k: v for k, v in given.items() if v is not None},
                "runs": [{"file": str(f), "flags": run_flags} for f in data or []] + base.model_dump()["runs"],
                "flags": {**base.flags, **pairs(flag, "--flag")},
                "metrics": {**base.metrics, **pairs(metric, "--metric")},
                "header": {**base.header.model_dump(), **{k: v for k, v in facts.items() if v is not None}},
            }
        )
        surface = import_surface(mapping, catalog)
    except MappingError as exc:
        _fail(str(exc))
    except ValidationError as exc:  # --format not one of the three
        _fail(f"--format {format}: {exc.errors()[0]['msg']}")
    try:
        surface.save(out)
    except OSError as exc:
        _fail(f"--out {out}: cannot write the surface ({exc.strerror or exc}); nothing written, give another path")
    failed = sum(not r.ok for r in surface.rows)
    absent = surface.absent()
    typer.echo(
        f"wrote {out}: {len(surface.rows)} configs ({failed} failed) from {sum(len(r.levels) for r in surface.rows)} "
        f"measured levels; not recorded: {', '.join(absent) if absent else 'nothing'}"
    )


@app.command()
def bench(
    config: Path | None = ConfigOpt,
    url: str = typer.Option("http://127.0.0.1:30000", "--url", help="A running SGLang server."),
    model: str | None = typer.Option(None, "--model", help="Model name sent in requests (default: the run file's)."),
    out: Path | None = typer.Option(None, "--out", help="Write the per-level table as CSV here."),
) -> None:
    """Benchmark a running server with the run file's workload (e.g. one started by deploy-best.sh); with the
    goodput objective, its load search."""
    from tuner.bench.client import BenchmarkError, run_benchmark
    from tuner.bench.load_search import best_level, run_load_search

    cfg = _config(config, {"model.path": model}, check=False)
    workload = _guard(cfg.workload.build, cfg.objective.request_slo())
    name = cfg.model.served_name or cfg.model.path or "default"
    search = cfg.objective.search
    try:
        if search is not None:
            result = run_load_search(url.rstrip("/"), name, workload, search, cfg.objective.slo)
        else:
            result = run_benchmark(url.rstrip("/"), name, workload)
    except (BenchmarkError, ValueError) as exc:  # ValueError: a workload or search the run file got wrong
        _fail(f"benchmark of {url} failed: {exc}")
    columns = [
        "concurrency",
        "completed",
        "failed",
        "output_throughput",
        "median_ttft_ms",
        "p99_ttft_ms",
        "median_tpot_ms",
        "median_itl_ms",
        "concurrency_achieved",
    ]
    if search is not None:
        columns = [
            "request_rate",
            "completed",
            "failed",
            "request_goodput",
            "output_throughput",
            "p99_ttft_ms",
            "p99_tpot_ms",
            "slo_pass",
        ]
    typer.echo(result.to_frame()[columns].round(2).to_string(index=False))
    if search is not None:
        best = best_level(result.levels, result.slo_pass)
        typer.echo(
            f"goodput {best.request_goodput:.2f} req/s at {best.request_rate:g} req/s"
            if best
            else f"no rate holds the SLO: {result.slo_broken}"
        )
    if out:
        result.to_csv(out)


@app.command()
def confirm(
    config: Path | None = ConfigOpt,
    top: int = typer.Option(3, "--top", help="How many of the best trials."),
    repeats: int = typer.Option(3, "--repeats", help="Benchmark runs per trial."),
) -> None:
    """Re-run the top trials, the baseline and the references; export then picks the best 95% bound."""
    from tuner.search.confirm import confirm_top
    from tuner.search.study import Tuner
    from tuner.views.dashboard import note_for

    if top < 1 or repeats < 2:
        _fail("--top must be at least 1 and --repeats at least 2 (a bound needs two runs)")
    cfg = _config(config, {})
    from tuner.search.storage import load_existing_study

    _guard(load_existing_study, cfg)  # confirms what `tune start` ran: never a new, empty study
    tuner = _guard(Tuner, cfg, on_record=note_for)
    _guard(tuner.prepare)
    try:
        results = _guard(confirm_top, tuner, top, repeats)
    except KeyboardInterrupt:
        _fail("interrupted: no confirmation recorded", 130)
    finally:
        tuner.launcher.close()
    from tuner.views.report import confirmation_lines

    for line in confirmation_lines(tuner.study):
        typer.echo(line)
    typer.echo(f"winner by confidence bound: trial {results[0].trial}" if results else "no feasible trial to confirm")
