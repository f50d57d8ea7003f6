"""What a prompt file parses into (result types, limits) and the record shapes a line is validated
against. No parsing here: ``parser`` reads lines, ``anthropic`` converts Anthropic bodies."""

from __future__ import annotations

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
    model_validator,
)

from bedrock_pipeline import settings
from bedrock_pipeline.domain import WorkItem

EXCERPT_CHARS = 200
MAX_RECORD_ID_CHARS = 250  # MLflow tag keys/values carry it; keep it short and printable
MAX_TAG_KEY_CHARS = 250  # MLflow's tag key limit
MAX_TAG_VALUE_CHARS = 8000  # MLflow's tag value limit
MAX_MODEL_ID_CHARS = 2048  # Bedrock's modelId limit
# Deeper JSON is refused before json.loads: past ~1,000 levels it would hit Python's recursion limit
# (and say so in words a user cannot act on); no Converse request needs anywhere near this many.
MAX_NESTING_DEPTH = 100
# Bedrock's limits on media in a Converse message (API reference, Message.content: "Each image's size,
# height, and width must be no more than 3.75 MB, 8000 px, and 8000 px"; "Each document's size must be
# no more than 4.5 MB"), read as MiB so a file is never refused here that Bedrock would take.
MAX_IMAGE_BYTES = int(3.75 * 1024 * 1024)
MAX_DOCUMENT_BYTES = int(4.5 * 1024 * 1024)

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
    max_item_bytes: int = settings.MAX_ITEM_BODY_BYTES


_Probability = Annotated[StrictFloat, Field(ge=0, le=1)]
ExecutionMode = Literal["on_demand", "batch", "auto"]  # settings.EXECUTION_MODES


class InferenceSettings(BaseModel):
    """Inference parameters; None means "not set here" (the next level down decides)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: _Probability | None = None
    top_p: _Probability | None = None

    def merged(self, override: InferenceSettings) -> InferenceSettings:
        return InferenceSettings(
            max_tokens=first_set(override.max_tokens, self.max_tokens),
            temperature=first_set(override.temperature, self.temperature),
            top_p=first_set(override.top_p, self.top_p),
        )

    def to_converse(self) -> dict[str, Any]:
        config = {"maxTokens": self.max_tokens, "temperature": self.temperature, "topP": self.top_p}
        return {k: v for k, v in config.items() if v is not None}


class ReasoningSetting(BaseModel):
    """``{"budget_tokens": N}``: the model may think up to N tokens before answering (reasoning.py
    maps it to the model family's request field and checks the family's rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    budget_tokens: Annotated[StrictInt, Field(ge=1)]


class JobDefaults(BaseModel):
    """Job-level defaults: from the caller (sidecar file, CLI flags) and/or the file's job header."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    models: tuple[Annotated[StrictStr, Field(min_length=1, max_length=MAX_MODEL_ID_CHARS)], ...] = ()
    experiment: Annotated[StrictStr, Field(min_length=1)] | None = None
    budget_usd: Annotated[StrictFloat, Field(ge=0)] | None = None
    inference: InferenceSettings = InferenceSettings()
    stream: StrictBool | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    reasoning: ReasoningSetting | None = None
    # How the job runs (README "Batch mode"); None: the deployment's default (settings.DEFAULT_EXECUTION_MODE).
    mode: ExecutionMode | None = None

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
            reasoning=override.reasoning if "reasoning" in given else self.reasoning,
            mode=override.mode if "mode" in given else self.mode,
        )


class LineError(BaseModel):
    model_config = ConfigDict(frozen=True)

    line_number: int
    reason: str
    excerpt: str = ""


class ParsedPromptFile(BaseModel):
    """Items in file order (models in job order within a record); errors in line order.

    ``rejected`` is a reason when the file as a whole was refused (then there are no items).
    ``warnings`` are lines that still run but not quite as written (reserved tags dropped).
    """

    model_config = ConfigDict(frozen=True)

    job: JobDefaults = JobDefaults()
    items: list[WorkItem] = Field(default_factory=list)
    errors: list[LineError] = Field(default_factory=list)
    warnings: list[LineError] = Field(default_factory=list)
    rejected: str | None = None
    header_line_number: int | None = None

    @classmethod
    def rejection(cls, reason: str, job: JobDefaults | None = None) -> ParsedPromptFile:
        return cls(job=job or JobDefaults(), rejected=reason)


# ---------------------------------------------------------------------------------------------
# Input shapes (validation only; the package exports none of them)
# ---------------------------------------------------------------------------------------------
class JobHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    job: JobDefaults


class ToolSpec(BaseModel):
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


class Attachment(BaseModel):
    """One file to send with a simple record: ``{"s3": "s3://bucket/key"}`` or ``{"path": "..."}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    s3: Annotated[StrictStr, Field(min_length=1)] | None = None
    path: Annotated[StrictStr, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Attachment:
        if (self.s3 is None) == (self.path is None):
            raise ValueError('an attachment is {"s3": "s3://bucket/key"} or {"path": "relative/key"}')
        return self


class SimpleRecord(BaseModel):
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
    tools: list[ToolSpec] | None = None
    tool_choice: StrictStr | None = None
    reasoning: ReasoningSetting | None = None
    attachments: list[Attachment] | None = None

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


class BedrockRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    recordId: StrictStr | StrictInt | None = None
    modelInput: dict[str, Any]
    stream: StrictBool | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _coerce_tags(cls, value: Any) -> Any:
        return coerce_tags(value)


class ConverseMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ConverseInferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    maxTokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: _Probability | None = None
    topP: _Probability | None = None
    stopSequences: list[StrictStr] | None = None


class ConverseBody(BaseModel):
    """A light structural check; Bedrock does the full validation (the tests use botocore's)."""

    model_config = ConfigDict(extra="allow", strict=True)

    messages: Annotated[list[ConverseMessage], Field(min_length=1)]
    system: list[dict[str, Any]] | None = None
    inferenceConfig: ConverseInferenceConfig | None = None
    toolConfig: dict[str, Any] | None = None
    additionalModelRequestFields: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Validation shared by the parser and the Anthropic conversion
# ---------------------------------------------------------------------------------------------
class LineRejected(Exception):
    """A reason to report for one line (the parser turns it into a ``LineError``)."""


def validate(model: type[_M], value: dict[str, Any], prefix: str = "") -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise LineRejected(describe(exc, prefix)) from None


def describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


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


def first_set(*values: _T | None) -> _T | None:
    """The first value that is not None (precedence: record > job header > caller defaults)."""
    for value in values:
        if value is not None:
            return value
    return None
