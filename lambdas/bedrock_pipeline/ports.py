"""The small interfaces the use cases (`ingest`, `run_item`, `finalize`) are written against.

Adapters implement them: S3/SQS/DynamoDB through boto3 (`storage.py`, `work_queue.py`, `ledger.py`),
MLflow (`tracking.py`), Bedrock (`bedrock.py`); the unit tests implement them in memory
(tests/unit/fakes.py). docs/ARCHITECTURE.md has the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bedrock_pipeline.domain import (
    CallError,
    CallOutcome,
    JobRef,
    ModelResponse,
    ResultLine,
    RunRef,
    WorkItem,
)


@dataclass
class BedrockCallError(Exception):
    """A model call failed. `permanent` says whether retrying the work item can help."""

    code: str
    message: str
    permanent: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class TransientItemError(Exception):
    """The item could not finish now (throttled past retries, service down); the queue retries it."""


class ThrottledItem(TransientItemError):
    """The model's shared schedule is booked further ahead than a runner may hold an item: the item
    goes back to the queue as a fresh message due in ``retry_after_seconds``, which spends none of its
    receives (throttling alone never sends an item to the DLQ)."""

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class CallPacer(Protocol):
    """A schedule of calls per model shared by every runner, at a rate that adapts to throttling
    (bedrock_pipeline/pacing.py; the adapter is pacer_store.py)."""

    def book(self, model_id: str) -> float:
        """Book the model's next slot; the seconds to wait before calling."""
        ...

    def backlog(self, model_id: str) -> float:
        """Seconds until the model's next free slot as last seen (no call: may be a moment stale)."""
        ...

    def throttled(self, model_id: str) -> None:
        """A call was throttled: cut the model's rate (once per cooldown, whoever reports it)."""
        ...


class ModelGateway(Protocol):
    """Bedrock's Converse/ConverseStream. Raises `BedrockCallError`."""

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse: ...


class MediaStore(Protocol):
    """The S3 objects records attach (attachments.py): their size at ingest, their bytes at call time."""

    def size(self, uri: str) -> int | None:
        """The object's size in bytes; None when it does not exist."""
        ...

    def read(self, uri: str, *, first_bytes: int | None = None) -> bytes:
        """The object's bytes (only its first ``first_bytes`` when given)."""
        ...


class ModelCatalog(Protocol):
    """What the account can invoke: foundation models and inference profiles (Bedrock's control plane)."""

    def unknown(self, model_ids: Collection[str]) -> Mapping[str, str]:
        """The ids the account cannot invoke, each with why. Empty when the catalogue cannot be read:
        the call itself then decides, as it did before the check existed."""
        ...

    def resolve_profile(self, model_id: str) -> str | None:
        """The foundation model id an application inference profile ARN routes to (GetInferenceProfile);
        None for any other id, or when the profile cannot be read."""
        ...


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    etag: str  # without quotes
    size: int


class PromptSource(Protocol):
    """Where prompt files are read from (the prompt bucket)."""

    def head(self, bucket: str, key: str) -> SourceObject | None:
        """None when the object no longer exists."""
        ...

    def read(self, source: SourceObject) -> bytes:
        """That very version's bytes (fails if the object changed since `head`)."""
        ...


class ResultStore(Protocol):
    """results/<job id>/ in the prompt bucket."""

    def put_item_result(self, job_id: str, item_digest: str, line: ResultLine) -> None: ...
    def item_results(self, job_id: str) -> list[ResultLine]: ...
    def put_results(self, job_id: str, lines: Sequence[ResultLine]) -> None: ...
    def put_errors(self, job_id: str, errors: Sequence[Mapping[str, Any]]) -> None: ...
    def put_summary(self, job_id: str, summary: Mapping[str, Any]) -> None: ...


class AnswerCache(Protocol):
    """A model's answer (or permanent error) kept the moment it arrives: a retry after a later failure
    re-records it instead of calling (and billing) the model twice."""

    def get(self, job_id: str, item_digest: str) -> ModelResponse | CallError | None: ...
    def put(self, job_id: str, item_digest: str, answer: ModelResponse | CallError) -> None: ...


class WorkQueue(Protocol):
    def send(self, items: Sequence[WorkItem]) -> None:
        """Every item or an exception (items already sent are deduplicated by the ledger)."""
        ...


@dataclass(frozen=True)
class ItemEnd:
    """How an item ended. `retryable`: it gave up after its last receive; a DLQ redrive may run it again."""

    succeeded: bool
    retryable: bool


@dataclass(frozen=True)
class JobCounts:
    expected: int
    succeeded: int
    failed: int
    rejected_lines: int
    finalized: bool
    retries: int = 0  # attempts beyond each item's first (throttling, MLflow down, redrives)

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed

    @property
    def complete(self) -> bool:
        return self.ended >= self.expected


@dataclass(frozen=True)
class JobState:
    """A job as the ledger knows it, read once (the finalizer needs all of it)."""

    job: JobRef
    counts: JobCounts
    rejected_reason: str | None


