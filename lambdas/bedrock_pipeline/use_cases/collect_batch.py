"""Use cases: collect a finished Bedrock batch job, and record one chunk of its records (issue 20).

The collector (`collect_job`) runs on the job's state-change event (EventBridge -> batch-events
queue) or the scheduled sweep (`sweep`, for events that never came: Bedrock sends them "on a
best-effort basis", https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge.html).
It trusts GetModelInvocationJob over the event, and when the job is in a terminal state it reads the
``.jsonl.out`` files Bedrock wrote and sends the work queue one `BatchChunk` per
settings.BATCH_CHUNK_RECORDS records, plus chunks naming the records that have no output line at all
(a Failed, Stopped or Expired job), so no single Lambda records a 50,000-record job.

A runner records a chunk (`record_chunk`) through `run_item`, exactly as an on-demand item: the same
child run, trace and results line, priced at the batch rate, and the ledger's end mark and Powertools
idempotency make a redelivered event or chunk record nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from bedrock_pipeline import settings
from bedrock_pipeline.batch.native import Family, family_of, from_model_output
from bedrock_pipeline.domain import ModelResponse, WorkItem
from bedrock_pipeline.ports import BatchFiles, BatchInference, BatchPart, BatchRegistry, BedrockCallError
from bedrock_pipeline.use_cases.run_item import ItemOutcome, RunnerDeps, item_failed, run_item

BATCH_TIER = "batch"


class BatchChunk(BaseModel):
    """A work-queue message: records ``start``..``end`` of one output file, or named missing records."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    batch_chunk: Literal[1] = 1  # tells a runner this body is a chunk, not a work item
    arn: str
    output_key: str | None = None
    start: int = 0
    end: int = 0
    missing: tuple[str, ...] = ()  # record ids (item digests) with no output line
    reason: str = ""  # why the missing records have none (the job's state and message)

    def to_message(self) -> str:
        return self.model_dump_json()


_CHUNK_PREFIX = '{"batch_chunk":1,'  # how to_message begins (its first field, no spaces)


def is_chunk_message(body: str) -> bool:
    """Whether a work-queue body is a chunk: by its first bytes, so a runner parses nothing twice."""
    return body.startswith(_CHUNK_PREFIX)


class ChunkQueue(Protocol):
    def send_chunks(self, chunks: Sequence[BatchChunk]) -> None: ...


@dataclass(frozen=True)
class CollectDeps:
    jobs: BatchInference
    files: BatchFiles
    registry: BatchRegistry
    queue: ChunkQueue
    bucket: str
    chunk_records: int = settings.BATCH_CHUNK_RECORDS


@dataclass(frozen=True)
class CollectReport:
    arn: str
    status: str = ""
    chunks: int = 0
    records: int = 0
    skipped: str | None = None  # why nothing was sent (not ours, not finished, already collected)


def arn_of_event(event: Mapping[str, Any]) -> str | None:
    """The batch job an EventBridge "Batch Inference Job State Change" event is about."""
    detail = event.get("detail") or {}
    for key in ("batchJobArn", "jobArn"):
        if isinstance(detail.get(key), str):
            return str(detail[key])
    resources = event.get("resources") or []
    return str(resources[0]) if resources else None


def collect_job(deps: CollectDeps, arn: str) -> CollectReport:
    found = deps.registry.by_arn(arn)
    if found is None:
        return CollectReport(arn, skipped="not a job this pipeline submitted")
    _, part = found
    status = deps.jobs.get_job(arn)
    if not status.terminal:
        return CollectReport(arn, status.status, skipped=f"still {status.status}")
    if deps.registry.collected(arn):
        return CollectReport(arn, status.status, skipped="already collected (a redelivered event)")
    chunks, answered = _output_chunks(deps, part)
    items = _items(deps.files, part)
    missing = [digest for digest in items if digest not in answered]
    reason = f"Bedrock batch job {status.status}" + (f": {status.message}" if status.message else "")
    for start in range(0, len(missing), deps.chunk_records):
        chunk_ids = tuple(missing[start : start + deps.chunk_records])
        chunks.append(BatchChunk(arn=arn, missing=chunk_ids, reason=reason))
    # Send, then mark: a crash in between sends again on redelivery; the records' runs stay one each.
    deps.queue.send_chunks(chunks)
    duration = (
        status.ended_at - status.submitted_at
        if status.ended_at is not None and status.submitted_at is not None
        else None
    )
    deps.registry.mark_collected(arn, status=status.status, duration_seconds=duration)
    return CollectReport(arn, status.status, chunks=len(chunks), records=len(items))


def sweep(deps: CollectDeps) -> list[CollectReport]:
    """Collect every finished job of ours that no event has collected (ListModelInvocationJobs)."""
    reports = []
    for status in deps.jobs.list_jobs(name_contains=""):
        if status.terminal and deps.registry.by_arn(status.arn) and not deps.registry.collected(status.arn):
            reports.append(collect_job(deps, status.arn))
    return reports


def _key_of(uri: str, bucket: str) -> str:
    return uri.removeprefix(f"s3://{bucket}/")


