"""The JSON Schemas of the run file and the space file (schemas/*.json), generated from their pydantic models so
that editors can complete and check them; tests/test_schema.py keeps the committed files current."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def json_schemas() -> dict[str, dict]:
    """The files of schemas/, from the models themselves."""
    from tuner.config.run import RunConfig
    from tuner.config.space import SpaceFile

    draft = "https://json-schema.org/draft/2020-12/schema"
    return {
        "run.schema.json": {"$schema": draft, **RunConfig.model_json_schema(), "title": "sglang-tuner run file"},
        "space.schema.json": {"$schema": draft, **SpaceFile.model_json_schema(), "title": "sglang-tuner search space"},
    }


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in json_schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema))
        print(f"wrote {SCHEMA_DIR / name}")