class JobLedger(Protocol):
    """Counters and marks that make every item count once and every job finalize once."""

    def register(
        self, job: JobRef, *, expected: int, rejected_lines: int, rejected_reason: str | None
    ) -> bool:
        """Create the job once. True if its items were already enqueued (a redelivered event)."""
        ...

    def mark_enqueued(self, job_id: str) -> None: ...
    def item_end(self, job_id: str, item_key: str) -> ItemEnd | None: ...
    def record_end(self, job_id: str, item_key: str, *, succeeded: bool, retryable: bool = False) -> bool:
        """False if the item had already ended (a duplicate delivery)."""
        ...

    def revise_end(self, job_id: str, item_key: str, *, succeeded: bool) -> bool: ...
    def begin_attempt(self, job_id: str, item_key: str) -> int: ...
    def count_retry(self, job_id: str) -> None:
        """One more retry in the job (an attempt > 1 at any of its items): `JobCounts.retries`."""
        ...

    def claim_finalization(self, job_id: str) -> JobState | None:
        """The job, for exactly one caller once every item has ended; None for everyone else."""
        ...

    def release_finalization(self, job_id: str) -> None: ...
    def mark_finalized(self, job_id: str) -> None: ...
    def note_failure(
        self,
        body: str,
        reason: str,
        receive_count: int,
        *,
        job_id: str | None = None,
        item_key: str | None = None,
    ) -> None:
        """Why a message failed last, keyed by its body (what `dlq inspect` shows after a redrive)."""
        ...


@dataclass(frozen=True)
class CallRun:
    """A call run an earlier attempt at an item left behind."""

    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED
    trace_id: str | None


class RunRecorder(Protocol):
    """MLflow: experiments, one parent run per job, one child run and trace per call."""

    def ensure_experiment(self, name: str) -> str: ...
    def start_job_run(
        self, experiment_id: str, job_id: str, run_name: str, tags: Mapping[str, str]
    ) -> str: ...
    def note_job_error(self, run_id: str, reason: str) -> None: ...
    def log_job_text(self, run_id: str, text: str, artifact_file: str) -> None: ...
    def finish_job_run(self, run_id: str, metrics: Mapping[str, float], *, failed: bool) -> None: ...

    def find_call_run(self, item: WorkItem) -> CallRun | None: ...
    def start_call_run(self, item: WorkItem) -> str: ...
    def trace_call(
        self, item: WorkItem, run_id: str, call: Callable[[], CallOutcome], *, replayed: bool
    ) -> tuple[CallOutcome, str | None]:
        """Run ``call`` inside the call's trace (linked to the run); returns its outcome and trace id.

        ``replayed``: the outcome is a cached answer, recorded as such in the trace. Exceptions from
        ``call`` propagate (the span ends in error)."""
        ...

    def finish_call_run(
        self, run_id: str, item: WorkItem, outcome: CallOutcome, trace_id: str | None
    ) -> None: ...
    def discard_call_run(self, run_id: str) -> None: ...
    def fail_call_run(self, run_id: str, reason: str) -> None: ...


# --- Bedrock batch inference (issue 20) ---------------------------------------------------------
# A job's states (ModelInvocationJobSummary.status); the terminal ones are those after which Bedrock
# writes no more output (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_ModelInvocationJobSummary.html).
BATCH_TERMINAL_STATES = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})


@dataclass(frozen=True)
class BatchJobStatus:
    """What GetModelInvocationJob / ListModelInvocationJobs say about one Bedrock batch job."""

    arn: str
    name: str
    status: str
    message: str | None = None
    submitted_at: float | None = None  # epoch seconds
    ended_at: float | None = None
    # Progress, where Bedrock reports it (GetModelInvocationJob's record counts).
    total_records: int | None = None
    processed_records: int | None = None
    success_records: int | None = None
    error_records: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in BATCH_TERMINAL_STATES


class BatchInference(Protocol):
    """Bedrock's batch control plane (CreateModelInvocationJob, GetModelInvocationJob, List...)."""

    def create_job(
        self, *, name: str, model_id: str, role_arn: str, input_uri: str, output_uri: str, token: str
    ) -> str:
        """The job's ARN. The same ``token`` again creates nothing and gives the same job."""
        ...

    def get_job(self, arn: str) -> BatchJobStatus: ...
    def list_jobs(self, *, name_contains: str) -> list[BatchJobStatus]: ...


@dataclass(frozen=True)
class BatchPart:
    """One Bedrock batch job a pipeline job submitted: its model, input and output, and its records."""

    name: str  # the Bedrock job name, unique per pipeline job
    model_id: str
    arn: str
    input_uri: str
    output_uri: str
    items_key: str  # the bound work items of its records, one JSON line each (keyed by recordId)
    records: int


class BatchRegistry(Protocol):
    """The ledger's record of the Bedrock jobs of each pipeline job, and of which have been collected."""

    def record_part(self, job: JobRef, part: BatchPart) -> None: ...
    def parts(self, job_id: str) -> list[BatchPart]: ...
    def by_arn(self, arn: str) -> tuple[JobRef, BatchPart] | None: ...
    def collected(self, arn: str) -> bool: ...
    def mark_collected(self, arn: str, *, status: str, duration_seconds: float | None) -> None: ...
    def duration_seconds(self, arn: str) -> float | None:
        """The Bedrock job's duration (submitted to ended), once collected."""
        ...


class BatchFiles(Protocol):
    """batch/<job id>/ in the prompt bucket: input files we write, output files Bedrock writes."""

    def put(self, key: str, body: bytes) -> None: ...
    def read(self, key: str) -> bytes | None:
        """None when the object does not exist."""
        ...

    def keys(self, prefix: str) -> list[str]: ...


__all__ = [
    "BATCH_TERMINAL_STATES",
    "AnswerCache",
    "BatchFiles",
    "BatchInference",
    "BatchJobStatus",
    "BatchPart",
    "BatchRegistry",
    "BedrockCallError",
    "CallPacer",
    "CallRun",
    "ItemEnd",
    "JobCounts",
    "JobLedger",
    "JobState",
    "MediaStore",
    "ModelCatalog",
    "ModelGateway",
    "PromptSource",
    "ResultStore",
    "RunRecorder",
    "RunRef",
    "SourceObject",
    "ThrottledItem",
    "TransientItemError",
    "WorkQueue",
]
