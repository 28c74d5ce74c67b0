"""Flags that change the model's answers (KV-cache dtype, quantization) enter a space only by an explicit opt-in."""

from __future__ import annotations

import pytest
import yaml

from tuner.config.space import SpaceError, load_space


def _space(tmp_path, **doc):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"chunked-prefill-size": {"choices": [2048, 4096]}}, **doc}))
    return path


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"fixed": {"kv-cache-dtype": "fp8_e4m3"}}, "fixed.kv-cache-dtype"),
        (
            {"params": {"quantization": {"choices": ["fp8", "awq"]}, "chunked-prefill-size": {"choices": [2048]}}},
            "params.quantization",
        ),
    ],
)
def test_a_numerics_flag_without_the_opt_in_is_refused_in_one_line(tmp_path, doc, where) -> None:
    with pytest.raises(SpaceError) as err:
        load_space(_space(tmp_path, **doc))
    message = str(err.value)
    assert where in message and "changes_numerics: true" in message and "\n" not in message


def test_with_the_opt_in_the_space_names_its_numerics_flags(tmp_path) -> None:
    space = load_space(_space(tmp_path, fixed={"kv-cache-dtype": "fp8_e4m3"}, changes_numerics=True))
    assert space.changes_numerics and space.numerics_flags() == ["kv-cache-dtype"]


def test_a_space_of_speed_flags_needs_no_opt_in(tmp_path) -> None:
    space = load_space(_space(tmp_path, fixed={"attention-backend": "fa3"}))
    assert not space.changes_numerics and space.numerics_flags() == []
