"""In-memory implementations of the ports (bedrock_pipeline/ports.py) for unit tests of the use cases.

Each keeps the contract its real adapter keeps (conditional ledger writes, one run per call, messages
serialized as on SQS), under a lock where the real service is atomic, and records what was done so a
test can read it back. No server, no mocks.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from bedrock_pipeline.call_facts import outcome_metrics, outcome_tags
from bedrock_pipeline.domain import CallError, CallOutcome, JobRef, ModelResponse, ResultLine, WorkItem
from bedrock_pipeline.ledger import FINALIZATION_LEASE_SECONDS
from bedrock_pipeline.ports import (
    BatchJobStatus,
    BatchPart,
    BedrockCallError,
    CallRun,
    ItemEnd,
    JobCounts,
    JobState,
    SourceObject,
)
from bedrock_pipeline.use_cases.collect_batch import BatchChunk, is_chunk_message


class MemorySource:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(self, bucket: str, key: str, body: bytes) -> str:
        self.objects[(bucket, key)] = body
        return hashlib.md5(body).hexdigest()

    def head(self, bucket: str, key: str) -> SourceObject | None:
        body = self.objects.get((bucket, key))
        if body is None:
            return None
        return SourceObject(bucket, key, hashlib.md5(body).hexdigest(), len(body))

    def read(self, source: SourceObject) -> bytes:
        current = self.head(source.bucket, source.key)
        if current is None or current.etag != source.etag:
            raise RuntimeError("PreconditionFailed: the object changed since it was checked")
        return self.objects[(source.bucket, source.key)]


@dataclass
class MemoryResults:
    items: dict[str, dict[str, ResultLine]] = field(default_factory=dict)
    results: dict[str, list[ResultLine]] = field(default_factory=dict)
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put_item_result(self, job_id: str, item_digest: str, line: ResultLine) -> None:
        # Through the JSON shape, as S3 would store it: what the finalizer reads back is what was written.
        self.items.setdefault(job_id, {})[item_digest] = ResultLine.from_dict(line.to_dict())

    def item_results(self, job_id: str) -> list[ResultLine]:
        lines = list(self.items.get(job_id, {}).values())
        return sorted(lines, key=lambda line: (line.line_number or 0, line.model_id))

    def put_results(self, job_id: str, lines: Sequence[ResultLine]) -> None:
        self.results[job_id] = list(lines)

    def put_errors(self, job_id: str, errors: Sequence[Mapping[str, Any]]) -> None:
        self.errors[job_id] = [dict(e) for e in errors]

    def put_summary(self, job_id: str, summary: Mapping[str, Any]) -> None:
        self.summaries[job_id] = dict(summary)


@dataclass
class MemoryAnswers:
    answers: dict[tuple[str, str], ModelResponse | CallError] = field(default_factory=dict)

    def get(self, job_id: str, item_digest: str) -> ModelResponse | CallError | None:
        return self.answers.get((job_id, item_digest))

    def put(self, job_id: str, item_digest: str, answer: ModelResponse | CallError) -> None:
        self.answers[(job_id, item_digest)] = answer


@dataclass
class MemoryQueue:
    """Keeps message bodies as SQS would: what the runner receives is parsed from them."""

    bodies: list[str] = field(default_factory=list)

    def send(self, items: Sequence[WorkItem]) -> None:
        self.bodies.extend(item.to_message() for item in items)

    def send_chunks(self, chunks: Sequence[BatchChunk]) -> None:
        self.bodies.extend(chunk.to_message() for chunk in chunks)

    def received(self) -> list[WorkItem]:
        return [WorkItem.from_message(body) for body in self.bodies if not is_chunk_message(body)]

    def chunks(self) -> list[BatchChunk]:
        return [BatchChunk.model_validate_json(body) for body in self.bodies if is_chunk_message(body)]


@dataclass
class _Job:
    job: JobRef
    expected: int
    rejected_lines: int
    rejected_reason: str | None
    enqueued: bool = False
    retries: int = 0
    finalizing_since: float | None = None
    finalized: bool = False


class MemoryLedger:
    """The DynamoDB ledger's contract: every conditional write is atomic (one lock); an item's end lives
    apart from its job (as the end shards do); a finalization claim older than the lease may be taken."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.jobs: dict[str, _Job] = {}
        self.ends: dict[str, dict[str, ItemEnd]] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.failures: dict[str, tuple[str, int]] = {}
        self.finalizations = 0

    def register(
        self, job: JobRef, *, expected: int, rejected_lines: int, rejected_reason: str | None = None
    ) -> bool:
        with self._lock:
            existing = self.jobs.get(job.job_id)
            if existing is not None:
                return existing.enqueued
            self.jobs[job.job_id] = _Job(job, expected, rejected_lines, rejected_reason)
            return False

    def mark_enqueued(self, job_id: str) -> None:
        with self._lock:
            self.jobs[job_id].enqueued = True

    def item_end(self, job_id: str, item_key: str) -> ItemEnd | None:
        with self._lock:
            return self.ends.get(job_id, {}).get(item_key)

    def record_end(self, job_id: str, item_key: str, *, succeeded: bool, retryable: bool = False) -> bool:
        with self._lock:
            ends = self.ends.setdefault(job_id, {})
            if item_key in ends:
                return False
            ends[item_key] = ItemEnd(succeeded=succeeded, retryable=retryable)
            return True

    def revise_end(self, job_id: str, item_key: str, *, succeeded: bool) -> bool:
        with self._lock:
            ends = self.ends.get(job_id, {})
            end = ends.get(item_key)
            if end is None or not end.retryable:
                return False
            ends[item_key] = ItemEnd(succeeded=succeeded, retryable=False)
            if job_id in self.jobs:  # reopen the job's finalization, as the real transaction does
                self.jobs[job_id].finalizing_since = None
                self.jobs[job_id].finalized = False
            return True

    def begin_attempt(self, job_id: str, item_key: str) -> int:
        with self._lock:
            self.attempts[(job_id, item_key)] = self.attempts.get((job_id, item_key), 0) + 1
            return self.attempts[(job_id, item_key)]

    def count_retry(self, job_id: str) -> None:
        with self._lock:
            self.jobs[job_id].retries += 1

    def counts(self, job_id: str) -> JobCounts:
        with self._lock:
            return self._counts(self.jobs[job_id])

    def _counts(self, job: _Job) -> JobCounts:
        ends = self.ends.get(job.job.job_id, {})
        succeeded = sum(1 for end in ends.values() if end.succeeded)
        return JobCounts(
            expected=job.expected,
            succeeded=succeeded,
            failed=len(ends) - succeeded,
            rejected_lines=job.rejected_lines,
            finalized=job.finalized,
            retries=job.retries,
        )

    def claim_finalization(self, job_id: str) -> JobState | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.finalized:
                return None
            counts = self._counts(job)
            now = self._clock()
            held = (
                job.finalizing_since is not None and now - job.finalizing_since < FINALIZATION_LEASE_SECONDS
            )
            if not counts.complete or held:
                return None
            job.finalizing_since = now
            return JobState(job.job, counts, job.rejected_reason)

    def release_finalization(self, job_id: str) -> None:
        with self._lock:
            self.jobs[job_id].finalizing_since = None

    def mark_finalized(self, job_id: str) -> None:
        with self._lock:
            self.jobs[job_id].finalized = True
            self.finalizations += 1

    def note_failure(
        self,
        body: str,
        reason: str,
        receive_count: int,
        *,
        job_id: str | None = None,
        item_key: str | None = None,
    ) -> None:
        with self._lock:
            self.failures[body] = (reason, receive_count)


