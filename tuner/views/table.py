"""The trial table for a narrow terminal or a pipe: short columns on one line per trial, its flags on the lines below
(wrapped between flags, never inside a number or a flag name)."""

from __future__ import annotations

import re

import pandas as pd

# Dropped first when a row does not fit, in this order.
_OPTIONAL = ("max_running", "gpu_peak_mib", "startup_s", "kv_tokens", "class")
_INDENT = "      "
# Long texts printed under a trial's row rather than as columns: its startup phases, then its flags.
_DETAILS = ("startup", "flags")


def _text(value, column: str) -> str:
    from tuner.views.report import _cell

    return _cell(value, column)


def wrap_flags(flags: str, width: int, indent: str = _INDENT) -> list[str]:
    """``flags`` over lines of at most ``width`` characters, broken only between ``--flag value`` pairs."""
    words = [w for w in re.split(r" (?=--)", flags) if w] or [flags]
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(indent) + len(line) + 1 + len(word) > width:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(indent + line)
    return lines


def compact_lines(frame: pd.DataFrame, width: int) -> list[str]:
    """The trial table in ``width`` columns: columns with no value are left out, then the least useful ones until a
    row fits; each trial's startup phases and flags follow its row, indented."""
    columns = [
        c
        for c in frame.columns
        if c not in _DETAILS and not (frame[c].isna().all() or (frame[c].astype(str) == "None").all())
    ]
    cells = {c: [_text(v, str(c)) for v in frame[c]] for c in columns}

    def widths(cols: list) -> dict:
        return {c: max(len(str(c)), *(len(s) for s in cells[c])) for c in cols}

    for drop in _OPTIONAL:
        if sum(widths(columns).values()) + 2 * (len(columns) - 1) <= width:
            break
        if drop in columns:
            columns.remove(drop)
    w = widths(columns)

    def numeric(c) -> bool:
        return pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool

    def line(values: dict) -> str:
        return "  ".join(values[c].rjust(w[c]) if numeric(c) else values[c].ljust(w[c]) for c in columns).rstrip()

    out = [line({c: str(c) for c in columns})]
    for i in range(len(frame)):
        out.append(line({c: cells[c][i] for c in columns}))
        if "startup" in frame.columns and isinstance(frame["startup"].iloc[i], str):
            out += wrap_flags(f"startup: {frame['startup'].iloc[i]}", width)
        if "flags" in frame.columns and frame["flags"].iloc[i]:
            out += wrap_flags(str(frame["flags"].iloc[i]), width)
    return out
