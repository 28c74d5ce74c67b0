"""The typed schema behind run files and search spaces: one pydantic base, and its errors as one line each.

Every model here refuses keys it does not know (a typo is an error, with the key it probably meant) and values of
the wrong type (YAML's ``yes`` is not a trial count, ``1.5`` is not a port). A pydantic error becomes
``file:line: key.path[i]: what is wrong``. ``python -m tuner.config.jsonschemas`` writes the JSON Schemas in schemas/
that editors use to complete and check these files as they are typed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from tuner.config.yamlfile import Loc, YamlDocument
from tuner.errors import TunerError

M = typing.TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """No unknown keys, no silent conversions (``"3"`` is not 3, ``true`` is not 1), only finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def strict_dataclass(cls: type) -> Any:
    """A field type for one of our frozen dataclasses (workload.SharedPrefix, ...): its keys and types checked like
    any model's, the value the dataclass itself."""
    hints = typing.get_type_hints(cls)
    # Any: create_model's **field_definitions share their type with its own keywords (__config__, __base__, ...)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else ...)
        for f in dataclasses.fields(cls)
    }
    model = create_model(cls.__name__, __base__=Strict, __doc__=cls.__doc__, **fields)
    return Annotated[model, AfterValidator(lambda m: cls(**dict(m))), PlainSerializer(dataclasses.asdict)]


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number_type", "expected a number, got {value}", {"value": _show(value)})
    if not math.isfinite(value):
        raise PydanticCustomError("finite_number", "expected a finite number, got {value}", {"value": _show(value)})
    return value


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _number(value)
    raise PydanticCustomError(
        "scalar_type", "expected one value (text, a number or true/false), got {value}", {"value": _show(value)}
    )


# An int stays an int (a range of whole numbers), a float a float; neither is ever a bool.
Number = Annotated[int | float, PlainValidator(_number), WithJsonSchema({"type": "number"})]
Scalar = Annotated[
    str | int | float | bool, PlainValidator(_scalar), WithJsonSchema({"type": ["string", "number", "boolean"]})
]


def _show(value: Any) -> str:
    text = (
        repr(value)
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if isinstance(value, (list, dict))
        else str(value).lower()
        if isinstance(value, bool) or value is None
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def loc_text(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the mapping at ``loc`` accepts (for "did you mean")."""
    hint: Any = model
    for part in loc:
        hint = _unwrap(hint)
        if (
            isinstance(hint, type)
            and issubclass(hint, BaseModel)
            and isinstance(part, str)
            and part in hint.model_fields
        ):
            hint = hint.model_fields[part].annotation
        elif typing.get_origin(hint) in (list, dict):
            hint = typing.get_args(hint)[-1]
        else:
            return []
    hint = _unwrap(hint)
    return list(hint.model_fields) if isinstance(hint, type) and issubclass(hint, BaseModel) else []


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return _unwrap(inner[0])
    return hint


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, 1, 0.6)
    if close:
        return f"did you mean {close[0]}?"
    if len(options) <= 8:
        return f"expected one of {', '.join(options)}"
    return f"e.g. {', '.join(options[:4])}"


def describe(error: ErrorDetails, model: type[BaseModel]) -> tuple[Loc, str]:
    """One pydantic error as (where, what), in the words of this project's other messages."""
    loc = tuple(p for p in error["loc"] if p != "[key]")
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    shown = _show(value)
    if kind == "extra_forbidden":
        return loc, f"unknown key ({_did_you_mean(str(loc[-1]), _fields_at(model, loc[:-1]))})"
    if kind == "literal_error":
        options = [o.strip().strip("'") for o in ctx.get("expected", "").replace(" or ", ", ").split(", ")]
        return loc, f"{shown} is not one of the choices ({_did_you_mean(str(value), options)})"
    messages = {
        "missing": "required",
        "int_type": f"expected a whole number, got {shown}",
        "int_parsing": f"expected a whole number, got {shown}",
        "int_from_float": f"expected a whole number, got {shown}",
        "float_type": f"expected a number, got {shown}",
        "float_parsing": f"expected a number, got {shown}",
        "finite_number": f"expected a finite number, got {shown}",
        "bool_type": f"expected true or false, got {shown}",
        "bool_parsing": f"expected true or false, got {shown}",
        "string_type": f"expected text, got {shown}",
        "list_type": f"expected a list, got {shown}",
        "dict_type": f"expected a mapping, got {shown}",
        "model_type": f"expected a mapping, got {shown}",
        "model_attributes_type": f"expected a mapping, got {shown}",
        "greater_than_equal": f"must be >= {_show(ctx.get('ge'))}, got {shown}",
        "greater_than": f"must be > {_show(ctx.get('gt'))}, got {shown}",
        "less_than_equal": f"must be <= {_show(ctx.get('le'))}, got {shown}",
        "less_than": f"must be < {_show(ctx.get('lt'))}, got {shown}",
        "too_short": "must not be empty"
        if ctx.get("min_length") == 1
        else f"needs at least {ctx.get('min_length')}, got {shown}",
        "too_long": f"takes at most {ctx.get('max_length')}, got {shown}",
    }
    if kind in messages:
        return loc, messages[kind]
    if kind == "value_error" and "error" in ctx:
        # A model's own check names the key it is about: "image: the docker launcher needs an image".
        text = str(ctx["error"])
        key, sep, rest = text.partition(": ")
        parts = tuple(int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key))
        if sep and " " not in key and parts and parts[0] in _fields_at(model, loc):
            return (*loc, *parts), rest
        return loc, text
    return loc, error["msg"]


def first_problem(
    exc: ValidationError,
    model: type[BaseModel],
    doc: YamlDocument | None,
    from_file: typing.Callable[[Loc], bool] = lambda loc: True,
) -> str:
    """``file:line: key.path: message`` for the first error; keys set outside the file get no file prefix."""
    loc, message = describe(exc.errors(include_url=False)[0], model)
    where = loc_text(loc)
    if doc is None or not from_file(loc):
        return f"{where}: {message}" if where else message
    line = doc.line(loc)
    prefix = f"{doc.path}:{line}" if line else str(doc.path)
    return f"{prefix}: {where}: {message}" if where else f"{prefix}: {message}"


def validated(
    model: type[M],
    data: Any,
    doc: YamlDocument | None,
    error: type[TunerError],
    from_file: typing.Callable[[Loc], bool] = lambda loc: True,
) -> M:
    """``data`` as ``model``, or ``error`` with the first problem as first_problem words it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(first_problem(exc, model, doc, from_file)) from None