@dataclass
class RecordedRun:
    run_id: str
    experiment_id: str
    tags: dict[str, str]
    status: str = "RUNNING"
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    item_digest: str | None = None
    trace_id: str | None = None
    replayed: bool = False
    deleted: bool = False


class MemoryRecorder:
    """Runs and traces in memory; `fail_next_finish` stands for MLflow going away mid-item."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, RecordedRun] = {}
        self.fail_next_finish: BaseException | None = None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def ensure_experiment(self, name: str) -> str:
        with self._lock:
            return self.experiments.setdefault(name, str(len(self.experiments) + 1))

    def start_job_run(self, experiment_id: str, job_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        with self._lock:
            for run in self.runs.values():
                if run.tags.get("pipeline.job_id") == job_id and run.tags.get("pipeline.role") == "job":
                    return run.run_id
            run_id = self._new_id("job-run-")
            self.runs[run_id] = RecordedRun(
                run_id, experiment_id, {**tags, "pipeline.job_id": job_id, "pipeline.role": "job"}
            )
            return run_id

    def note_job_error(self, run_id: str, reason: str) -> None:
        self.runs[run_id].tags["pipeline.error"] = reason

    def log_job_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.runs[run_id].artifacts[artifact_file] = text

    def finish_job_run(self, run_id: str, metrics: Mapping[str, float], *, failed: bool) -> None:
        run = self.runs[run_id]
        run.metrics.update(metrics)
        run.status = "FAILED" if failed else "FINISHED"

    def call_runs(self) -> list[RecordedRun]:
        return [r for r in self.runs.values() if r.item_digest is not None and not r.deleted]

    def find_call_run(self, item: WorkItem) -> CallRun | None:
        with self._lock:
            for run in self.runs.values():
                if run.item_digest == item.digest and not run.deleted:
                    return CallRun(run.run_id, run.status, run.trace_id)
        return None

    def start_call_run(self, item: WorkItem) -> str:
        with self._lock:
            run_id = self._new_id("call-run-")
            self.runs[run_id] = RecordedRun(
                run_id, item.bound_job.experiment_id, dict(item.tags), item_digest=item.digest
            )
            return run_id

    def trace_call(
        self, item: WorkItem, run_id: str, call: Callable[[], CallOutcome], *, replayed: bool
    ) -> tuple[CallOutcome, str | None]:
        outcome = call()  # an exception propagates, as out of MLflow's span
        trace_id = self._new_id("trace-")
        self.runs[run_id].replayed = replayed
        return outcome, trace_id

    def finish_call_run(
        self, run_id: str, item: WorkItem, outcome: CallOutcome, trace_id: str | None
    ) -> None:
        if self.fail_next_finish is not None:
            failure, self.fail_next_finish = self.fail_next_finish, None
            raise failure
        run = self.runs[run_id]
        run.trace_id = trace_id
        run.params = {"model_id": item.model_id}
        run.tags.update(outcome_tags(item, outcome))  # as the MLflow adapter tags a call run
        run.metrics.update(outcome_metrics(outcome))
        if outcome.answer is not None:
            run.metrics["output_tokens"] = outcome.answer.usage.get("outputTokens", 0)
        if outcome.cost is not None:
            run.metrics["cost_usd"] = outcome.cost.total_usd
        run.status = "FINISHED" if outcome.succeeded else "FAILED"

    def discard_call_run(self, run_id: str) -> None:
        self.runs[run_id].deleted = True

    def fail_call_run(self, run_id: str, reason: str) -> None:
        self.runs[run_id].tags["pipeline.error"] = reason
        self.runs[run_id].status = "FAILED"


class ScriptedGateway:
    """Answers every call with ``reply`` tokens, or raises what ``script`` says for a model, in order."""

    def __init__(self, script: Mapping[str, list[BedrockCallError]] | None = None) -> None:
        self._lock = threading.Lock()
        self._script = {model: list(errors) for model, errors in (script or {}).items()}
        self.calls: list[str] = []
        self.requests: list[dict[str, Any]] = []  # as the gateway received them, in call order

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse:
        with self._lock:
            self.calls.append(model_id)
            self.requests.append(request)
            errors = self._script.get(model_id)
            if errors:
                raise errors.pop(0)
        usage = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}
        message = {"role": "assistant", "content": [{"text": f"answer from {model_id}"}]}
        return ModelResponse(message, "end_turn", usage, latency_ms=12.0, wall_ms=13.0)


class MemoryIdempotency(BasePersistenceLayer):
    """Powertools' persistence contract in memory: a put fails while a live record holds the key (as the
    DynamoDB layer's conditional put does); an expired one may be replaced."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.records: dict[str, DataRecord] = {}

    def _get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            if idempotency_key not in self.records:
                raise IdempotencyItemNotFoundError
            return self.records[idempotency_key]

    def _put_record(self, data_record: DataRecord) -> None:
        with self._lock:
            existing = self.records.get(data_record.idempotency_key)
            if existing is not None and not existing.is_expired:
                raise IdempotencyItemAlreadyExistsError(old_data_record=existing)
            self.records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records.pop(data_record.idempotency_key, None)


