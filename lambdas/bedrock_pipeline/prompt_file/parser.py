"""Parse a prompt file line by line into work items: one per (record, model).

The format, precedence and error rules are described in the package docstring
(``bedrock_pipeline.prompt_file``); the shapes a line is validated against are in ``schema``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ValidationError

from bedrock_pipeline.media import IMAGE_SIGNATURES, decode_base64, is_image_of, media_sources
from bedrock_pipeline.prompt_file.anthropic import from_anthropic, is_anthropic
from bedrock_pipeline.prompt_file.schema import (
    CONVERSE_BODY_KEYS,
    EXCERPT_CHARS,
    MAX_DOCUMENT_BYTES,
    MAX_IMAGE_BYTES,
    MAX_NESTING_DEPTH,
    MAX_RECORD_ID_CHARS,
    BedrockRecord,
    ConverseBody,
    InferenceSettings,
    JobDefaults,
    JobHeader,
    Limits,
    LineError,
    LineRejected,
    ParsedPromptFile,
    SimpleRecord,
    WorkItem,
    describe,
    first_set,
    validate,
)
from bedrock_pipeline.reasoning import ReasoningRejected, thinking_budget, with_reasoning
from bedrock_pipeline.run_names import RESERVED_TAG_PREFIXES

_BOM = b"\xef\xbb\xbf"


def parse_prompt_file(
    data: bytes,
    *,
    defaults: JobDefaults | None = None,
    default_models: Sequence[str] = (),
    limits: Limits = Limits(),  # noqa: B008 (a frozen dataclass, safe as a default; ruff cannot see that across modules)
) -> ParsedPromptFile:
    """Parse a whole prompt file. Never raises for bad content: see the package docstring."""
    job = defaults or JobDefaults()
    if len(data) > limits.max_file_bytes:
        return ParsedPromptFile.rejection(
            f"file is {len(data):,} bytes; the limit is {limits.max_file_bytes:,}", job
        )
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = [(n, raw.removesuffix(b"\r")) for n, raw in enumerate(data.split(b"\n"), start=1)]
    lines = [(n, raw) for n, raw in lines if raw.strip()]

    header_line: int | None = None
    header_warning: str | None = None
    if lines and _looks_like_header(lines[0][1]):
        header_line, raw = lines.pop(0)
        try:
            header = JobHeader.model_validate_json(raw)
        except ValidationError as exc:
            return ParsedPromptFile(
                job=job,
                rejected=f"invalid job header on line {header_line}: {describe(exc)}",
                header_line_number=header_line,
            )
        job = job.merged(header.job)
        header_warning = _reserved_tags_warning(header.job.tags)

    if len(lines) > limits.max_records:
        return ParsedPromptFile(
            job=job,
            rejected=f"file has {len(lines):,} records; the limit is {limits.max_records:,}",
            header_line_number=header_line,
        )

    models = job.models or tuple(dict.fromkeys(default_models))
    items: list[WorkItem] = []
    errors: list[LineError] = []
    warnings: list[LineError] = []
    if header_line is not None and header_warning:
        warnings.append(LineError(line_number=header_line, reason=header_warning))
    first_seen: dict[str, int] = {}
    for line_number, raw in lines:
        try:
            record_items, warning = _parse_line(line_number, raw, job, models, limits)
            record_id = record_items[0].record_id
            if record_id in first_seen:
                raise LineRejected(
                    f"duplicate record id {record_id!r} (first on line {first_seen[record_id]})"
                )
            first_seen[record_id] = line_number
            items.extend(record_items)
            if warning:
                warnings.append(LineError(line_number=line_number, reason=warning, excerpt=_excerpt(raw)))
        except LineRejected as exc:
            errors.append(LineError(line_number=line_number, reason=str(exc), excerpt=_excerpt(raw)))
    return ParsedPromptFile(
        job=job, items=items, errors=errors, warnings=warnings, header_line_number=header_line
    )


def _looks_like_header(raw: bytes) -> bool:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and "job" in value and "prompt" not in value and "modelInput" not in value


def _parse_line(
    line_number: int, raw: bytes, job: JobDefaults, models: tuple[str, ...], limits: Limits
) -> tuple[list[WorkItem], str | None]:
    """The line's items, and a warning when it runs not quite as written."""
    if len(raw) > limits.max_line_bytes:
        raise LineRejected(f"line is {len(raw):,} bytes; the limit is {limits.max_line_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineRejected(f"not valid UTF-8 (byte {exc.start})") from None
    depth = _nesting_depth(raw)
    if depth > MAX_NESTING_DEPTH:
        raise LineRejected(
            f"the record is nested too deeply ({depth:,} levels of arrays/objects; the limit is "
            f"{MAX_NESTING_DEPTH})"
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise LineRejected(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LineRejected(f"a record must be a JSON object, not {_json_type(value)}")
    if "job" in value and "prompt" not in value and "modelInput" not in value:
        raise LineRejected("a job header is only allowed on the first line")
    if "prompt" in value and "modelInput" in value:
        raise LineRejected(
            'a record has either "prompt" (simple shape) or "modelInput" (Bedrock shape), not both'
        )

    reasoning = job.reasoning
    if "prompt" in value:
        record = validate(SimpleRecord, value)
        record_id, request, stream, tags = _simple_request(record, job)
        reasoning = first_set(record.reasoning, job.reasoning)
        targets = (record.model,) if record.model else models
        shape: Literal["bedrock-batch", "simple"] = "simple"
        warning = _reserved_tags_warning(record.tags)
    elif "modelInput" in value:
        bedrock = validate(BedrockRecord, value)
        record_id = _record_id(bedrock.recordId)
        request = _converse_request(bedrock.modelInput, job.inference)
        stream = first_set(bedrock.stream, job.stream, False)
        tags = {**job.tags, **bedrock.tags}
        targets = models
        shape = "bedrock-batch"
        warning = _reserved_tags_warning(bedrock.tags)
    else:
        raise LineRejected(
            'a record needs "prompt" (simple shape) or "modelInput" (Bedrock batch-inference shape)'
        )
    if record_id is None:
        record_id = f"line-{line_number}"
    if not targets:
        raise LineRejected(
            'no model to run: set "model" on the record, "models" in the job header, or default models'
        )
    # A Bedrock-shape record that sets its own thinking keeps it; otherwise the setting is mapped per
    # model (one family's field is not another's), so each model gets its own request.
    requests = {m: request for m in targets}
    if reasoning is not None and not (shape == "bedrock-batch" and thinking_budget(request) is not None):
        try:
            requests = {m: with_reasoning(request, m, reasoning.budget_tokens) for m in targets}
        except ReasoningRejected as exc:
            raise LineRejected(str(exc)) from None
    # Already validated above, so construct without re-validating (50,000 lines x models adds up).
    first = WorkItem.model_construct(
        record_id=record_id,
        line_number=line_number,
        model_id=targets[0],
        request=requests[targets[0]],
        stream=bool(stream),
        tags=tags,
        shape=shape,
    )
    # Items differ only in model_id, so one serialization bounds them all.
    longest = max(len(json.dumps(m)) for m in targets) - len(json.dumps(targets[0]))
    size = len(first.model_dump_json().encode()) + longest
    if size > limits.max_item_bytes:
        raise LineRejected(f"work item is {size:,} bytes as JSON; the limit is {limits.max_item_bytes:,}")
    # Each item gets its own request and tags: a consumer mutating one must not change another.
    items = [first]
    for model_id in targets[1:]:
        items.append(
            first.model_copy(
                update={
                    "model_id": model_id,
                    "request": json.loads(json.dumps(requests[model_id])),
                    "tags": dict(tags),
                }
            )
        )
    return items, warning


def _reserved_tags_warning(tags: Mapping[str, str]) -> str | None:
    """Reserved tags are dropped when the run is recorded (run_names.user_tags): say which, up front."""
    reserved = sorted(k for k in tags if k.startswith(RESERVED_TAG_PREFIXES))
    if not reserved:
        return None
    prefixes = " and ".join(f"{p}*" for p in RESERVED_TAG_PREFIXES)
    return f"tags {reserved} are reserved ({prefixes}) and will not be set; the record still runs"


def _simple_request(
    record: SimpleRecord, job: JobDefaults
) -> tuple[str | None, dict[str, Any], bool | None, dict[str, str]]:
    inference = job.inference.merged(
        InferenceSettings(max_tokens=record.max_tokens, temperature=record.temperature, top_p=record.top_p)
    )
    request: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": record.prompt}]}]}
    if record.system:
        request["system"] = [{"text": record.system}]
    if config := inference.to_converse():
        request["inferenceConfig"] = config
    if record.tools:
        tool_config: dict[str, Any] = {
            "tools": [{"toolSpec": spec.model_dump(exclude_none=True)} for spec in record.tools]
        }
        if record.tool_choice is not None:
            tool_config["toolChoice"] = _tool_choice(record.tool_choice, {t.name for t in record.tools})
        request["toolConfig"] = tool_config
    elif record.tool_choice is not None:
        raise LineRejected('"tool_choice" needs "tools"')
    record_id = _record_id(record.id)
    return record_id, request, first_set(record.stream, job.stream, False), {**job.tags, **record.tags}


def _tool_choice(choice: str, names: set[str]) -> dict[str, Any]:
    if choice in ("auto", "any"):
        return {choice: {}}
    if choice not in names:
        raise LineRejected(
            f'"tool_choice" {choice!r} is not "auto", "any" or one of the tools: {sorted(names)}'
        )
    return {"tool": {"name": choice}}


def _record_id(value: str | int | None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text.strip() or len(text) > MAX_RECORD_ID_CHARS:
        raise LineRejected(f"record id must be 1-{MAX_RECORD_ID_CHARS} characters, not blank")
    return text


# --- modelInput: Converse (as is) or Anthropic Messages (converted) --------------------------------
def _converse_request(model_input: dict[str, Any], inference: InferenceSettings) -> dict[str, Any]:
    request = from_anthropic(model_input) if is_anthropic(model_input) else dict(model_input)
    unknown = sorted(set(request) - CONVERSE_BODY_KEYS)
    if unknown:
        hint = " (the model comes from the job or defaults)" if "modelId" in unknown else ""
        raise LineRejected(f"modelInput has keys a Converse request does not accept: {unknown}{hint}")
    validate(ConverseBody, request, prefix="modelInput")
    _check_media(request)
    # Job inference settings fill only what the record leaves unset.
    defaults = inference.to_converse()
    if defaults:
        request["inferenceConfig"] = {**defaults, **request.get("inferenceConfig", {})}
    return request


def _check_media(request: dict[str, Any]) -> None:
    """Media ``source.bytes`` must be base64 of what Bedrock accepts (media.py says why base64 is kept
    in the item and decoded only by the Bedrock adapter); a line error here costs no model call."""
    sizes = {"image": MAX_IMAGE_BYTES, "document": MAX_DOCUMENT_BYTES}
    for media in media_sources(request):
        if "bytes" not in media.source:
            continue  # s3Location, or a document's text/content: Bedrock checks those
        name = f"{media.where}: {media.kind} bytes"
        value = media.source["bytes"]
        if not isinstance(value, str):
            raise LineRejected(f"{name} must be a base64 string, not {_json_type(value)}")
        try:
            data = decode_base64(value)
        except ValueError:
            raise LineRejected(f"{name} are not valid base64") from None
        if not data:
            raise LineRejected(f"{name} are empty")  # blob members have a minimum length of 1
        limit = sizes.get(media.kind)
        if limit is not None and len(data) > limit:
            raise LineRejected(f"{name} are {len(data):,} bytes; Bedrock's limit is {limit:,}")
        image_format = media.block.get("format")
        if media.kind == "image" and isinstance(image_format, str):
            if image_format not in IMAGE_SIGNATURES:
                raise LineRejected(
                    f"{media.where}: image format {image_format!r} is not one of {sorted(IMAGE_SIGNATURES)}"
                )
            if not is_image_of(image_format, data):
                hint = " (base64 of base64? decode it once)" if _is_base64_text(data) else ""
                raise LineRejected(f"{name} are not a {image_format} image{hint}")


def _is_base64_text(data: bytes) -> bool:
    try:
        decode_base64(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


# --- helpers -------------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def _nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest (brackets inside strings do not count); 0 without a scan when
    there are too few brackets to pass the limit (almost every line)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING_DEPTH:  # cannot be deeper: no scan
        return 0
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
