"""Reports over a study: the trial table (tune status), the comparison with the baseline, and `tune report`'s
self-contained HTML file (plotly figures inline) with its CSV and Markdown tables."""

from __future__ import annotations

import html
import math
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from tuner.sglang.flags import ServerFlags
from tuner.trial.files import write_whole
from tuner.trial.numbers import recorded
from tuner.trial.record import (
    Budget,
    NothingToExport,
    StudyRecord,
    TrialRecord,
    baseline_record,
    best_or_none,
    export_choice,
    no_baseline,
    records,
    replay_notice,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go  # imported where figures are made: a report without them does not pay for it


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, failure class, objective values, key numbers and the tuned flags."""
    metrics = StudyRecord.of(study).metrics or ("value",)
    fixed = _fixed_flags(study)
    trials = records(study)
    replay = any(r.replay for r in trials)
    graphless = any(r.decode_graphs and r.decode_graphs.graphless for r in trials)
    rows = []
    for r in trials:
        cls = r.failure_class or ("-" if r.state == TrialState.RUNNING else "none")
        row: dict[str, Any] = {
            "trial": r.number,
            "state": r.state.name if r.state is not None else None,
            # A measured trial that broke a limit (its KV pool) says which, like a failure class.
            "class": (r.limit.name if r.limit else cls) if cls == "none" else cls,
            "feasible": r.is_feasible,
        }
        for i, m in enumerate(metrics):
            row[m] = round(r.values[i], 2) if r.values else None
        row["startup_s"] = r.times.startup_s
        row["startup"] = (
            r.startup.summary()
            + _cache_word(r)
            + _prestart_word(r)
            + _standby_word(r, "; stand-bys ran ")
            + _warmup_word(r)
        ) or None
        row["gpu_peak_mib"] = r.gpu.peak_used_mib
        row["kv_tokens"] = r.kv.max_total_num_tokens
        row["max_running"] = r.kv.max_running_requests
        if graphless:  # only then: the column costs width at 80 columns
            row["no_graph"] = r.decode_graphs.brief() if r.decode_graphs else None
        if replay:
            row["replayed"] = (
                r.replay.text()
                if r.replay
                else "not launched (predicted to fail)"
                if r.launched is False
                else "no (measured)"
            )
        row["flags"] = r.baseline_words if r.baseline else (r.flags or ServerFlags()).text(skip=fixed)
        if r.reference:
            row["flags"] = f"reference {r.reference}: {row['flags']}"
        elif r.warm_start:
            row["flags"] = f"warm start from {r.warm_start}: {row['flags']}"
        rows.append(row)
    return _whole(pd.DataFrame(rows), ("kv_tokens", "max_running"))


def _whole(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Counts stay whole numbers where a trial has none: pandas would make the column float (363119 shown as
    "363,119.0" beside a study whose trials all had one)."""
    for c in columns:
        if c in frame.columns:
            frame[c] = frame[c].astype("Int64")
    return frame


def _startup_legend() -> str:
    from tuner.sglang.startup_log import PHASES

    return "; ".join(f"{short}: {long}" for _, short, long in PHASES) + (
        ". From SGLang's log (whole-second timestamps); the warm-up until stable runs after startup, in the benchmark."
    )


STARTUP_LEGEND = _startup_legend()


def startup_frame(study: optuna.Study) -> pd.DataFrame:
    """Seconds of each startup phase per launched trial, as SGLang's log shows them (tuner.sglang.startup_log)."""
    from tuner.sglang.startup_log import PHASES

    rows = []
    for r in records(study):
        if not r.startup:
            continue
        row: dict[str, Any] = {"trial": r.number, "startup_s": r.times.startup_s}
        for name, short, _ in PHASES:
            row[short] = getattr(r.startup, name)
        row["reached"] = r.startup.reached
        row["compile cache"] = None if r.compile_cache_warm is None else "warm" if r.compile_cache_warm else "cold"
        row["kernel files built"] = r.kernels_built
        row["prestarted (s ahead)"] = r.prestarted_s
        row["its imports (s)"] = r.prestart_imports_s
        row["spawned on stand-bys"] = _standby_word(r) or None
        row["warm-up until stable (s)"] = r.warmup_s
        row["warm-up bursts"] = (
            None if r.warmup_s is None else f"{r.warmup_bursts}{'' if r.warmup_stable else ' (not stable)'}"
        )
        rows.append(row)
    return _whole(pd.DataFrame(rows), ("kernel files built",))


def _prestart_word(r: TrialRecord) -> str:
    if r.prestarted_s is None:
        return ""
    imports = "" if r.prestart_imports_s is None else f", its imports {r.prestart_imports_s:.0f} s"
    return f" (prestarted {r.prestarted_s:.0f} s ahead{imports})"


def _standby_word(r: TrialRecord, lead: str = "") -> str:
    if not r.spawned:
        return ""
    on = sum(s.on_standby for s in r.spawned)
    fresh = next((s for s in r.spawned if not s.on_standby), None)
    return f"{lead}{on} of {len(r.spawned)} spawned processes" + (f": {fresh.why}" if fresh else "")


def _cache_word(r: TrialRecord) -> str:
    if r.compile_cache_warm is None:
        return ""
    if r.compile_cache_warm:
        return " (caches warm)"
    if not r.kernels_built:
        return " (caches cold)"
    return f" (caches cold: built {r.kernels_built} file{'s' if r.kernels_built > 1 else ''})"


def _warmup_word(r: TrialRecord) -> str:
    if r.warmup_s is None:
        return ""
    secs = f"{r.warmup_s:.1f}" if r.warmup_s < 10 else f"{r.warmup_s:.0f}"
    return f"; warm-up {secs} s" + ("" if r.warmup_stable else " (not stable)")


def terminal_table(frame: pd.DataFrame, title: str):
    """The trial table for a terminal (rich): failed rows red, infeasible ones dim, flags folded to fit."""
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and frame[column].dtype != bool
        table.add_column(
            str(column),
            justify="right" if numeric else "left",
            overflow="fold",
            ratio=3 if column == "flags" else 2 if column == "startup" else None,
        )
    for _, row in frame.iterrows():
        failed = row.get("class") not in ("none", "-", None)
        style = "red" if failed else None if row.get("feasible") else "dim"
        table.add_row(*(_cell(row[c], str(c)) for c in frame.columns), style=style)
    return table


def baseline_note(study: optuna.Study) -> str | None:
    """Why no trial is compared with the baseline, where it is a replay's modelled one."""
    why = no_baseline(study)
    return f"No baseline comparison: {why}" if why else None


def defaults_note(study: optuna.Study) -> str | None:
    """The flags whose value SGLang chose for the baseline (trial 0) the space cannot draw."""
    base = next((r for r in records(study) if r.defaults_outside_space), None)
    if base is None or base.defaults_outside_space is None:
        return None
    return (
        f"SGLang's defaults lie outside the space (trial {base.number}): "
        + "; ".join(base.defaults_outside_space)
        + ". No sampled config runs what the defaults ran there: widen those choices to include it"
    )


def study_notes(study: optuna.Study) -> list[str]:
    """What a reader must know before trusting the numbers: a shared GPU, defaults outside the space, decode steps
    without a CUDA graph."""
    notes = [shared_gpu_note(study), defaults_note(study), baseline_note(study), *graphless_notes(study)]
    return [note for note in notes if note]


def graphless_notes(study: optuna.Study) -> list[str]:
    """One line per trial whose decode ran without a CUDA graph: its score may hide a cliff, not a flag's cost."""
    return [
        f"trial {r.number}: {r.decode_graphs.summary()}"
        + (f"; graphless of logged steps by level: {r.graphless_by_level}" if r.graphless_by_level else "")
        for r in records(study)
        if r.decode_graphs and r.decode_graphs.graphless
    ]


def shared_gpu_note(study: optuna.Study) -> str | None:
    """Which trials ran beside other processes on their GPUs (--allow-shared-gpu), and what those were."""
    shared = [r for r in records(study) if r.gpu_shared]
    if not shared:
        return None
    seen = {(h.gpu, h.pid): h for r in shared for h in r.gpu_shared or ()}
    who = ", ".join(
        f"GPU {h.gpu}: pid {h.pid}{' ' + h.name if h.name else ''} ({h.mib:.0f} MiB)"
        if h.mib is not None
        else f"GPU {h.gpu}: pid {h.pid}"
        for h in seen.values()
    )
    numbers = ", ".join(str(t.number) for t in shared)
    return (
        f"shared GPU: trial{'s' if len(shared) > 1 else ''} {numbers} ran beside other processes ({who}); "
        f"their numbers are not a lone server's"
    )


def _fixed_flags(study: optuna.Study) -> set[str]:
    for r in records(study):
        if r.baseline:
            return set(r.flag_values)
    return set()


# -- best vs baseline ----------------------------------------------------------------------------------

# (label, user attribute, better when): the seed's comparison table, in its order.
COMPARED = (
    ("goodput (req/s)", "goodput", "higher"),  # load-search studies only, like max_rate
    ("max rate meeting the SLO (req/s)", "max_rate", "higher"),
    ("output tok/s", "output_throughput", "higher"),
    ("request/s", "request_throughput", "higher"),
    ("median TTFT (ms)", "median_ttft_ms", "lower"),
    ("p99 TTFT (ms)", "p99_ttft_ms", "lower"),
    ("median TPOT (ms)", "median_tpot_ms", "lower"),
    ("GPU peak (MiB)", "gpu_peak_used_mib", "lower"),
)


def _best_and_baseline(study: optuna.Study) -> tuple[TrialRecord | None, TrialRecord | None]:
    return best_or_none(study), baseline_record(study)


def comparison_frame(study: optuna.Study) -> pd.DataFrame:
    """metric, baseline, best, change_pct: the best feasible trial against the baseline (trial 0)."""
    best, base = _best_and_baseline(study)
    rows = []
    for label, key, better in COMPARED:
        b = base.number_at(key) if base is not None and base.is_feasible else None
        v = best.number_at(key) if best is not None else None
        if key in ("gpu_peak_used_mib", "goodput", "max_rate") and b is None and v is None:
            continue  # no NVML where the study ran; not a load-search study
        if (b is not None or v is not None) and not (recorded(b) or recorded(v)):
            continue  # NaN: a metric the surface did not record (the replay notice lists it)
        change = round(100.0 * (v / b - 1.0), 1) if isinstance(b, (int, float)) and b and v is not None else None
        rows.append({"metric": label, "baseline": b, "best": v, "change_pct": change, "better": better})
    return pd.DataFrame(rows, columns=["metric", "baseline", "best", "change_pct", "better"])


def export_notes(study: optuna.Study) -> list[str]:
    """What ``tune export`` deploys, when it is a simpler config than the best shown, and whether its flags change
    the model's answers."""
    try:
        choice = export_choice(study)
    except NothingToExport:
        return []
    notes = [f"tune export deploys trial {choice.chosen.number}: {choice.why}"] if choice.why else []
    warning = (choice.chosen.flags or ServerFlags()).numerics_warning()
    if warning:
        notes.append(f"The exported config (trial {choice.chosen.number}) {warning}")
    return notes


def is_load_search(study: optuna.Study) -> bool:
    return StudyRecord.of(study).is_load_search


def slo_limits(study: optuna.Study) -> dict[str, float]:
    return StudyRecord.of(study).slo_limits


CURVE_COLUMNS = [
    "config",
    "trial",
    "repeat",
    "request_rate",
    "request_throughput",
    "output_throughput",
    "request_goodput",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "failed",
    "slo_pass",
]

# Level metrics of the curve table: left out where no level recorded them (request_rate is None at a fixed
# concurrency, and says so).
_CURVE_METRICS = ("request_throughput", "output_throughput", "request_goodput", "p99_ttft_ms", "p99_tpot_ms")


def curve_trials(study: optuna.Study) -> list[tuple[str, TrialRecord]]:
    """(label, trial) for the best, the baseline and every reference trial (user attribute ``reference``)."""
    best, base = _best_and_baseline(study)
    out = []
    if base is not None:
        out.append((f"baseline (trial {base.number})", base))
    if best is not None and (base is None or best.number != base.number):
        out.append((f"best (trial {best.number})", best))
    for r in records(study, (TrialState.COMPLETE,)):
        if r.reference:
            out.append((f"{r.reference} (trial {r.number})", r))
    return out


def curves_frame(study: optuna.Study) -> pd.DataFrame:
    """The load-vs-latency curve of each compared config: one row per measured level, in load order."""
    rows = []
    for label, t in curve_trials(study):
        for lv in sorted(t.measured_levels, key=lambda lv: (lv.repeat, lv.request_rate or 0, lv.concurrency)):
            rows.append({"config": label, "trial": t.number, **{c: getattr(lv, c) for c in CURVE_COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def levels_frame(study: optuna.Study) -> pd.DataFrame:
    """Per concurrency level: output tok/s, median and p99 TTFT of the baseline and the best trial (fixed
    concurrency studies; a load search's levels are its curve, see curves_frame)."""
    best, base = _best_and_baseline(study)
    if is_load_search(study):
        best = base = None
    by_c: dict[int, dict] = {}
    for who, t in (("baseline", base), ("best", best)):
        if t is None:
            continue
        for lv in t.measured_levels:
            row = by_c.setdefault(lv.concurrency, {"concurrency": lv.concurrency})
            row[f"{who}_output_tok_s"] = lv.output_throughput
            row[f"{who}_median_ttft_ms"] = lv.median_ttft_ms
            row[f"{who}_p99_ttft_ms"] = lv.p99_ttft_ms
    cols = ["concurrency"] + [
        f"{w}_{m}" for m in ("output_tok_s", "median_ttft_ms", "p99_ttft_ms") for w in ("baseline", "best")
    ]
    frame = pd.DataFrame([by_c[c] for c in sorted(by_c)], columns=cols)
    frame = _without_unrecorded(frame, ("median_ttft_ms", "p99_ttft_ms"))
    if not frame.empty:
        frame["output_change_pct"] = [
            round(100.0 * (n / o - 1.0), 1) if pd.notna(o) and o and pd.notna(n) else None
            for o, n in zip(frame["baseline_output_tok_s"], frame["best_output_tok_s"], strict=True)
        ]
    return frame


def _without_unrecorded(frame: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` without the columns of a metric (``x`` or ``baseline_x`` and ``best_x``) that no level recorded:
    an imported surface's unmapped metric is NaN in every row, and a column of dashes read as missing data."""
    if frame.empty:
        return frame
    drop = []
    for m in metrics:
        cols = [c for c in (m, f"baseline_{m}", f"best_{m}") if c in frame.columns]
        if cols and frame[cols].isna().all().all():
            drop += cols
    return frame.drop(columns=drop)


def failures_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per failure class seen: how many trials, which, and the hint."""
    rows: dict[str, dict] = {}
    for r in records(study):
        if r.failure is None or r.failure.name in ("none", "over_budget"):
            continue
        cls = r.failure.name
        row = rows.setdefault(cls, {"class": cls, "trials": [], "hint": r.failure.hint or ""})
        row["trials"].append(r.number)
    return pd.DataFrame(
        [{**r, "count": len(r["trials"]), "trials": ", ".join(map(str, r["trials"]))} for r in rows.values()],
        columns=["class", "count", "trials", "hint"],
    )


# -- files ----------------------------------------------------------------------------------------------


def _cell(value, column: str = "") -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "–"
    if column.endswith("_pct") and isinstance(value, (int, float)):
        return f"{value:+.1f}%"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = [
        "| " + " | ".join(_cell(v, c).replace("|", "\\|") for v, c in zip(row, frame.columns, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body]) + "\n"


def html_table(frame: pd.DataFrame, row_class=None) -> str:
    if frame.empty:
        return "<p class='muted'>nothing to show</p>"
    # Headers like baseline_median_ttft_ms may break after each underscore: unbroken, the per-concurrency table
    # is wider than a 1000 px window.
    out = [
        "<table><thead><tr>",
        *(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in frame.columns),
        "</tr></thead><tbody>",
    ]
    for _, row in frame.iterrows():
        cls = row_class(row) if row_class else ""
        out.append(f"<tr class='{cls}'>" if cls else "<tr>")
        for c in frame.columns:
            num = isinstance(row[c], (int, float, np.number)) and not isinstance(row[c], bool)
            text = html.escape(_cell(row[c], str(c)))
            if c == "flags":  # break between flags, never inside --mem-fraction-static at its hyphens
                text = " ".join(f"<span class=flag>{f}</span>" for f in re.split(r" (?=--)", text))
            out.append(f"<td{' class=num' if num else ''}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass
class Report:
    html: Path
    csv: Path
    markdown: Path
    figures: list[str] = field(default_factory=list)  # titles, in the order they appear
    skipped: list[str] = field(default_factory=list)  # figures that could not be drawn, with the reason


def _figures(study: optuna.Study) -> tuple[list[tuple[str, go.Figure]], list[str]]:
    import plotly.graph_objects as go
    from optuna import visualization as vis

    from tuner.views import importance

    metrics = StudyRecord.of(study).metrics or [f"objective {i}" for i in range(len(study.directions))]
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_params = [t for t in complete if t.params]
    figs: list[tuple[str, go.Figure]] = []
    skipped: list[str] = []

    def add(title: str, make, need: str | None = None) -> None:
        if need:
            skipped.append(f"{title}: {need}")
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except Exception as exc:
            skipped.append(f"{title}: {exc}")
            return
        if title == "Parameter importances":  # which evaluator, and that it is one study's few trials
            method = "<br>".join(textwrap.wrap(importance.METHOD, 110))  # within a 1000 px window
            fig.update_layout(title=f"{title}<br><sup>{method}</sup>", margin={"t": 110})
        else:
            fig.update_layout(title=title)
        figs.append((title, fig))

    add(
        "Optimisation history",
        lambda: vis.plot_optimization_history(study, target=target, target_name=metrics[0]),
        None if complete else "no completed trial",
    )
    # Not Optuna's default (PED-ANOVA: what sets the top 10% apart), which ranked the demo's flags upside down.
    add(
        "Parameter importances",
        lambda: importance.figure(study, metrics[0]),
        None if len(with_params) >= 3 else f"needs 3 completed trials with tuned parameters, has {len(with_params)}",
    )
    if len(study.directions) in (2, 3):
        add(
            f"Pareto front ({' vs '.join(metrics)})",
            lambda: vis.plot_pareto_front(study, target_names=list(metrics)),
            None if complete else "no completed trial",
        )
    add(
        "Parallel coordinates",
        lambda: _visible_lines(
            vis.plot_parallel_coordinate(_tuned_only(study, with_params), target=target, target_name=metrics[0])
        ),
        None if with_params else "no completed trial with tuned parameters",
    )

    curves = curves_frame(study)
    title = "Load vs latency: p99 TTFT and p99 TPOT"
    if curves.empty:
        skipped.append(f"{title}: no best, baseline or reference trial with measured levels")
    else:
        add(title, lambda: _curve_figure(curves, slo_limits(study), is_load_search(study)))

    levels = levels_frame(study)
    if is_load_search(study):
        pass  # its levels are the curves above
    elif levels.empty:
        skipped.append("Best vs baseline per concurrency: no feasible best trial or baseline with levels")
    else:
        best, base = _best_and_baseline(study)
        fig = go.Figure()
        x = [str(c) for c in levels["concurrency"]]
        if base is not None and levels["baseline_output_tok_s"].notna().any():
            fig.add_bar(name="baseline (trial 0)", x=x, y=levels["baseline_output_tok_s"])
        if best is not None and levels["best_output_tok_s"].notna().any():
            fig.add_bar(name=f"best (trial {best.number})", x=x, y=levels["best_output_tok_s"])
        fig.update_layout(barmode="group", xaxis_title="concurrency", yaxis_title="output tok/s")
        add("Best vs baseline per concurrency: output tok/s", lambda: fig)
    return figs, skipped


def _curve_figure(curves: pd.DataFrame, slo: dict[str, float], by_rate: bool):
    """Two panels, p99 TTFT and p99 TPOT against load, one line per config; SLO limits as dashed lines,
    levels that broke the SLO as open markers."""
    from plotly.subplots import make_subplots

    x_col, x_title = (
        ("request_rate", "request rate (req/s)") if by_rate else ("request_throughput", "request throughput (req/s)")
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=("p99 TTFT (ms)", "p99 TPOT (ms)"))
    palette = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")
    for i, (label, g) in enumerate(curves[curves["repeat"].fillna(0) == 0].groupby("config", sort=False)):
        g = g.sort_values(x_col)
        passed = g["slo_pass"].map(lambda v: v is not False)
        symbols = ["circle" if ok else "circle-open" for ok in passed]
        for col, metric in enumerate(("p99_ttft_ms", "p99_tpot_ms"), start=1):
            fig.add_scatter(
                x=g[x_col],
                y=g[metric],
                name=label,
                legendgroup=label,
                showlegend=col == 1,
                mode="lines+markers",
                marker={"symbol": symbols, "size": 9},
                line={"color": palette[i % len(palette)]},
                row=1,
                col=col,
            )
    for col, metric in enumerate(("p99_ttft_ms", "p99_tpot_ms"), start=1):
        if metric in slo:
            fig.add_hline(
                y=slo[metric],
                line_dash="dash",
                line_color="#b00",
                row=1,
                col=col,
                annotation_text=f"SLO {slo[metric]:g} ms",
            )
        fig.update_xaxes(title_text=x_title, row=1, col=col)
    return fig


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.infeasible td{color:#999}tr.failed td{color:#a33}.muted{color:#777}.good{color:#070}.bad{color:#b00}
code{background:#f5f5f5;padding:1px 4px}.flag{white-space:nowrap}
.replay{background:#fff4d6;border:1px solid #e0b84a;padding:.5em 1em}
"""


def confirmation_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per confirmed trial (tune confirm, or confirm: at the end of a study): mean ± 95% CI over its
    re-runs and the one-sided bound it is ranked by, best bound first."""
    rows = []
    for number, c in (StudyRecord.of(study).confirmations or {}).items():
        rows.append(
            {
                "trial": number,
                "role": c.role,
                "metric": c.metric,
                "runs": len(c.runs),
                "mean": c.mean,
                "ci95": c.ci95,
                "bound_95": c.bound if c.bound is not None and math.isfinite(c.bound) else None,
                "failure": c.failure or "",
            }
        )
    return pd.DataFrame(rows, columns=["trial", "role", "metric", "runs", "mean", "ci95", "bound_95", "failure"])


def _is_replay(study: optuna.Study) -> bool:
    return any(r.replay for r in records(study))


def confirmation_title(study: optuna.Study) -> str:
    """The heading of the re-runs: a replay answers each re-run identically, so its re-runs confirm nothing."""
    if _is_replay(study):
        return "Re-runs of a replay: not a confirmation (only a real study's re-runs measure the spread)"
    return "Confirmed by re-runs"


def confirmation_lines(study: optuna.Study) -> list[str]:
    """Plain sentences: each confirmed trial's interval, and the winner against the defaults and references."""
    lines = []
    replay = _is_replay(study)
    for _, r in confirmation_frame(study).iterrows():
        what = f"trial {r.trial} ({r.role})"
        if r.failure:
            lines.append(f"{what}: failed on re-run ({r.failure})")
        elif replay:  # every re-run is answered from the same recorded row: nothing to spread
            lines.append(f"{what}: {r.metric} {r['mean']:.2f} (replayed: each re-run gives the recorded answer)")
        elif r.ci95 is None or pd.isna(r.ci95):
            lines.append(f"{what}: {r.metric} {r['mean']:.2f} (one run: no interval)")
        else:
            lines.append(
                f"{what}: {r.metric} {r['mean']:.2f} ± {r.ci95:.2f} (95% CI over {r.runs} runs), bound {r.bound_95:.2f}"
            )
    lines += [c.statement for c in StudyRecord.of(study).comparisons]
    if lines and (why := no_baseline(study)):
        lines.append(f"not compared with SGLang defaults: {why}")
    return lines


def build_report(study: optuna.Study, out_dir: Path) -> Report:
    """report.html (self-contained: plotly.js inline, opens offline), comparison.csv and comparison.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = StudyRecord.of(study).metrics or ("value",)
    comp = comparison_frame(study)
    levels = levels_frame(study)
    trials = trials_frame(study)
    fails = failures_frame(study)
    startup = startup_frame(study)
    best, base = _best_and_baseline(study)
    figs, skipped = _figures(study)

    csv_path, md_path, html_path = out_dir / "comparison.csv", out_dir / "comparison.md", out_dir / "report.html"
    write_whole(csv_path, comp.to_csv(index=False))
    notice = replay_notice(records(study))
    md = [f"# Study {study.study_name}: best vs baseline", ""]
    if notice:
        md += [f"**{notice}**", ""]
    if best is not None:
        best_flags = (best.flags or ServerFlags()).text()
        md += [f"Best: trial {best.number}: " + (f"`{best_flags}`" if best_flags else "SGLang defaults"), ""]
    exported = export_notes(study)
    md += [f"**{note}**\n" for note in exported]
    where = _where(study)
    md += [f"{where[0].upper()}{where[1:]}.", ""]
    md += [f"Trials: {Budget.of(study).text()}.", ""]
    for note in study_notes(study):
        md += [f"**{note}**", ""]
    md += [markdown_table(comp)]
    confirmed = confirmation_lines(study)
    if confirmed:
        md += ["", f"## {confirmation_title(study)}", "", *(f"- {line}" for line in confirmed)]
    if not levels.empty:
        md += ["", "## Per concurrency", "", markdown_table(levels)]
    curves = curves_frame(study)
    # The figure draws from every column; the tables leave out the metrics no level recorded.
    curves_shown = _without_unrecorded(curves, _CURVE_METRICS)
    if not curves.empty:
        md += ["", "## Load vs latency", "", markdown_table(curves_shown)]
    if not startup.empty:
        md += ["", "## Startup phases (s)", "", STARTUP_LEGEND, "", markdown_table(startup)]
    if not fails.empty:
        md += ["", "## Failures", "", markdown_table(fails)]
    write_whole(md_path, "\n".join(md))

    states = trials["state"].value_counts().to_dict() if not trials.empty else {}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<meta name='sglang-tuner-figures' content='{len(figs)}'>",
        f"<title>sglang-tuner report: {html.escape(study.study_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Study <code>{html.escape(study.study_name)}</code></h1>",
        f"<p class='replay'>{html.escape(notice)}</p>" if notice else "",
        "<p>Objectives: "
        + ", ".join(f"{html.escape(m)} ({d.name.lower()})" for m, d in zip(metrics, study.directions, strict=False))
        + f" {html.escape(_where(study))}. "
        + f"Trials: {len(trials)} ("
        + ", ".join(f"{n} {str(s).lower()}" for s, n in states.items())
        + f"): {html.escape(Budget.of(study).text())}. "
        + f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>",
    ]
    parts += [f"<p class='bad'>{html.escape(note)}</p>" for note in study_notes(study)]
    parts.append("<h2>Best vs baseline</h2>")
    if best is None:
        parts.append("<p class='bad'>No feasible trial yet.</p>")
    else:
        flags = (best.flags or ServerFlags()).text() or "SGLang defaults"
        parts.append(f"<p>Best: trial {best.number}: <code>{html.escape(flags)}</code></p>")
    parts += [f"<p class='bad'>{html.escape(note)}</p>" for note in exported]
    if base is None:
        why = no_baseline(study)
        parts.append(
            f"<p class='bad'>No baseline comparison: {html.escape(why)}.</p>"
            if why
            else "<p class='muted'>No completed baseline trial (trial 0 with SGLang defaults).</p>"
        )
    elif not base.is_feasible:
        parts.append(
            f"<p class='bad'>The baseline (trial {base.number}) failed: {html.escape(str(base.failure_class))}.</p>"
        )
    parts.append(html_table(comp))
    if confirmed:
        parts += [
            f"<h3>{html.escape(confirmation_title(study))}</h3>",
            "" if _is_replay(study) else html_table(confirmation_frame(study)),
            "<ul>",
            *(f"<li>{html.escape(line)}</li>" for line in confirmed),
            "</ul>",
        ]
    if not levels.empty:
        parts += ["<h3>Per concurrency</h3>", html_table(levels)]
    if not curves.empty:
        parts += ["<h3>Load vs latency</h3>", html_table(curves_shown)]
    if not startup.empty:
        parts += ["<h3>Startup phases (s)</h3>", f"<p>{html.escape(STARTUP_LEGEND)}</p>", html_table(startup)]

    first = True
    fig_html: dict[str, str] = {}
    for title, fig in figs:
        fig_html[title] = fig.to_html(
            full_html=False,
            include_plotlyjs=first,
            config={"displaylogo": False},
            default_height="460px",
        )
        first = False
    for title, _ in figs:
        parts += [f"<h2>{html.escape(title)}</h2>", fig_html[title]]
    if skipped:
        parts += ["<h2>Figures not drawn</h2><ul>", *(f"<li>{html.escape(s)}</li>" for s in skipped), "</ul>"]

    parts += ["<h2>Failure classes</h2>", html_table(fails) if not fails.empty else "<p>No failed trial.</p>"]

    def row_class(row) -> str:
        if row.get("class") not in ("none", "-", None):
            return "failed"
        return "" if row.get("feasible") else "infeasible"

    parts += ["<h2>Trials</h2>", html_table(trials, row_class), "</body></html>"]
    write_whole(html_path, "\n".join(parts))
    return Report(html_path, csv_path, md_path, [t for t, _ in figs], skipped)


def _where(study: optuna.Study) -> str:
    if is_load_search(study):
        slo = ", ".join(f"{k} <= {v:g}" for k, v in slo_limits(study).items())
        return f"at the highest request rate meeting the SLO ({slo})"
    at = StudyRecord.of(study).at_concurrency
    return f"at concurrency {at if at is not None else '?'}"


def _visible_lines(fig):
    """Optuna colours each trial's line by Blues, whose low end is near-white on the white page: the worst
    trials vanished. The same position on Viridis instead: dark purple (worst) to yellow (best)."""
    from plotly.colors import sample_colorscale

    white, dark = 247 + 251 + 255, 8 + 48 + 107  # Blues' two ends
    for trace in fig.data:
        color = getattr(getattr(trace, "line", None), "color", None)
        if isinstance(color, str) and color.startswith("rgb("):
            total = sum(float(x) for x in color[4:-1].split(","))
            trace.line.color = sample_colorscale("Viridis", [min(1.0, max(0.0, (white - total) / (white - dark)))])[0]
        marker = getattr(trace, "marker", None)
        if marker is not None and marker.colorscale is not None:
            marker.colorscale = "Viridis"
    return fig


def _tuned_only(study: optuna.Study, trials: list) -> optuna.Study:
    """The study without its baseline: SGLang's defaults have no parameter values, and Optuna would draw them
    as a "None" tick below every axis."""
    view = optuna.create_study(directions=study.directions)
    view.add_trials(trials)
    return view
