"""The JSON Schemas in schemas/ are what the pydantic models say, and every file in the repository meets them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tuner.config.jsonschemas import SCHEMA_DIR, json_schemas, render
from tuner.config.run import ConfigError, load_config
from tuner.config.space import load_space
from tuner.trial.schema import NAME as SURFACE_SCHEMA
from tuner.trial.schema import surface_schema
from tuner.trial.surface import Surface

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["run.schema.json", "space.schema.json"])
def test_committed_schema_is_current(name):
    committed = (SCHEMA_DIR / name).read_text() if (SCHEMA_DIR / name).exists() else ""
    assert committed == render(json_schemas()[name]), f"schemas/{name} is stale: run python -m tuner.config.jsonschemas"


def test_committed_surface_schema_is_current():
    committed = (SCHEMA_DIR / SURFACE_SCHEMA).read_text() if (SCHEMA_DIR / SURFACE_SCHEMA).exists() else ""
    assert committed == render(surface_schema()), f"schemas/{SURFACE_SCHEMA} is stale: run python -m tuner.trial.schema"


@pytest.mark.parametrize(
    "path", sorted([*ROOT.glob("surfaces/*.json"), *ROOT.glob("benchmarks/surfaces/*.json")]), ids=lambda p: p.name
)
def test_committed_surfaces_meet_the_schema_and_load(path):
    jsonschema.validate(json.loads(path.read_text()), json.loads((SCHEMA_DIR / SURFACE_SCHEMA).read_text()))
    Surface.load(path)


@pytest.mark.parametrize(
    "path", sorted([*ROOT.glob("runs/*.yaml"), *ROOT.glob("benchmarks/*.yaml")]), ids=lambda p: p.name
)
def test_run_files_meet_the_schema_and_load(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/run.schema.json\n")
    jsonschema.validate(yaml.safe_load(text), json.loads((SCHEMA_DIR / "run.schema.json").read_text()))
    load_space(load_config(path).space)  # its space is found beside it, from any folder


@pytest.mark.parametrize("path", sorted(ROOT.glob("search_spaces/*.yaml")), ids=lambda p: p.name)
def test_spaces_meet_the_schema_and_load(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/space.schema.json\n")
    jsonschema.validate(yaml.safe_load(text), json.loads((SCHEMA_DIR / "space.schema.json").read_text()))
    load_space(path)


def test_the_schema_refuses_what_the_loader_refuses(tmp_path):
    """An editor using the JSON Schema flags the same typo that `tune` refuses."""
    run = {"study": "x", "workload": {"concurency": [1]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(run, json.loads((SCHEMA_DIR / "run.schema.json").read_text()))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    with pytest.raises(
        ConfigError, match=r"run.yaml:3: workload.concurency: unknown key \(did you mean concurrency\?\)"
    ):
        load_config(tmp_path / "run.yaml")
