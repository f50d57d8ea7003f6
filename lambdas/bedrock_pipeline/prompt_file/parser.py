"""Parse a prompt file (UTF-8 JSON Lines) into work items: one per (record, model).

Format
------
One JSON object per line. Blank lines are skipped. A UTF-8 BOM and CRLF line endings are accepted.

* **Job header** (optional, first non-blank line only)::

      {"job": {"models": ["..."], "experiment": "...", "budget_usd": 1.5,
               "inference": {"max_tokens": 512, "temperature": 0.1, "top_p": 0.9},
               "stream": false, "tags": {"team": "search"}}}

  It overrides the caller's ``JobDefaults`` field by field (``inference`` sub-field by sub-field,
  ``tags`` key by key). Unknown fields or wrong types in the header reject the whole file, because
  a silently ignored header (models, budget) would run the wrong job.

* **Simple record**: ``{"id", "prompt", "model", "system", "max_tokens", "temperature", "top_p",
  "stream", "tags", "tools", "tool_choice"}``; only ``prompt`` is required. ``tools`` is a list of
  Converse tool specs ``{"name", "description", "inputSchema": {"json": {...}}}`` (a
  ``{"toolSpec": {...}}`` wrapper is accepted too); ``tool_choice`` is ``"auto"``, ``"any"`` or a
  tool name.

* **Bedrock batch-inference record**: ``{"recordId": "...", "modelInput": {...}}`` where
  ``modelInput`` is a Converse request body (``messages``, ``system``, ``inferenceConfig``,
  ``toolConfig``, ``additionalModelRequestFields``, ...) sent unchanged, or an Anthropic Messages
  body (``anthropic_version``, ``max_tokens``, ``system`` string, ``{"type": "text"}`` content
  blocks), which is converted to Converse: text, ``tool_use``/``tool_result`` blocks, tools and
  tool_choice map to their Converse equivalents, ``cache_control`` becomes a ``cachePoint``,
  ``top_k``/``thinking`` go to ``additionalModelRequestFields``; images and documents are not
  converted (use the Converse shape for those).

Precedence: record values > job header > caller defaults. Job ``inference`` settings also fill
keys a Bedrock record's ``inferenceConfig`` leaves unset. Fan-out: a simple record with ``model``
runs on that model only; every other record runs on each job model, or, when the job names none,
on the caller's ``default_models``. A Bedrock record may also carry ``stream`` and ``tags`` next to
``recordId`` and ``modelInput`` (an extension of Bedrock's batch format). Record ids default to
``line-<n>``; a duplicate id in one file is an error.

Errors: a bad line (invalid UTF-8 or JSON, not an object, neither shape, empty prompt, wrong
types, line or work item too large, duplicate id, no model) becomes a ``LineError`` with its
1-based physical line number and never stops the other lines. Unknown top-level fields of a
record are ignored (so files can carry extra data such as expected answers); unknown keys inside
a Converse ``modelInput`` are errors, since Bedrock would reject every call. Tag values must be
strings, numbers or booleans (stored as strings; booleans as ``true``/``false``). Exceeding the
file size or record count limits, or a bad job header, rejects the whole file (``rejected``).

Work items travel as SQS message bodies: ``Limits.max_item_bytes`` (200 KiB by default) keeps one
serialized item well under SQS's classic 256 KiB message size, leaving room for the envelope.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from bedrock_pipeline import settings

EXCERPT_CHARS = 200
MAX_RECORD_ID_CHARS = 250  # MLflow tag keys/values carry it; keep it short and printable
MAX_TAG_KEY_CHARS = 250  # MLflow's tag key limit
MAX_TAG_VALUE_CHARS = 8000  # MLflow's tag value limit
MAX_MODEL_ID_CHARS = 2048  # Bedrock's modelId limit

_BOM = b"\xef\xbb\xbf"
# Top-level members of a Converse request body other than modelId (botocore's bedrock-runtime model;
# a unit test checks this set against it).
CONVERSE_BODY_KEYS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
        "projectIdentifier",
    }
)
_TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Public result types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    max_line_bytes: int = settings.MAX_LINE_BYTES
    max_records: int = settings.MAX_RECORDS_PER_FILE
    max_file_bytes: int = settings.MAX_PROMPT_FILE_BYTES
    max_item_bytes: int = settings.MAX_WORK_ITEM_BYTES


_Probability = Annotated[StrictFloat, Field(ge=0, le=1)]


class InferenceSettings(BaseModel):
    """Inference parameters; None means "not set here" (the next level down decides)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: _Probability | None = None
    top_p: _Probability | None = None

    def merged(self, override: InferenceSettings) -> InferenceSettings:
        return InferenceSettings(
            max_tokens=_first(override.max_tokens, self.max_tokens),
            temperature=_first(override.temperature, self.temperature),
            top_p=_first(override.top_p, self.top_p),
        )

    def to_converse(self) -> dict[str, Any]:
        config = {"maxTokens": self.max_tokens, "temperature": self.temperature, "topP": self.top_p}
        return {k: v for k, v in config.items() if v is not None}


