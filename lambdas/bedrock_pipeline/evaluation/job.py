"""The evaluation job message (versioned) and its dataset (MLflow's GenAI evaluation-dataset rows).

A job is one SQS message on the evaluation queue. A dataset is JSON Lines in S3, one row per line:
``{"inputs": {"question": "..."}, "expectations": {"expected_response": "..."}}`` (the shape
``mlflow.genai.evaluate`` takes), optionally with ``"id"`` and ``"tags"``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

JOB_VERSION = 1
MAX_DATASET_ROWS = 5_000
MAX_DATASET_BYTES = 20 * 1024 * 1024
PROMPT_FIELDS = ("question", "prompt", "request", "query")  # first one present in `inputs` is asked

ScorerName = Literal["exact_match", "contains_match", "latency", "cost", "correctness_judge"]
DEFAULT_SCORERS: tuple[ScorerName, ...] = ("exact_match", "contains_match", "latency", "cost")
JUDGE_SCORERS: frozenset[str] = frozenset({"correctness_judge"})

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.+)$")


class JobRejected(Exception):
    """A job that can never run as sent (bad message, missing dataset, no usable rows)."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


class DatasetLocation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str | None = Field(default=None, description="defaults to the deployment's prompt bucket")
    key: str = Field(min_length=1)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Limits(BaseModel):
    """Thresholds of the deterministic latency and cost scorers (per answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=5_000, gt=0)
    cost_usd: float = Field(default=0.01, gt=0)


class Inference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float | None = Field(default=0.0, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)


class EvaluationJob(BaseModel):
    """One evaluation job, version 1. Unknown fields are an error: a typo must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    job_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    dataset: DatasetLocation
    models: list[str] = Field(min_length=1, max_length=10)
    scorers: list[ScorerName] = Field(default_factory=lambda: list(DEFAULT_SCORERS), min_length=1)
    judge_model: str | None = None
    experiment: str | None = Field(default=None, min_length=1, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0)
    system: str | None = Field(default=None, max_length=20_000)
    inference: Inference = Field(default_factory=Inference)
    limits: Limits = Field(default_factory=Limits)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_uri(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _S3_URI.match(value)
            if not match:
                raise ValueError("dataset must be s3://bucket/key or {bucket, key}")
            return {"bucket": match["bucket"], "key": match["key"]}
        return value

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, models: list[str]) -> list[str]:
        if any(not m.strip() for m in models):
            raise ValueError("model ids must not be empty")
        if len(set(models)) != len(models):
            raise ValueError("models must be distinct")
        return models

    @field_validator("scorers")
    @classmethod
    def _distinct_scorers(cls, scorers: list[str]) -> list[str]:
        return list(dict.fromkeys(scorers))

    @model_validator(mode="after")
    def _judge_needs_model(self) -> EvaluationJob:
        if JUDGE_SCORERS.intersection(self.scorers) and not self.judge_model:
            raise ValueError("scorer correctness_judge needs judge_model")
        return self

    def experiment_name(self) -> str:
        if self.experiment:
            return self.experiment
        stem = self.dataset.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return f"bedrock-eval/{stem}"


def new_job_id(dataset_key: str) -> str:
    stem = dataset_key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", stem).strip("-").lower()[:40] or "dataset"
    return f"eval-{slug}-{uuid.uuid4().hex[:10]}"


def parse_job(body: str | bytes, *, default_bucket: str, fallback_job_id: str) -> EvaluationJob:
    """Validate a queue message body; raises JobRejected with a reason a person can act on."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JobRejected(f"message body is not JSON: {exc}") from exc
    job_id = raw.get("job_id") if isinstance(raw, dict) else None
    try:
        job = EvaluationJob.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'job'}: {e['msg']}" for e in exc.errors()
        )
        reported_id = job_id if isinstance(job_id, str) and re.fullmatch(r"[\w.-]{1,80}", job_id) else None
        raise JobRejected(f"invalid evaluation job: {problems}", reported_id) from exc
    updates: dict[str, Any] = {}
    if job.job_id is None:
        updates["job_id"] = fallback_job_id
    if job.dataset.bucket is None:
        updates["dataset"] = DatasetLocation(bucket=default_bucket, key=job.dataset.key)
    return job.model_copy(update=updates) if updates else job


@dataclass(frozen=True)
class DatasetRow:
    record_id: str
    line_number: int
    inputs: dict[str, Any]
    expectations: dict[str, Any]
    tags: dict[str, str]

    @property
    def prompt(self) -> str:
        return next(str(self.inputs[f]) for f in PROMPT_FIELDS if f in self.inputs)


@dataclass
class Dataset:
    rows: list[DatasetRow] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"lineNumber", "reason"}


def parse_dataset(body: bytes) -> Dataset:
    """Rows in MLflow's evaluation-dataset shape; a bad line is reported and the others still run."""
    if len(body) > MAX_DATASET_BYTES:
        raise JobRejected(f"dataset is {len(body):,} bytes; the limit is {MAX_DATASET_BYTES:,}")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobRejected(f"dataset is not UTF-8: {exc}") from exc
    dataset = Dataset()
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        reason = _row_problem(line)
        if isinstance(reason, str):
            dataset.errors.append({"lineNumber": number, "reason": reason})
            continue
        record = reason
        record_id = str(record.get("id") or f"row-{number}")
        if record_id in seen:
            dataset.errors.append({"lineNumber": number, "reason": f"duplicate id {record_id!r}"})
            continue
        seen.add(record_id)
        tags = {str(k): str(v) for k, v in (record.get("tags") or {}).items()}
        dataset.rows.append(
            DatasetRow(record_id, number, record["inputs"], record.get("expectations") or {}, tags)
        )
        if len(dataset.rows) > MAX_DATASET_ROWS:
            raise JobRejected(f"dataset has more than {MAX_DATASET_ROWS:,} rows")
    return dataset


def _row_problem(line: str) -> dict[str, Any] | str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(record, dict):
        return "a row must be a JSON object"
    inputs = record.get("inputs")
    if not isinstance(inputs, dict):
        return '`inputs` must be an object, e.g. {"question": "..."}'
    if not any(isinstance(inputs.get(f), str) and inputs[f].strip() for f in PROMPT_FIELDS):
        return f"`inputs` needs a non-empty text field, one of {', '.join(PROMPT_FIELDS)}"
    expectations = record.get("expectations")
    if expectations is not None and not isinstance(expectations, dict):
        return '`expectations` must be an object, e.g. {"expected_response": "..."}'
    if record.get("tags") is not None and not isinstance(record["tags"], dict):
        return "`tags` must be an object"
    return record
