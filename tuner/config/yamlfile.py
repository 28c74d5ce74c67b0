"""Reading the YAML files people write (run files, search spaces): strictly, and remembering where each key is.

PyYAML keeps the last of two equal keys in a mapping without a word; a run file with ``trials: 40`` twice, or a
space with the same flag twice, would then silently tune something else than what its author reads. Here a
repeated key is an error naming both lines, and every key's line is kept so that errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError

Loc = tuple[str | int, ...]


class YamlFileError(TunerError, ValueError):
    """A file that is not YAML we can read; the message starts with ``file:line``."""


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _DuplicateKey(
                        None, None, f"{key!r} appears twice (first on line {first[key]})", key_node.start_mark
                    )
                first[key] = line
            except TypeError:  # an unhashable key: SafeLoader says so below
                pass
        return super().construct_mapping(node, deep)


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)  # key path (as pydantic reports it) -> line

    def line(self, loc: Loc) -> int | None:
        """The line of the deepest key of ``loc`` that is in the file."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def load_yaml(path: Path) -> YamlDocument:
    text = path.read_text()
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        if isinstance(exc, _DuplicateKey):
            raise YamlFileError(f"{path}{where}: {exc.problem}") from None
        raise YamlFileError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return YamlDocument(path, data, lines)


def load_mapping(
    path: Path,
    error: type[TunerError],
    what: str,
    shape: str,
    *,
    directory_hint: str,
    missing_hint: str = "",
    example: str = "e.g. run.yaml",
    empty_is_mapping: bool = False,
) -> YamlDocument:
    """A file people write that must hold a mapping (``what``: "run file", ...); each problem is one line that names
    the file, raised as ``error``; ``shape`` says what the mapping holds."""
    if path.is_dir():
        raise error(f"{path}: is a directory, not a {what} ({directory_hint})")
    if not path.is_file():
        raise error(f"{path}: no such {what}" + (f" ({missing_hint})" if missing_hint else ""))
    if _is_binary(path):
        raise error(f"{path}: a binary file, not a {what}; give the YAML {what} ({example})")
    try:
        doc = load_yaml(path)
    except YamlFileError as exc:
        raise error(str(exc)) from None
    if doc.data is None and empty_is_mapping:
        return replace(doc, data={})
    if not isinstance(doc.data, dict):
        raise error(f"{path}: {shape}")
    return doc


def _is_binary(path: Path) -> bool:
    """A file that is no text (a SQLite database, an executable): a NUL byte, or bytes that are not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError:
        return False  # load_yaml says what stands in the way
    if b"\0" in data[:65536]:
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                here = (*loc, key.value)
                out[here] = key.start_mark.line + 1
                _lines(value, here, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*loc, i)] = item.start_mark.line + 1
            _lines(item, (*loc, i), out)
