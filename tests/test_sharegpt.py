"""ShareGPT datasets are read and checked when the run file is loaded, before any server is launched; OpenAI chat
records (``messages``) are read as well as ShareGPT's (``conversations``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_run
from tuner.bench.workload import load_sharegpt
from tuner.config.run import ConfigError, load_config

OPENAI = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "Seven is prime."},
        ]
    },
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "no reply yet"}]},
]


def test_openai_messages_are_read_as_json_and_as_jsonl(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(OPENAI))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in OPENAI) + "\n")
    for name in ("a.json", "a.jsonl"):
        assert load_sharegpt(tmp_path / name) == [("Name a prime.", 3), ("Hi", 1)]


def test_sharegpt_conversations_still_read(tmp_path) -> None:
    rec = {"conversations": [{"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Because it is."}]}
    (tmp_path / "s.json").write_text(json.dumps([rec]))
    assert load_sharegpt(tmp_path / "s.json") == [("Why?", 3)]


@pytest.mark.parametrize("text", ["plain words\n", "[]", '[{"messages": [{"role": "user", "content": "x"}]}]'])
def test_a_dataset_with_nothing_to_send_is_refused_at_config_load(tmp_path, text) -> None:
    (tmp_path / "chats.json").write_text(text)
    run = write_run(tmp_path, workload={"dataset": "sharegpt", "path": "chats.json"})
    with pytest.raises(ConfigError, match=r"^workload.path: .*chats.json") as err:
        load_config(run)
    assert "\n" not in str(err.value)


def test_an_openai_dataset_passes_config_load(tmp_path) -> None:
    (tmp_path / "chats.jsonl").write_text("\n".join(json.dumps(r) for r in OPENAI))
    run = write_run(tmp_path, workload={"dataset": "sharegpt", "path": "chats.jsonl"})
    assert load_config(run).workload.sharegpt_path.endswith("chats.jsonl")