class JobDefaults(BaseModel):
    """Job-level defaults: from the caller (sidecar file, CLI flags) and/or the file's job header."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    models: tuple[Annotated[StrictStr, Field(min_length=1, max_length=MAX_MODEL_ID_CHARS)], ...] = ()
    experiment: Annotated[StrictStr, Field(min_length=1)] | None = None
    budget_usd: Annotated[StrictFloat, Field(ge=0)] | None = None
    inference: InferenceSettings = InferenceSettings()
    stream: StrictBool | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _models_from_list(cls, value: Any) -> Any:
        # JSON has no tuples; accept a list and drop duplicates (same model twice = same calls twice).
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(value))
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _coerce_tags(cls, value: Any) -> Any:
        return coerce_tags(value)

    def merged(self, override: JobDefaults) -> JobDefaults:
        """These defaults with every field ``override`` set explicitly taking precedence."""
        given = override.model_fields_set
        return JobDefaults(
            models=override.models if "models" in given else self.models,
            experiment=override.experiment if "experiment" in given else self.experiment,
            budget_usd=override.budget_usd if "budget_usd" in given else self.budget_usd,
            inference=self.inference.merged(override.inference),
            stream=override.stream if "stream" in given else self.stream,
            tags={**self.tags, **override.tags},
        )


class WorkItem(BaseModel):
    """One Bedrock call to make: a Converse request body (without ``modelId``) and its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    line_number: int
    model_id: str
    request: dict[str, Any]
    stream: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    shape: Literal["bedrock-batch", "simple"]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkItem:
        return cls.model_validate_json(text)


class LineError(BaseModel):
    model_config = ConfigDict(frozen=True)

    line_number: int
    reason: str
    excerpt: str = ""


class ParsedPromptFile(BaseModel):
    """Items in file order (models in job order within a record); errors in line order.

    ``rejected`` is a reason when the file as a whole was refused (then there are no items).
    """

    model_config = ConfigDict(frozen=True)

    job: JobDefaults = JobDefaults()
    items: list[WorkItem] = Field(default_factory=list)
    errors: list[LineError] = Field(default_factory=list)
    rejected: str | None = None
    header_line_number: int | None = None

    @classmethod
    def rejection(cls, reason: str, job: JobDefaults | None = None) -> ParsedPromptFile:
        return cls(job=job or JobDefaults(), rejected=reason)


# ---------------------------------------------------------------------------------------------
# Input shapes (validation only)
# ---------------------------------------------------------------------------------------------
class _JobHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    job: JobDefaults


class _ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[StrictStr, Field(pattern=_TOOL_NAME_PATTERN)]
    description: Annotated[StrictStr, Field(min_length=1)] | None = None
    inputSchema: dict[str, Any]

    @field_validator("inputSchema")
    @classmethod
    def _json_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if set(value) != {"json"} or not isinstance(value["json"], dict):
            raise ValueError('must be {"json": {<JSON schema object>}}')
        return value


class _SimpleRecord(BaseModel):
    # Unknown fields are ignored on purpose: files may carry extra data (expected answers, notes).
    model_config = ConfigDict(extra="ignore", strict=True)

    id: StrictStr | StrictInt | None = None
    prompt: StrictStr
    model: Annotated[StrictStr, Field(min_length=1, max_length=MAX_MODEL_ID_CHARS)] | None = None
    system: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: _Probability | None = None
    top_p: _Probability | None = None
    stream: StrictBool | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    tools: list[_ToolSpec] | None = None
    tool_choice: StrictStr | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _coerce_tags(cls, value: Any) -> Any:
        return coerce_tags(value)

    @field_validator("tools", mode="before")
    @classmethod
    def _unwrap_tool_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v["toolSpec"] if isinstance(v, dict) and set(v) == {"toolSpec"} else v for v in value]
        return value


