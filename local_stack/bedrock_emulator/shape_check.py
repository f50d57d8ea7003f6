"""Requests checked against the service model botocore ships, as Bedrock's front end checks them.

Every member of an operation's input (JSON body members; the URI's are the router's) is checked for
what the model declares: required members, JSON types, enums, string and list lengths, numeric ranges,
string patterns, and unions with exactly one member set. Failures are one ValidationException in the
AWS (Coral) framework's wording, the wording Bedrock answers with for the constraint violations it
shares with every AWS JSON service, e.g.::

    1 validation error detected: Value '9' at 'inferenceConfig.temperature' failed to satisfy
    constraint: Member must have value less than or equal to 1

(verified on Bedrock for this very case: stdapi-ai/stdapi.ai#224 quotes "Value '1.5' at
'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal
to 1"; ``Value '<v>' at '<path>' failed to satisfy constraint: Member must ...``, errors joined by "; ",
list elements as ``messages.1.member.content``: 1-based, as in Bedrock's own image-format error).
Wrong JSON types and unions with several members cannot come from botocore (it validates both before
sending); no Bedrock wording is published for them, so they are said in the same framework's words.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape

from local_stack.bedrock_emulator.errors import BedrockError

MAX_REPORTED = 10  # Coral reports every violation; a bound keeps a pathological request's answer short
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
    "string": (str,),
    "blob": (str,),  # base64 on the JSON wire
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
}


@functools.cache
def operation(service: str, name: str) -> OperationModel:
    """An operation of one of botocore's bundled service models (``bedrock-runtime``, ``bedrock``)."""
    return botocore.session.get_session().get_service_model(service).operation_model(name)


def check_request(service: str, operation_name: str, body: dict[str, Any]) -> None:
    """Raise ValidationException listing what ``body`` violates of the operation's input shape."""
    shape = operation(service, operation_name).input_shape
    if shape is None:
        return
    errors: list[str] = []
    for message in _structure(shape, body, "", top=True):
        errors.append(message)
        if len(errors) == MAX_REPORTED:
            break
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: "
        raise BedrockError("ValidationException", count + "; ".join(errors))


def _violation(value: Any, path: str, constraint: str) -> str:
    shown = "null" if value is None else f"'{_short(value)}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: Member must {constraint}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _structure(shape: Shape, value: dict[str, Any], path: str, *, top: bool = False) -> Iterator[str]:
    members = shape.members  # type: ignore[attr-defined]
    for name in shape.required_members:  # type: ignore[attr-defined]
        member = members[name]
        if top and member.serialization.get("location"):
            continue  # a URI label or header: the router's
        if value.get(name) is None:
            yield _violation(None, _join(path, name), "not be null")
    if shape.metadata.get("union"):
        set_members = [name for name in members if value.get(name) is not None]
        if len(set_members) != 1:
            yield _violation(sorted(set_members), path or shape.name, "have exactly one member set (a union)")
    for name, item in value.items():
        member = members.get(name)
        if member is None or item is None:
            continue  # unknown members are ignored, as AWS JSON services do
        yield from _value(member, item, _join(path, name))


def _value(shape: Shape, value: Any, path: str) -> Iterator[str]:
    if shape.type_name == "structure" and shape.metadata.get("document"):
        return  # a JSON document: any value
    expected = _JSON_TYPES.get(shape.type_name)
    if expected is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)
    ):
        yield _violation(value, path, f"be of type {shape.type_name}")
        return
    metadata = shape.metadata
    if "enum" in metadata and value not in metadata["enum"]:
        yield _violation(value, path, f"satisfy enum value set: [{', '.join(metadata['enum'])}]")
    if shape.type_name in ("string", "blob", "list", "map"):
        length = len(value)
        if "min" in metadata and length < metadata["min"]:
            yield _violation(value, path, f"have length greater than or equal to {metadata['min']}")
        if "max" in metadata and length > metadata["max"]:
            yield _violation(value, path, f"have length less than or equal to {metadata['max']}")
    elif shape.type_name in ("integer", "long", "float", "double"):
        if "min" in metadata and value < metadata["min"]:
            yield _violation(value, path, f"have value greater than or equal to {metadata['min']}")
        if "max" in metadata and value > metadata["max"]:
            yield _violation(value, path, f"have value less than or equal to {metadata['max']}")
    if shape.type_name == "string" and "pattern" in metadata:
        pattern = _pattern(metadata["pattern"])
        if pattern is not None and not pattern.fullmatch(value):
            yield _violation(value, path, f"satisfy regular expression pattern: {metadata['pattern']}")
    if shape.type_name == "structure":
        yield from _structure(shape, value, path)
    elif shape.type_name == "list":
        for index, item in enumerate(value, start=1):
            if item is not None:
                yield from _value(shape.member, item, f"{path}.{index}.member")  # type: ignore[attr-defined]
    elif shape.type_name == "map":
        for key, item in value.items():
            yield from _value(shape.key, key, f"{path}.{key}.key")  # type: ignore[attr-defined]
            if item is not None:
                yield from _value(shape.value, item, f"{path}.{key}.value")  # type: ignore[attr-defined]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct: not checked rather than wrongly refused
        return None
