"""The pipeline's one domain model: a job, a work item, a model call's outcome, a result line.

Plain data, no I/O. The parser, the evaluator and the benchmark all produce `WorkItem`s; the queue
carries them; `run_item` turns one into a `CallOutcome` (priced once) that both the run recorder and
the result store receive; the result store keeps `ResultLine`s (Bedrock's batch-inference output
shape, extended: README "Results").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings
from bedrock_pipeline.pricing import Cost

JobKind = Literal["batch", "evaluation", "benchmark"]
MESSAGE_VERSION = 1


def results_prefix(job_id: str) -> str:
    """Where a job's results, errors, summary, item lines and cached answers live in the prompt bucket."""
    return f"{settings.RESULTS_PREFIX}{job_id}/"


def item_digest(item_key: str) -> str:
    """A short, fixed-length form of an item key: S3 keys, ledger entries and the run's digest tag."""
    return hashlib.sha256(item_key.encode()).hexdigest()[:32]


def job_id_for(key: str, etag: str) -> str:
    """A job id that is the same for the same object version, so a redelivered S3 event is one job."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", stem).strip("-").lower()[:48] or "prompts"
    digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def experiment_for(key: str, explicit: str | None) -> str:
    """One experiment per prompt-file folder, unless the job names one."""
    if explicit:
        return explicit
    relative = key[len(settings.INCOMING_PREFIX) :] if key.startswith(settings.INCOMING_PREFIX) else key
    folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
    return f"bedrock-batch/{folder}" if folder else "bedrock-batch"


class JobRef(BaseModel):
    """Everything a runner needs to record one call under its job, carried in every work message."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: JobKind = "batch"
    experiment_id: str
    parent_run_id: str
    source_bucket: str
    source_key: str
    source_etag: str

    @property
    def source_uri(self) -> str:
        return f"s3://{self.source_bucket}/{self.source_key}"


class WorkItem(BaseModel):
    """One Bedrock call to make: a Converse request body (without ``modelId``) on one model.

    The parser makes items without a job (``job`` is None: it does not know the job yet); ingest, the
    evaluator and the benchmark bind them to their job (`bound_to`). A bound item is the body of one
    work-queue message, and has an identity (`key`, `digest`) that is the same on every delivery.
    """

    # Unknown keys are ignored, as they were on the queue's messages before: a message a newer (or
    # older) version of the runner wrote during a deploy still runs instead of going to the DLQ.
    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = MESSAGE_VERSION
    job: JobRef | None = None
    record_id: str
    line_number: int
    model_id: str
    request: dict[str, Any]
    stream: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    # Which prompt-file shape the record had (None for items the evaluator or benchmark make).
    shape: Literal["bedrock-batch", "simple"] | None = None
    # The foundation model behind an application inference profile ``model_id`` (ingest resolves it
    # with GetInferenceProfile): what the call is priced as. None: ``model_id`` names its model itself.
    resolved_model_id: str | None = None

    @property
    def pricing_model_id(self) -> str:
        """The model the call is priced as: the resolved one for an application inference profile."""
        return self.resolved_model_id or self.model_id

    # How the call is made: a Converse call, or a record of a Bedrock batch inference job (issue 20).
    execution: Literal["on_demand", "batch"] = "on_demand"

    def bound_to(self, job: JobRef) -> WorkItem:
        return self.model_copy(update={"job": job})

    @property
    def bound_job(self) -> JobRef:
        if self.job is None:
            raise self._unbound()
        return self.job

    @property
    def key(self) -> str:
        """Stable identity of this unit of work: the same source version, record and model."""
        return f"{self.bound_job.source_etag}:{self.record_id}:{self.model_id}"

    @property
    def digest(self) -> str:
        return item_digest(self.key)

    def to_message(self) -> str:
        """The work-queue message body. Only a bound item can be one: a runner records under its job."""
        if self.job is None:
            raise self._unbound()
        return self.model_dump_json()

    @classmethod
    def from_message(cls, body: str | bytes) -> WorkItem:
        """A work-queue message body back into its item; a body without its job is refused."""
        item = cls.model_validate_json(body)
        if item.job is None:
            raise item._unbound()
        return item

    def _unbound(self) -> ValueError:
        return ValueError(f"work item {self.record_id} on {self.model_id} is not bound to a job")


@dataclass(frozen=True)
class CallError:
    """Why a call has no answer: Bedrock's error code and message, or the pipeline's (gave up retrying)."""

    code: str
    message: str