class _BedrockRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    recordId: StrictStr | StrictInt | None = None
    modelInput: dict[str, Any]
    stream: StrictBool | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _coerce_tags(cls, value: Any) -> Any:
        return coerce_tags(value)


class _ConverseMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: Annotated[list[dict[str, Any]], Field(min_length=1)]


class _ConverseInferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    maxTokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: _Probability | None = None
    topP: _Probability | None = None
    stopSequences: list[StrictStr] | None = None


class _ConverseBody(BaseModel):
    """A light structural check; Bedrock does the full validation (the tests use botocore's)."""

    model_config = ConfigDict(extra="allow", strict=True)

    messages: Annotated[list[_ConverseMessage], Field(min_length=1)]
    system: list[dict[str, Any]] | None = None
    inferenceConfig: _ConverseInferenceConfig | None = None
    toolConfig: dict[str, Any] | None = None
    additionalModelRequestFields: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------
class _LineRejected(Exception):
    """A reason to report for one line."""


def parse_prompt_file(
    data: bytes,
    *,
    defaults: JobDefaults | None = None,
    default_models: Sequence[str] = (),
    limits: Limits = Limits(),  # frozen dataclass: safe as a default
) -> ParsedPromptFile:
    """Parse a whole prompt file. Never raises for bad content: see the module docstring."""
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
    if lines and _looks_like_header(lines[0][1]):
        header_line, raw = lines.pop(0)
        try:
            header = _JobHeader.model_validate_json(raw)
        except ValidationError as exc:
            return ParsedPromptFile(
                job=job,
                rejected=f"invalid job header on line {header_line}: {_describe(exc)}",
                header_line_number=header_line,
            )
        job = job.merged(header.job)

    if len(lines) > limits.max_records:
        return ParsedPromptFile(
            job=job,
            rejected=f"file has {len(lines):,} records; the limit is {limits.max_records:,}",
            header_line_number=header_line,
        )

    models = job.models or tuple(dict.fromkeys(default_models))
    items: list[WorkItem] = []
    errors: list[LineError] = []
    first_seen: dict[str, int] = {}
    for line_number, raw in lines:
        try:
            record_items = _parse_line(line_number, raw, job, models, limits)
            record_id = record_items[0].record_id
            if record_id in first_seen:
                raise _LineRejected(
                    f"duplicate record id {record_id!r} (first on line {first_seen[record_id]})"
                )
            first_seen[record_id] = line_number
            items.extend(record_items)
        except _LineRejected as exc:
            errors.append(LineError(line_number=line_number, reason=str(exc), excerpt=_excerpt(raw)))
    return ParsedPromptFile(job=job, items=items, errors=errors, header_line_number=header_line)


def coerce_tags(value: Any) -> Any:
    """Tag values as strings: numbers via str(), booleans as true/false; anything else is invalid."""
    if not isinstance(value, dict):
        return value  # let pydantic report the type error
    tags: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, str | int | float):
            text = str(item)
        else:
            raise ValueError(f"tag {key!r} must be a string, number or boolean, not {type(item).__name__}")
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY_CHARS:
            raise ValueError(f"tag keys must be 1-{MAX_TAG_KEY_CHARS} characters: {key!r}")
        if len(text) > MAX_TAG_VALUE_CHARS:
            raise ValueError(f"tag {key!r} is longer than {MAX_TAG_VALUE_CHARS} characters")
        tags[key] = text
    return tags


def _looks_like_header(raw: bytes) -> bool:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and "job" in value and "prompt" not in value and "modelInput" not in value