@dataclass
class MemoryModelCatalog:
    """The account's models as a set; records each question (ingest asks once per file)."""

    offered: set[str] = field(default_factory=set)
    asked: list[set[str]] = field(default_factory=list)

    def unknown(self, model_ids: Collection[str]) -> dict[str, str]:
        self.asked.append(set(model_ids))
        return {model_id: "not offered" for model_id in model_ids if model_id not in self.offered}

    # Application inference profile ARN -> the foundation model it routes to (GetInferenceProfile).
    profiles: dict[str, str] = field(default_factory=dict)

    def resolve_profile(self, model_id: str) -> str | None:
        return self.profiles.get(model_id)


@dataclass
class MemoryMediaStore:
    """S3 objects by URI; counts whole reads (the runner reads an attachment once per call)."""

    objects: dict[str, bytes] = field(default_factory=dict)
    whole_reads: list[str] = field(default_factory=list)

    def size(self, uri: str) -> int | None:
        return len(self.objects[uri]) if uri in self.objects else None

    def read(self, uri: str, *, first_bytes: int | None = None) -> bytes:
        if uri not in self.objects:
            raise FileNotFoundError(f"attachment {uri} does not exist")
        if first_bytes is None:
            self.whole_reads.append(uri)
        return self.objects[uri][:first_bytes]