@dataclass(frozen=True)
class ModelResponse:
    """What one Converse or ConverseStream call produced, in Converse's response shape.

    ``time_to_first_token_ms`` is measured by the caller for a streamed call (None otherwise):
    Bedrock reports only the total latency. ``latency_ms`` and ``wall_ms`` are None for a record of a
    batch inference job: Bedrock measures no latency per record (the job's duration is on the parent run).
    ``response_fields`` are the response's other members as Bedrock answered them (guardrail ``trace``,
    ``serviceTier``, ``performanceConfig``, ``additionalModelResponseFields``); the output message keeps
    reasoning blocks in order.
    """

    output_message: dict[str, Any]
    stop_reason: str
    usage: dict[str, int]
    latency_ms: float | None
    wall_ms: float | None
    time_to_first_token_ms: float | None = None
    response_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(block.get("text", "") for block in self.output_message.get("content", []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            **{k: data[k] for k in ("output_message", "stop_reason", "usage", "latency_ms", "wall_ms")},
            # Absent from answers cached before it was measured.
            time_to_first_token_ms=data.get("time_to_first_token_ms"),
            response_fields=data.get("response_fields") or {},
        )

    def as_converse_output(self) -> dict[str, Any]:
        output: dict[str, Any] = {
            "output": {"message": self.output_message},
            "stopReason": self.stop_reason,
            "usage": self.usage,
        }
        if self.latency_ms is not None:
            output["metrics"] = {"latencyMs": self.latency_ms}
        output.update(self.response_fields)
        return output


@dataclass(frozen=True)
class CallOutcome:
    """One call's result, priced once: exactly one of ``answer`` and ``error`` is set.

    ``cost`` is None for an error and for a model the price table does not know (tokens are still
    recorded; a made-up price is not). ``guardrail_cost_usd`` is what the guardrail's text units
    cost (apart from ``cost``, the model's tokens), None without a guardrail trace to price.
    """

    answer: ModelResponse | None = None
    error: CallError | None = None
    cost: Cost | None = None
    guardrail_cost_usd: float | None = None

    def __post_init__(self) -> None:
        if (self.answer is None) == (self.error is None):
            raise ValueError("a call outcome has either an answer or an error")

    @property
    def succeeded(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class RunRef:
    """Where a call is recorded in MLflow (both None for an item that ended without a run)."""

    run_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class ResultLine:
    """One line of results/<job>/results.jsonl: Bedrock's batch-inference output shape, extended."""

    record_id: str
    model_id: str
    line_number: int | None
    model_input: dict[str, Any] | None
    outcome: CallOutcome
    mlflow: RunRef = RunRef()
    # The model an application inference profile ``model_id`` resolved to (what the call is priced as).
    resolved_model_id: str | None = None
    # The line exactly as it was stored, when it was read back: merged into results.jsonl unchanged
    # (keys a newer version added are kept, not dropped by this one).
    stored: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_item(cls, item: WorkItem, outcome: CallOutcome, mlflow: RunRef = RunRef()) -> ResultLine:
        return cls(
            item.record_id,
            item.model_id,
            item.line_number,
            item.request,
            outcome,
            mlflow,
            item.resolved_model_id,
        )

    @property
    def succeeded(self) -> bool:
        return self.outcome.succeeded

    @property
    def text(self) -> str:
        return self.outcome.answer.text if self.outcome.answer is not None else ""

    @property
    def usage(self) -> dict[str, int]:
        return self.outcome.answer.usage if self.outcome.answer is not None else {}

    @property
    def latency_ms(self) -> float | None:
        return self.outcome.answer.latency_ms if self.outcome.answer is not None else None

    @property
    def cost_usd(self) -> float | None:
        return self.outcome.cost.total_usd if self.outcome.cost is not None else None

    def to_dict(self) -> dict[str, Any]:
        if self.stored is not None:
            return dict(self.stored)
        line: dict[str, Any] = {
            "recordId": self.record_id,
            "modelId": self.model_id,
            **({"resolvedModelId": self.resolved_model_id} if self.resolved_model_id else {}),
            "lineNumber": self.line_number,
            "modelInput": self.model_input,
        }
        answer, error = self.outcome.answer, self.outcome.error
        if answer is not None:
            line.update(modelOutput=answer.as_converse_output(), usage=answer.usage)
            if answer.latency_ms is not None:  # absent for a batch record: Bedrock measures none
                line["latencyMs"] = answer.latency_ms
            line["costUsd"] = self.cost_usd
        elif error is not None:
            line["error"] = {"errorCode": error.code, "errorMessage": error.message}
        line["mlflow"] = {"runId": self.mlflow.run_id, "traceId": self.mlflow.trace_id}
        return line

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> ResultLine:
        """The inverse of `to_dict` (results the finalizer merges were written by `to_dict`); lenient
        where a line from another version might differ, so one odd line cannot stop a job finalizing."""
        if "error" in line:
            error = line["error"] or {}
            outcome = CallOutcome(error=CallError(error.get("errorCode", ""), error.get("errorMessage", "")))
        else:
            output = line.get("modelOutput") or {}
            latency = None if line.get("latencyMs") is None else float(line["latencyMs"])
            answer = ModelResponse(
                output_message=(output.get("output") or {}).get("message") or {},
                stop_reason=output.get("stopReason", ""),
                usage={k: int(v) for k, v in (line.get("usage") or {}).items() if isinstance(v, int | float)},
                latency_ms=latency,
                wall_ms=latency,
                response_fields={
                    k: v for k, v in output.items() if k not in ("output", "stopReason", "usage", "metrics")
                },
            )
            cost = line.get("costUsd")
            # Only the total travels in a line; its parts are on the run.
            priced = None if cost is None else Cost.of_total(float(cost))
            outcome = CallOutcome(answer=answer, cost=priced)
        mlflow = line.get("mlflow") or {}
        return cls(
            record_id=str(line.get("recordId", "")),
            model_id=str(line.get("modelId", "")),
            line_number=line.get("lineNumber"),
            model_input=line.get("modelInput"),
            outcome=outcome,
            mlflow=RunRef(mlflow.get("runId"), mlflow.get("traceId")),
            resolved_model_id=line.get("resolvedModelId"),
            stored=line,
        )
