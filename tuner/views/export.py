"""Export the best feasible trial: deploy-best.sh (starts it the way the seed's deploy scripts did) and best.json."""

from __future__ import annotations

import json
import os
import shlex
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna

from tuner.serve.launcher import Launcher, LaunchSpec
from tuner.sglang import endpoints
from tuner.sglang.flags import ServerFlags
from tuner.trial.files import write_whole
from tuner.trial.numbers import number
from tuner.trial.record import (
    ExportChoice,
    NothingToExport,
    StudyRecord,
    TrialRecord,
    baseline_record,
    best_trial,
    export_choice,
    no_baseline,
    reference_records,
)

__all__ = ["Exported", "NothingToExport", "best_trial", "export_best"]


@dataclass(frozen=True)
class Exported:
    trial: TrialRecord
    script: Path
    record: Path
    choice: ExportChoice


def export_best(study: optuna.Study, launcher: Launcher, out_dir: Path = Path(".")) -> Exported:
    choice = export_choice(study)
    best = choice.chosen
    sr = StudyRecord.of(study)
    assert best.flags is not None and best.number is not None
    flags = best.flags
    env = dict(sr.run.get("launcher", {}).get("env", {}))
    spec = LaunchSpec(
        flags=flags,
        env=env,
        log_path=Path("server.log"),
        host=str(flags.as_dict().get("host", "127.0.0.1")),
        port=int(flags.as_dict().get("port", 30000)),
        gpus=best.gpus or (),
        study=study.study_name,
        trial=best.number,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / "deploy-best.sh"
    write_whole(script, _header(study, choice) + launcher.deploy_script(spec))
    os.chmod(script, 0o755)
    record = out_dir / "best.json"
    base = baseline_record(study)
    metrics = list(sr.metrics or ())

    def levels(r: TrialRecord) -> list[dict]:
        return [lv.write() for lv in r.measured_levels]

    write_whole(
        record,
        json.dumps(
            {
                "study": study.study_name,
                "trial": best.number,
                "metrics": dict(zip(metrics, best.values or (), strict=False)),
                "argv": list(best.argv) if best.argv is not None else None,
                "flags": best.flag_values,
                "params": dict(best.params),
                "levels": levels(best),
                "baseline": {
                    "trial": base.number,
                    "metrics": dict(zip(metrics, base.values or (), strict=False)),
                    "levels": levels(base),
                }
                if base
                else None,
                "no_baseline": no_baseline(study),
                "references": {
                    name: {
                        "trial": t.number,
                        "feasible": t.is_feasible,
                        "metrics": dict(zip(metrics, t.values or (), strict=False)),
                        "flags": t.flags.as_dict() if t.flags is not None else None,
                    }
                    for name, t in reference_records(study).items()
                },
                "confirmation": sr.confirmation.write() if sr.confirmation is not None else None,
                # Which trial was exported and why: null when it is the winner itself.
                "simplest": {"trial": best.number, "winner": choice.winner.number, "why": choice.why}
                if choice.why
                else None,
                "launcher": best.launcher,
                "gpu_peak_used_mib": best.gpu.peak_used_mib,
                **(
                    {
                        "replayed": True,
                        "modelled": best.replay.modelled,
                        "replay_of": list(best.replay.sources),
                        "replay_surface": best.replay.surface,
                    }
                    if best.replay
                    else {}
                ),
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        ),
    )
    return Exported(best, script, record, choice)


def _header(study: optuna.Study, choice: ExportChoice) -> str:
    best = choice.chosen
    sr = StudyRecord.of(study)
    wl = sr.run.get("workload", {})
    launcher = best.launcher or {}
    lines = [
        "#!/usr/bin/env bash",
        f"# deploy-best.sh: the {'simplest confirmed' if choice.why else 'best feasible'} config of study "
        f"{study.study_name!r} (trial {best.number}),",
        f"# exported by sglang-tuner on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"# Launcher: {', '.join(f'{k}={v}' for k, v in launcher.items())}",
    ]
    warning = (best.flags or ServerFlags()).numerics_warning()
    if warning:
        lines += [f"# {line}" for line in textwrap.wrap(warning, 110)]
    if choice.why:
        lines += [
            f"# SIMPLEST WITHIN THE WINNER'S INTERVAL: trial {best.number}, not the confirmed winner (trial "
            f"{choice.winner.number}).",
            *(f"#   {line}" for line in textwrap.wrap(choice.why, 110)),
        ]
    if best.replay:
        lines += [
            "# REPLAY: the numbers below are replayed from recorded trials, never measured by this study:",
            f"#   {best.replay.text()} of {best.replay.surface} ({launcher.get('recorded')}),",
            f"#   {launcher.get('gpu')}, SGLang {launcher.get('sglang_version')}"
            + ("; no recorded trial had these flags: modelled from the nearest ones" if best.replay.modelled else "")
            + ". Measure it before relying on it: tune bench on the server this script starts.",
        ]
        if launcher.get("absent"):
            lines.append(f"#   The surface does not record: {launcher['absent']}.")
    base = baseline_record(study)
    if base is None and (why := no_baseline(study)):
        lines += [f"# {line}" for line in textwrap.wrap(f"NO COMPARISON with SGLang defaults: {why}.", 110)]
    if best.settled.version:
        lines.append(f"# SGLang version (from {endpoints.SERVER_INFO}): {best.settled.version}")
    peak = f", GPU peak {best.gpu.peak_used_mib:.0f} MiB" if best.gpu.peak_used_mib is not None else ""
    # A surface that records no ISL/OSL answered whatever lengths the run file named: they are the run file's.
    unrecorded = " (the run file's: the surface records none)" if "ISL/OSL" in launcher.get("absent", "") else ""
    lines.append(
        f"# {'Replayed' if best.replay else 'Measured'} with {_workload_words(best.workload, wl)}{unrecorded}, "
        f"startup {best.times.startup_s or 0:.1f} s{peak}:"
    )
    is_base = base is not None and base.number == best.number
    rated = any(lv.request_rate is not None for lv in best.measured_levels)
    key = "request_rate" if rated else "concurrency"
    base_levels = {getattr(lv, key): lv for lv in base.measured_levels} if base else {}
    for lv in best.measured_levels:
        if rated:
            line = (
                f"#   {lv.request_rate:6.2f} req/s: goodput {number(lv.request_goodput, '7.2f', ' req/s')}, "
                f"p99 TTFT {number(lv.p99_ttft_ms, '8.1f', ' ms')}, p99 TPOT {number(lv.p99_tpot_ms, '7.2f', ' ms')}, "
                + ("SLO held" if lv.slo_pass else "SLO broken" if lv.slo_pass is not None else "no SLO set")
            )
        else:
            line = (
                f"#   concurrency {lv.concurrency:>3}: {number(lv.output_throughput, '9.1f', ' output tok/s')}, "
                f"median TTFT {number(lv.median_ttft_ms, '8.1f', ' ms')}, "
                f"median TPOT {number(lv.median_tpot_ms, '7.2f', ' ms')}"
            )
        ref = base_levels.get(getattr(lv, key))
        if not rated and ref and ref.output_throughput and not is_base:
            line += f" ({100 * ((lv.output_throughput or 0) / ref.output_throughput - 1):+.1f}% vs SGLang defaults)"
        lines.append(line)
    if rated and best.max_rate is not None:
        slo = ", ".join(f"{k} <= {v:g}" for k, v in (best.workload or {}).get("slo", {}).items())
        goodput = best.goodput or 0
        line = f"# Highest rate holding the SLO ({slo}): {best.max_rate:g} req/s, goodput {goodput:.2f} req/s"
        if base is not None and not is_base and base.goodput:
            line += f" ({100 * (goodput / base.goodput - 1):+.1f}% vs SGLang defaults)"
        lines.append(line)
    confirmed = sr.confirmed(best.number) if best.number is not None else None
    if confirmed and confirmed.ci95 is not None and confirmed.mean is not None:
        lines.append(
            f"# Confirmed: {confirmed.metric} {confirmed.mean:.1f} ± {confirmed.ci95:.1f} "
            f"(mean ± 95% CI over {len(confirmed.runs)} re-runs)"
        )
    lines += [f"# {c.statement}" for c in sr.comparisons if c.a.endswith(f"(trial {best.number})")]
    lines += ["set -euo pipefail", ""]
    lines += _dummy_weights_warning(best)
    return "\n".join(lines) + "\n"


def _dummy_weights_warning(best: TrialRecord) -> list[str]:
    """--load-format dummy serves random weights: fine for timing, never for answers. Said in the script and, when
    it runs, on stderr; a replay's model path is the recording machine's."""
    values = best.flag_values
    if str(values.get("load-format", "")) != "dummy":
        return []
    where = f" {values['model-path']}" if values.get("model-path") else ""
    said = (
        "--load-format dummy: random weights, as the "
        + ("recorded servers" if best.replay else "measured server")
        + " ran; this server will not give real answers"
        + (f", and its model path{where} is the recording machine's" if best.replay else "")
        + ". Drop --load-format dummy and give your model's path to serve."
    )
    return [f"# WARNING: {said}", f"echo {shlex.quote('deploy-best.sh: WARNING: ' + said)} >&2", ""]


def _workload_words(described: Mapping[str, Any] | None, configured: Mapping[str, Any]) -> str:
    """The trial's own workload record in words; studies older than that record name the run file's lengths."""
    d = described or {}
    arrival = f", {d['arrival']} arrivals" if d.get("load_search") else ""
    if d.get("dataset") == "shared-prefix":
        return (
            f"shared-prefix chat ({d['groups']} groups x {d['prompts_per_group']}, system prompt "
            f"{d['system_prompt_len']}, question {d['question_len']}, output {d['output_len']} tokens{arrival})"
        )
    if d.get("dataset") == "request-log":
        return f"the traffic of {d['path']} ({d['requests']} requests at their logged lengths and gaps)"
    if d.get("dataset") == "sharegpt":
        return f"ShareGPT prompts from {d['path']}{arrival}"
    if d.get("dataset") == "random":
        ratio = f", lengths x[{d['range_ratio']:g}, 1]" if d.get("range_ratio", 1.0) != 1.0 else ""
        return f"ISL {d['input_len']} / OSL {d['output_len']}{ratio}{arrival}"
    return f"ISL {configured.get('input_len')} / OSL {configured.get('output_len')}"
