"""Export the best feasible trial: deploy-best.sh (starts it the way the seed's deploy scripts did) and best.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError
from tuner.serve.launcher import Launcher, LaunchSpec
from tuner.sglang.flags import ServerFlags


class NothingToExport(TunerError):
    pass


@dataclass(frozen=True)
class Exported:
    trial: FrozenTrial
    script: Path
    record: Path


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best feasible trial; with two objectives, the Pareto trial best on the first one.

    After ``tune confirm`` the winner is the confirmed trial with the best confidence bound instead.
    """
    confirmed = [int(n) for n, c in study.user_attrs.get("confirmations", {}).items() if not c.get("failure")]
    if confirmed:
        # Stored sorted by bound, best first (tuner.confirm).
        return study.trials[confirmed[0]]
    try:
        if len(study.directions) == 1:
            best = study.best_trial
        else:
            front = study.best_trials
            if not front:
                raise ValueError
            sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
            best = max(front, key=lambda t: sign * t.values[0])
    except ValueError:
        best = None
    if best is None or not best.user_attrs.get("feasible", False):
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        raise NothingToExport(f"study {study.study_name!r} has no feasible trial yet ({done} completed)")
    return best


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("baseline"):
            return t
    return None


def reference_trials(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Each reference's completed trial by name (the latest, if it was re-run)."""
    return {
        t.user_attrs["reference"]: t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("reference")
    }


def export_best(study: optuna.Study, launcher: Launcher, out_dir: Path = Path(".")) -> Exported:
    best = best_trial(study)
    flags = ServerFlags(tuple(best.user_attrs["flags"].items()))
    gpus = tuple(best.user_attrs.get("gpus", ()))
    run = study.user_attrs.get("run_config", {})
    env = dict(run.get("launcher", {}).get("env", {}))
    spec = LaunchSpec(
        flags=flags,
        env=env,
        log_path=Path("server.log"),
        host=str(flags.as_dict().get("host", "127.0.0.1")),
        port=int(flags.as_dict().get("port", 30000)),
        gpus=gpus,
        study=study.study_name,
        trial=best.number,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / "deploy-best.sh"
    script.write_text(_header(study, best) + launcher.deploy_script(spec))
    os.chmod(script, 0o755)
    record = out_dir / "best.json"
    base = baseline_trial(study)
    record.write_text(
        json.dumps(
            {
                "study": study.study_name,
                "trial": best.number,
                "metrics": dict(zip(study.user_attrs.get("metrics", []), best.values, strict=False)),
                "argv": best.user_attrs.get("argv"),
                "flags": best.user_attrs.get("flags"),
                "params": best.params,
                "levels": best.user_attrs.get("levels", []),
                "baseline": {
                    "trial": base.number,
                    "metrics": dict(zip(study.user_attrs.get("metrics", []), base.values, strict=False)),
                    "levels": base.user_attrs.get("levels", []),
                }
                if base
                else None,
                "references": {
                    name: {
                        "trial": t.number,
                        "feasible": t.user_attrs.get("feasible", False),
                        "metrics": dict(zip(study.user_attrs.get("metrics", []), t.values, strict=False)),
                        "flags": t.user_attrs.get("flags"),
                    }
                    for name, t in reference_trials(study).items()
                },
                "confirmation": study.user_attrs.get("confirmation"),
                "launcher": best.user_attrs.get("launcher"),
                "gpu_peak_used_mib": best.user_attrs.get("gpu_peak_used_mib"),
                **(
                    {
                        "replayed": True,
                        "modelled": bool(best.user_attrs.get("modelled")),
                        "replay_of": best.user_attrs.get("replay_of"),
                        "replay_surface": best.user_attrs.get("replay_surface"),
                    }
                    if best.user_attrs.get("replayed")
                    else {}
                ),
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )
    return Exported(best, script, record)


def _header(study: optuna.Study, best: FrozenTrial) -> str:
    a = best.user_attrs
    run = study.user_attrs.get("run_config", {})
    wl = run.get("workload", {})
    launcher = a.get("launcher", {})
    lines = [
        "#!/usr/bin/env bash",
        f"# deploy-best.sh: the best feasible config of study {study.study_name!r} (trial {best.number}),",
        f"# exported by sglang-tuner on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"# Launcher: {', '.join(f'{k}={v}' for k, v in launcher.items())}",
    ]
    if a.get("replayed"):
        from tuner.trial.surface import replay_mark

        lines += [
            "# REPLAY: the numbers below are replayed from recorded trials, never measured by this study:",
            f"#   {replay_mark(a)} of {a.get('replay_surface')} ({launcher.get('recorded')}),",
            f"#   {launcher.get('gpu')}, SGLang {launcher.get('sglang_version')}"
            + ("; no recorded trial had these flags: modelled from the nearest ones" if a.get("modelled") else "")
            + ". Measure it before relying on it: tune bench on the server this script starts.",
        ]
    if a.get("server_version"):
        lines.append(f"# SGLang version (from /get_server_info): {a['server_version']}")
    peak = f", GPU peak {a['gpu_peak_used_mib']:.0f} MiB" if "gpu_peak_used_mib" in a else ""
    lines.append(
        f"# {'Replayed' if a.get('replayed') else 'Measured'} with {_workload_words(a.get('workload'), wl)}, "
        f"startup {a.get('startup_s', 0):.1f} s{peak}:"
    )
    base = baseline_trial(study)
    is_base = base is not None and base.number == best.number
    rated = any(lv.get("request_rate") is not None for lv in a.get("levels", []))
    key = "request_rate" if rated else "concurrency"
    base_levels = {lv[key]: lv for lv in base.user_attrs.get("levels", [])} if base else {}
    for lv in a.get("levels", []):
        if rated:
            line = (
                f"#   {lv['request_rate']:6.2f} req/s: goodput {lv['request_goodput']:7.2f} req/s, "
                f"p99 TTFT {lv['p99_ttft_ms']:8.1f} ms, p99 TPOT {lv['p99_tpot_ms']:7.2f} ms, "
                f"{'SLO held' if lv.get('slo_pass') else 'SLO broken'}"
            )
        else:
            line = (
                f"#   concurrency {lv['concurrency']:>3}: {lv['output_throughput']:9.1f} output tok/s, "
                f"median TTFT {lv['median_ttft_ms']:8.1f} ms, median TPOT {lv['median_tpot_ms']:7.2f} ms"
            )
        ref = base_levels.get(lv[key])
        if not rated and ref and ref["output_throughput"] and not is_base:
            line += f" ({100 * (lv['output_throughput'] / ref['output_throughput'] - 1):+.1f}% vs SGLang defaults)"
        lines.append(line)
    if rated and a.get("max_rate") is not None:
        slo = ", ".join(f"{k} <= {v:g}" for k, v in (a.get("workload") or {}).get("slo", {}).items())
        line = (
            f"# Highest rate holding the SLO ({slo}): {a['max_rate']:g} req/s, goodput {a.get('goodput', 0):.2f} req/s"
        )
        if base is not None and not is_base and base.user_attrs.get("goodput"):
            line += f" ({100 * (a.get('goodput', 0) / base.user_attrs['goodput'] - 1):+.1f}% vs SGLang defaults)"
        lines.append(line)
    confirmed = study.user_attrs.get("confirmations", {}).get(str(best.number))
    if confirmed and confirmed.get("ci95") is not None:
        lines.append(
            f"# Confirmed: {confirmed['metric']} {confirmed['mean']:.1f} ± {confirmed['ci95']:.1f} "
            f"(mean ± 95% CI over {len(confirmed['runs'])} re-runs)"
        )
    lines += [
        f"# {c['statement']}"
        for c in study.user_attrs.get("confirmation", {}).get("comparisons", [])
        if c["a"].endswith(f"(trial {best.number})")
    ]
    lines += ["set -euo pipefail", ""]
    return "\n".join(lines) + "\n"


def _workload_words(described: dict | None, configured: dict) -> str:
    """The trial's own workload record in words; studies older than that record name the run file's lengths."""
    d = described or {}
    arrival = f", {d['arrival']} arrivals" if d.get("load_search") else ""
    if d.get("dataset") == "shared-prefix":
        return (
            f"shared-prefix chat ({d['groups']} groups x {d['prompts_per_group']}, system prompt "
            f"{d['system_prompt_len']}, question {d['question_len']}, output {d['output_len']} tokens{arrival})"
        )
    if d.get("dataset") == "sharegpt":
        return f"ShareGPT prompts from {d['path']}{arrival}"
    if d.get("dataset") == "random":
        ratio = f", lengths x[{d['range_ratio']:g}, 1]" if d.get("range_ratio", 1.0) != 1.0 else ""
        return f"ISL {d['input_len']} / OSL {d['output_len']}{ratio}{arrival}"
    return f"ISL {configured.get('input_len')} / OSL {configured.get('output_len')}"