def _output_chunks(deps: CollectDeps, part: BatchPart) -> tuple[list[BatchChunk], set[str]]:
    chunks: list[BatchChunk] = []
    answered: set[str] = set()
    for key in deps.files.keys(_key_of(part.output_uri, deps.bucket)):
        if not key.endswith(".jsonl.out"):
            continue
        lines = _jsonl(deps.files.read(key) or b"")
        answered.update(str(line.get("recordId")) for line in lines)
        for start in range(0, len(lines), deps.chunk_records):
            end = min(start + deps.chunk_records, len(lines))
            chunks.append(BatchChunk(arn=part.arn, output_key=key, start=start, end=end))
    return chunks, answered


def _items(files: BatchFiles, part: BatchPart) -> dict[str, WorkItem]:
    body = files.read(part.items_key)
    if body is None:
        raise RuntimeError(f"the items of {part.name} are missing ({part.items_key})")
    items = (WorkItem.from_message(line) for line in body.splitlines() if line.strip())
    return {item.digest: item for item in items}


def _jsonl(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# --- a runner records one chunk -----------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkDeps:
    runner: RunnerDeps
    files: BatchFiles
    registry: BatchRegistry


@dataclass(frozen=True)
class _BatchAnswer:
    """A gateway that answers with what Bedrock's batch job already answered (no call is made)."""

    answer: ModelResponse | BedrockCallError

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse:
        if isinstance(self.answer, BedrockCallError):
            raise self.answer
        return self.answer


def record_chunk(deps: ChunkDeps, chunk: BatchChunk) -> list[ItemOutcome]:
    """Each record of the chunk as the same run, trace and results line an on-demand call makes."""
    found = deps.registry.by_arn(chunk.arn)
    if found is None:
        raise RuntimeError(f"no pipeline job submitted {chunk.arn}")
    _, part = found
    family = family_of(part.model_id)
    if family is None:
        raise RuntimeError(f"{part.model_id}: no batch record format")
    items = _items(deps.files, part)
    return [
        run_item(_with_answer(deps.runner, answer), items[record_id])
        for record_id, answer in _answers(deps, chunk, family)
    ]


def chunk_failed(
    deps: ChunkDeps, chunk: BatchChunk, *, body: str, reason: str, receive_count: int, last_receive: bool
) -> list[str]:
    """Why a chunk failed, for `dlq inspect`; on its last receive before the DLQ, each of its records not
    ended yet ends as a failure with that reason (as `item_failed` ends an on-demand item), so the job
    still finishes. The job ids touched."""
    deps.runner.ledger.note_failure(body, reason, receive_count)
    if not last_receive:
        return []
    found = deps.registry.by_arn(chunk.arn)
    if found is None:
        return []
    items = _items(deps.files, found[1])
    if chunk.output_key is None:
        record_ids: list[str] = list(chunk.missing)
    else:
        body_bytes = deps.files.read(chunk.output_key) or b""
        record_ids = [str(line.get("recordId")) for line in _jsonl(body_bytes)[chunk.start : chunk.end]]
    touched = []
    for record_id in record_ids:
        item = items.get(record_id)
        if item is not None and item_failed(
            deps.runner, item, body=body, reason=reason, receive_count=receive_count, last_receive=True
        ):
            touched.append(item.bound_job.job_id)
    return sorted(set(touched))


def _answers(
    deps: ChunkDeps, chunk: BatchChunk, family: Family
) -> Iterable[tuple[str, ModelResponse | BedrockCallError]]:
    if chunk.output_key is None:
        for record_id in chunk.missing:
            yield record_id, BedrockCallError("BatchRecordNotProcessed", chunk.reason, permanent=True)
        return
    body = deps.files.read(chunk.output_key)
    if body is None:
        raise RuntimeError(f"{chunk.output_key} is gone")
    for line in _jsonl(body)[chunk.start : chunk.end]:
        yield str(line["recordId"]), _answer(family, line)


def _answer(family: Family, line: Mapping[str, Any]) -> ModelResponse | BedrockCallError:
    """A record's output, or Bedrock's reason it has none (an ``error`` object replaces ``modelOutput``:
    https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html)."""
    if "modelOutput" in line and line["modelOutput"] is not None:
        return from_model_output(family, line["modelOutput"])
    error = line.get("error") or {}
    code = str(error.get("errorCode", "BatchRecordFailed"))
    return BedrockCallError(code, str(error.get("errorMessage", "no output for this record")), permanent=True)


def _with_answer(runner: RunnerDeps, answer: ModelResponse | BedrockCallError) -> RunnerDeps:
    # No answer cache: Bedrock's output file already keeps the answer, and a retry reads it again for free.
    call = replace(runner.call, gateway=_BatchAnswer(answer), tier=BATCH_TIER, answers=None)
    return replace(runner, call=call)


__all__ = [
    "BatchChunk",
    "ChunkDeps",
    "CollectDeps",
    "CollectReport",
    "arn_of_event",
    "chunk_failed",
    "collect_job",
    "is_chunk_message",
    "record_chunk",
    "sweep",
]
