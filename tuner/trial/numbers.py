"""How a recorded number is written: NaN is a metric its source did not record (an imported surface maps only
some of bench_serving's columns; a statistic with no sample), written "not recorded", never "nan"."""

from __future__ import annotations

import math

NOT_RECORDED = "not recorded"


def recorded(value: object) -> bool:
    """A number that was measured: not None, not NaN."""
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def number(value: float | None, spec: str, unit: str = "") -> str:
    """``value`` formatted by ``spec`` with its unit, or "not recorded"."""
    return f"{value:{spec}}{unit}" if recorded(value) else NOT_RECORDED
