"""The JSON Schema of the surface file (schemas/surface.schema.json), generated from trial.surface's pydantic
models like the run file's and the space file's (tuner.config.jsonschemas, a layer below, which cannot see the
surface); tests/test_schema.py keeps the committed file current. ``python -m tuner.trial.schema`` rewrites it."""

from __future__ import annotations

from tuner.config.jsonschemas import SCHEMA_DIR, render
from tuner.trial.surface import Surface

NAME = "surface.schema.json"


def surface_schema() -> dict:
    schema = Surface.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "sglang-tuner surface"}


if __name__ == "__main__":
    SCHEMA_DIR.mkdir(exist_ok=True)
    (SCHEMA_DIR / NAME).write_text(render(surface_schema()))
    print(f"wrote {SCHEMA_DIR / NAME}")