class MemoryBatchJobs:
    """Bedrock's batch control plane in memory: a client request token seen before gives the same job
    (CreateModelInvocationJob's idempotency); `finish` plays Bedrock ending a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}  # arn -> request and state
        self._by_token: dict[str, str] = {}
        self.create_calls = 0

    def create_job(
        self, *, name: str, model_id: str, role_arn: str, input_uri: str, output_uri: str, token: str
    ) -> str:
        with self._lock:
            self.create_calls += 1
            if token in self._by_token:
                return self._by_token[token]
            arn = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{len(self.jobs) + 1:012d}"
            self.jobs[arn] = {
                "name": name,
                "model_id": model_id,
                "role_arn": role_arn,
                "input_uri": input_uri,
                "output_uri": output_uri,
                "status": "Submitted",
                "message": None,
                "submitted_at": 1000.0,
                "ended_at": None,
                "total": None,
                "processed": None,
            }
            self._by_token[token] = arn
            return arn

    def finish(self, arn: str, status: str, *, message: str | None = None, ended_at: float = 4600.0) -> None:
        with self._lock:
            self.jobs[arn].update(status=status, message=message, ended_at=ended_at)

    def get_job(self, arn: str) -> BatchJobStatus:
        job = self.jobs[arn]
        return BatchJobStatus(
            arn=arn,
            name=job["name"],
            status=job["status"],
            message=job["message"],
            submitted_at=job["submitted_at"],
            ended_at=job["ended_at"],
            total_records=job["total"],
            processed_records=job["processed"],
        )

    def list_jobs(self, *, name_contains: str) -> list[BatchJobStatus]:
        return [self.get_job(arn) for arn, job in self.jobs.items() if name_contains in job["name"]]


@dataclass
class MemoryBatchFiles:
    objects: dict[str, bytes] = field(default_factory=dict)
    puts: int = 0

    def put(self, key: str, body: bytes) -> None:
        self.puts += 1
        self.objects[key] = body

    def read(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))


@dataclass
class MemoryBatchRegistry:
    job_parts: dict[str, dict[str, BatchPart]] = field(default_factory=dict)
    arns: dict[str, tuple[JobRef, BatchPart]] = field(default_factory=dict)
    collected_arns: dict[str, tuple[str, float | None]] = field(default_factory=dict)

    def record_part(self, job: JobRef, part: BatchPart) -> None:
        self.job_parts.setdefault(job.job_id, {})[part.name] = part
        self.arns[part.arn] = (job, part)

    def parts(self, job_id: str) -> list[BatchPart]:
        return sorted(self.job_parts.get(job_id, {}).values(), key=lambda part: part.name)

    def by_arn(self, arn: str) -> tuple[JobRef, BatchPart] | None:
        return self.arns.get(arn)

    def collected(self, arn: str) -> bool:
        return arn in self.collected_arns

    def mark_collected(self, arn: str, *, status: str, duration_seconds: float | None) -> None:
        self.collected_arns[arn] = (status, duration_seconds)

    def duration_seconds(self, arn: str) -> float | None:
        return self.collected_arns.get(arn, ("", None))[1]


class ManualClock:
    """A clock the test moves; ``sleep`` moves it (so waits cost no time and are recorded)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class MemoryPacer:
    """The `CallPacer` port in memory: the pure pacing rules over one shared state per model, under a
    lock (the DynamoDB item's atomic update), on an injected clock."""

    def __init__(self, rules_for: Callable[[str], Any], clock: Callable[[], float]) -> None:
        from bedrock_pipeline import pace_schedule, pacing

        self._pacing = pacing
        self._schedule = pace_schedule
        self._rules_for = rules_for
        self._clock = clock
        self._lock = threading.Lock()
        self.states: dict[str, Any] = {}
        self.booked: list[tuple[str, float]] = []  # (model, slot time)
        self.throttles: list[str] = []

    def _state(self, model_id: str) -> Any:
        return self.states.setdefault(
            model_id, self._schedule.PaceState.fresh(self._rules_for(model_id), self._clock())
        )

    def book(self, model_id: str) -> float:
        with self._lock:
            now = self._clock()
            state, wait = self._pacing.book(self._state(model_id), self._rules_for(model_id), now)
            self.states[model_id] = state
            self.booked.append((model_id, now + wait))
            return wait

    def backlog(self, model_id: str) -> float:
        with self._lock:
            return self._schedule.backlog_s(self._state(model_id), self._clock())

    def throttled(self, model_id: str) -> None:
        with self._lock:
            self.throttles.append(model_id)
            now = self._clock()
            state = self._schedule.counted(self._state(model_id), now)
            cut = self._pacing.after_throttle(state, self._rules_for(model_id), now)
            self.states[model_id] = state if cut is None else cut
