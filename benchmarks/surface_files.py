"""The recorded surfaces the surface benchmarks (sampler_efficiency.py, surface_model.py) run on by default."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def default_surfaces() -> list[Path]:
    """Recorded GPU surfaces (surfaces/), then the stand-in's (benchmarks/surfaces/)."""
    return sorted((ROOT / "surfaces").glob("*.json")) + sorted((ROOT / "benchmarks" / "surfaces").glob("*.json"))