def _parse_line(
    line_number: int, raw: bytes, job: JobDefaults, models: tuple[str, ...], limits: Limits
) -> list[WorkItem]:
    if len(raw) > limits.max_line_bytes:
        raise _LineRejected(f"line is {len(raw):,} bytes; the limit is {limits.max_line_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _LineRejected(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _LineRejected(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _LineRejected(f"a record must be a JSON object, not {_json_type(value)}")
    if "job" in value and "prompt" not in value and "modelInput" not in value:
        raise _LineRejected("a job header is only allowed on the first line")
    if "prompt" in value and "modelInput" in value:
        raise _LineRejected(
            'a record has either "prompt" (simple shape) or "modelInput" (Bedrock shape), not both'
        )

    if "prompt" in value:
        record = _validate(_SimpleRecord, value)
        record_id, request, stream, tags = _simple_request(record, job)
        targets = (record.model,) if record.model else models
        shape: Literal["bedrock-batch", "simple"] = "simple"
    elif "modelInput" in value:
        bedrock = _validate(_BedrockRecord, value)
        record_id = _record_id(bedrock.recordId)
        request = _converse_request(bedrock.modelInput, job.inference)
        stream = _first(bedrock.stream, job.stream, False)
        tags = {**job.tags, **bedrock.tags}
        targets = models
        shape = "bedrock-batch"
    else:
        raise _LineRejected(
            'a record needs "prompt" (simple shape) or "modelInput" (Bedrock batch-inference shape)'
        )
    if record_id is None:
        record_id = f"line-{line_number}"
    if not targets:
        raise _LineRejected(
            'no model to run: set "model" on the record, "models" in the job header, or default models'
        )
    # Already validated above, so construct without re-validating (50,000 lines x models adds up).
    first = WorkItem.model_construct(
        record_id=record_id,
        line_number=line_number,
        model_id=targets[0],
        request=request,
        stream=bool(stream),
        tags=tags,
        shape=shape,
    )
    # Items differ only in model_id, so one serialization bounds them all.
    longest = max(len(json.dumps(m)) for m in targets) - len(json.dumps(targets[0]))
    size = len(first.to_json().encode()) + longest
    if size > limits.max_item_bytes:
        raise _LineRejected(f"work item is {size:,} bytes as JSON; the limit is {limits.max_item_bytes:,}")
    # Each item gets its own request and tags: a consumer mutating one must not change another.
    request_json = json.dumps(request)
    items = [first]
    for model_id in targets[1:]:
        items.append(
            first.model_copy(
                update={"model_id": model_id, "request": json.loads(request_json), "tags": dict(tags)}
            )
        )
    return items


def _simple_request(
    record: _SimpleRecord, job: JobDefaults
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
        raise _LineRejected('"tool_choice" needs "tools"')
    record_id = _record_id(record.id)
    return record_id, request, _first(record.stream, job.stream, False), {**job.tags, **record.tags}


def _tool_choice(choice: str, names: set[str]) -> dict[str, Any]:
    if choice in ("auto", "any"):
        return {choice: {}}
    if choice not in names:
        raise _LineRejected(
            f'"tool_choice" {choice!r} is not "auto", "any" or one of the tools: {sorted(names)}'
        )
    return {"tool": {"name": choice}}


def _record_id(value: str | int | None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text.strip() or len(text) > MAX_RECORD_ID_CHARS:
        raise _LineRejected(f"record id must be 1-{MAX_RECORD_ID_CHARS} characters, not blank")
    return text


# --- modelInput: Converse (as is) or Anthropic Messages (converted) --------------------------------
_ANTHROPIC_ONLY_KEYS = frozenset(
    {
        "anthropic_version",
        "max_tokens",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
    }
)
_ANTHROPIC_EXTRA_FIELDS = ("top_k", "thinking", "anthropic_beta")
_ANTHROPIC_KEYS = frozenset(
    {"anthropic_version", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences"}
    | {"tools", "tool_choice", *_ANTHROPIC_EXTRA_FIELDS}
)


def _converse_request(model_input: dict[str, Any], inference: InferenceSettings) -> dict[str, Any]:
    request = _from_anthropic(model_input) if _is_anthropic(model_input) else dict(model_input)
    unknown = sorted(set(request) - CONVERSE_BODY_KEYS)
    if unknown:
        hint = " (the model comes from the job or defaults)" if "modelId" in unknown else ""
        raise _LineRejected(f"modelInput has keys a Converse request does not accept: {unknown}{hint}")
    _validate(_ConverseBody, request, prefix="modelInput")
    # Job inference settings fill only what the record leaves unset.
    defaults = inference.to_converse()
    if defaults:
        request["inferenceConfig"] = {**defaults, **request.get("inferenceConfig", {})}
    return request


def _is_anthropic(model_input: dict[str, Any]) -> bool:
    if _ANTHROPIC_ONLY_KEYS & set(model_input) or isinstance(model_input.get("system"), str):
        return True
    messages = model_input.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            return True
        if isinstance(content, list) and any(
            isinstance(block, dict) and "type" in block for block in content
        ):
            return True
    return False


def _from_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - _ANTHROPIC_KEYS)
    if unknown:
        raise _LineRejected(
            f"Anthropic-style modelInput has keys that cannot be converted to Converse: {unknown}"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _LineRejected('modelInput "messages" must be a non-empty list')
    request: dict[str, Any] = {"messages": [_anthropic_message(m) for m in messages]}
    system = body.get("system")
    if system is not None:
        request["system"] = _anthropic_blocks(system, "system")
    config = {
        "maxTokens": body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "topP": body.get("top_p"),
        "stopSequences": body.get("stop_sequences"),
    }
    if config := {k: v for k, v in config.items() if v is not None}:
        request["inferenceConfig"] = config
    extra = {key: body[key] for key in _ANTHROPIC_EXTRA_FIELDS if key in body}
    if extra:
        request["additionalModelRequestFields"] = extra
    if "tools" in body:
        request["toolConfig"] = _anthropic_tools(body["tools"], body.get("tool_choice"))
    elif "tool_choice" in body:
        raise _LineRejected('modelInput "tool_choice" needs "tools"')
    return request


def _anthropic_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        raise _LineRejected('each modelInput message must be {"role": ..., "content": ...}')
    return {"role": message["role"], "content": _anthropic_blocks(message["content"], "message")}


def _anthropic_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise _LineRejected(f"modelInput {where} content must be a string or a list of blocks")
    blocks: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise _LineRejected(f"modelInput {where} content blocks must be objects")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            blocks.append({"text": block["text"]})
        elif kind == "tool_use" and where == "message":
            if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
                raise _LineRejected('modelInput tool_use blocks need string "id" and "name"')
            blocks.append(
                {
                    "toolUse": {
                        "toolUseId": block.get("id"),
                        "name": block.get("name"),
                        "input": block.get("input"),
                    }
                }
            )
        elif kind == "tool_result" and where == "message":
            if not isinstance(block.get("tool_use_id"), str):
                raise _LineRejected('modelInput tool_result blocks need a string "tool_use_id"')
            result: dict[str, Any] = {
                "toolUseId": block.get("tool_use_id"),
                "content": _anthropic_blocks(block.get("content", ""), "tool_result"),
            }
            if block.get("is_error"):
                result["status"] = "error"
            blocks.append({"toolResult": result})
        elif "type" not in block and len(block) == 1 and isinstance(block.get("text"), str):
            blocks.append(block)  # already Converse-style
        else:
            raise _LineRejected(
                f"modelInput {where} block of type {kind!r} cannot be converted; use the Converse shape"
            )
        if "cache_control" in block:
            blocks.append({"cachePoint": {"type": "default"}})
    return blocks


def _anthropic_tools(tools: Any, choice: Any) -> dict[str, Any]:
    if not isinstance(tools, list) or not tools:
        raise _LineRejected('modelInput "tools" must be a non-empty list')
    specs = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("input_schema"), dict):
            raise _LineRejected('each modelInput tool needs "name" and an "input_schema" object')
        spec = {"name": tool.get("name"), "inputSchema": {"json": tool["input_schema"]}}
        if tool.get("description"):
            spec["description"] = tool["description"]
        specs.append(_validate(_ToolSpec, spec, prefix="modelInput.tools").model_dump(exclude_none=True))
    config: dict[str, Any] = {"tools": [{"toolSpec": spec} for spec in specs]}
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind in ("auto", "any"):
            config["toolChoice"] = {kind: {}}
        elif kind == "tool" and isinstance(choice.get("name"), str):
            config["toolChoice"] = {"tool": {"name": choice["name"]}}
        else:
            raise _LineRejected('modelInput "tool_choice" must be {"type": "auto" | "any" | "tool", ...}')
    return config


# --- helpers -------------------------------------------------------------------------------
def _validate(model: type[_M], value: dict[str, Any], prefix: str = "") -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _LineRejected(_describe(exc, prefix)) from None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def _first(*values: _T | None) -> _T | None:
    for value in values:
        if value is not None:
            return value
    return None
