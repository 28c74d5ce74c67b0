"""Every committed search space and reference holds against the real SGLang 0.5.17 `--help` recorded on the H200:
a flag or value that SGLang would refuse is caught here, not after a GPU launch."""

from __future__ import annotations

import pytest

from conftest import ROOT
from tuner.config.references import BUILTIN
from tuner.config.space import SpaceError, load_space
from tuner.sglang.catalog import FlagCatalog

HELP = ROOT / "benchmarks" / "h200" / "sglang-0.5.17-help.txt"
# seed-rtx5090.yaml is the seed's own: it runs in the seed's Blackwell image, an older SGLang (--disable-flashinfer
# still exists there) whose --help is read from that image at `tune start`, not recorded here.
SPACES = sorted(p for p in (ROOT / "search_spaces").glob("*.yaml") if p.name != "seed-rtx5090.yaml")


@pytest.fixture(scope="module")
def catalog() -> FlagCatalog:
    return FlagCatalog.from_help(HELP.read_text(), source=str(HELP))


@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_space_holds_against_sglang_0_5_17(path, catalog) -> None:
    load_space(path).validate(catalog)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_reference_holds_against_sglang_0_5_17(name, catalog) -> None:
    refused = {k: catalog.check(k, v) for k, v in BUILTIN[name].as_dict().items()}
    assert not {k: why for k, why in refused.items() if why}, refused


def test_a_flag_sglang_does_not_know_is_caught(tmp_path, catalog) -> None:
    space = tmp_path / "s.yaml"
    space.write_text("params:\n  decode-attention-backend: {choices: [fa3, fa9]}\n")
    with pytest.raises(SpaceError, match="fa9"):
        load_space(space).validate(catalog)
