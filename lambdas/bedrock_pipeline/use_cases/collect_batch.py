"""Use cases: collect a finished Bedrock batch job, and record one chunk of its records (issue 20).

The collector (`collect_job`) runs on the job's state-change event (EventBridge -> batch-events
queue) or the scheduled sweep (`sweep`, for events that never came: Bedrock sends them "on a
best-effort basis", https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge.html).
It trusts GetModelInvocationJob over the event, and when the job is in a terminal state it reads the
``.jsonl.out`` files Bedrock wrote and the job's items once, writes each settings.BATCH_CHUNK_RECORDS
records (item and output line; no output line for a record of a Failed, Stopped or Expired job that
never ran) as one small chunk file under batch/<job id>/chunks/, and sends the work queue one
`BatchChunk` naming each, so no single Lambda records a 50,000-record job and no runner reads more
than its own chunk (reading the whole output and items files per chunk made recording quadratic).

A runner records a chunk (`record_chunk`) through `run_item`, exactly as an on-demand item: the same
child run, trace and results line, priced at the batch rate, and the ledger's end mark and Powertools
idempotency make a redelivered event or chunk record nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from bedrock_pipeline import settings
from bedrock_pipeline.batch.native import Family, family_of, from_model_output
from bedrock_pipeline.domain import ModelResponse, WorkItem
from bedrock_pipeline.ports import BatchFiles, BatchInference, BatchPart, BatchRegistry, BedrockCallError
from bedrock_pipeline.use_cases.fan_out import fan_out
from bedrock_pipeline.use_cases.run_item import ItemOutcome, RunnerDeps, item_failed, run_item

BATCH_TIER = "batch"


class BatchChunk(BaseModel):
    """A work-queue message: a chunk file of ``count`` records (one JSON line each: the bound work
    item's message and Bedrock's output line, or null when the record has none)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    batch_chunk: Literal[1] = 1  # tells a runner this body is a chunk, not a work item
    arn: str
    records_key: str
    count: int
    reason: str = ""  # why a record without an output line has none (the job's state and message)

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
    outputs = _output_lines(deps, part)
    items = _item_messages(deps.files, part)
    # Records with an output line first, in Bedrock's order, then those without one.
    ordered = [digest for digest in outputs if digest in items] + [d for d in items if d not in outputs]
    reason = f"Bedrock batch job {status.status}" + (f": {status.message}" if status.message else "")
    chunks = []
    for number, start in enumerate(range(0, len(ordered), deps.chunk_records), 1):
        records = ordered[start : start + deps.chunk_records]
        body = "".join(
            json.dumps({"item": items[digest], "output": outputs.get(digest)}, ensure_ascii=False) + "\n"
            for digest in records
        ).encode()
        chunks.append((chunk_key(part, number), body, len(records)))
    # Deterministic keys: a collection redone after a crash rewrites the same files.
    fan_out(chunks, lambda chunk: deps.files.put(chunk[0], chunk[1]), max_workers=16)
    messages = [BatchChunk(arn=arn, records_key=key, count=count, reason=reason) for key, _, count in chunks]
    # Send, then mark: a crash in between sends again on redelivery; the records' runs stay one each.
    deps.queue.send_chunks(messages)
    duration = (
        status.ended_at - status.submitted_at
        if status.ended_at is not None and status.submitted_at is not None
        else None
    )
    deps.registry.mark_collected(arn, status=status.status, duration_seconds=duration)
    return CollectReport(arn, status.status, chunks=len(messages), records=len(items))


def chunk_key(part: BatchPart, number: int) -> str:
    """batch/<job id>/chunks/<part name>/<number>.jsonl, beside the part's items file."""
    folder = part.items_key.removesuffix(".jsonl").replace("/items/", "/chunks/", 1)
    return f"{folder}/{number:06d}.jsonl"


def sweep(deps: CollectDeps) -> list[CollectReport]:
    """Collect every finished job of ours that no event has collected (ListModelInvocationJobs)."""
    reports = []
    for status in deps.jobs.list_jobs(name_contains=""):
        if status.terminal and deps.registry.by_arn(status.arn) and not deps.registry.collected(status.arn):
            reports.append(collect_job(deps, status.arn))
    return reports


def _key_of(uri: str, bucket: str) -> str:
    return uri.removeprefix(f"s3://{bucket}/")


def _output_lines(deps: CollectDeps, part: BatchPart) -> dict[str, dict[str, Any]]:
    """recordId -> Bedrock's output line, over every ``.jsonl.out`` file of the part."""
    lines: dict[str, dict[str, Any]] = {}
    for key in deps.files.keys(_key_of(part.output_uri, deps.bucket)):
        if key.endswith(".jsonl.out"):
            for line in _jsonl(deps.files.read(key) or b""):
                lines[str(line.get("recordId"))] = line
    return lines


def _item_messages(files: BatchFiles, part: BatchPart) -> dict[str, str]:
    """recordId (the item's digest) -> the bound work item's message, as ingest wrote it."""
    body = files.read(part.items_key)
    if body is None:
        raise RuntimeError(f"the items of {part.name} are missing ({part.items_key})")
    messages = (line for line in body.decode().splitlines() if line.strip())
    return {WorkItem.from_message(message).digest: message for message in messages}


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
    family = family_of(found[1].model_id)
    if family is None:
        raise RuntimeError(f"{found[1].model_id}: no batch record format")
    return [
        run_item(_with_answer(deps.runner, _answer(family, output, chunk.reason)), item)
        for item, output in _chunk_records(deps.files, chunk)
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
    touched = []
    for item, _ in _chunk_records(deps.files, chunk):
        if item_failed(
            deps.runner, item, body=body, reason=reason, receive_count=receive_count, last_receive=True
        ):
            touched.append(item.bound_job.job_id)
    return sorted(set(touched))


def _chunk_records(files: BatchFiles, chunk: BatchChunk) -> list[tuple[WorkItem, dict[str, Any] | None]]:
    body = files.read(chunk.records_key)
    if body is None:
        raise RuntimeError(f"{chunk.records_key} is gone")
    return [(WorkItem.from_message(line["item"]), line.get("output")) for line in _jsonl(body)]


def _answer(
    family: Family, line: Mapping[str, Any] | None, missing_reason: str
) -> ModelResponse | BedrockCallError:
    """A record's output, or Bedrock's reason it has none (an ``error`` object replaces ``modelOutput``:
    https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html), or, with no
    output line at all, the job's state."""
    if line is None:
        return BedrockCallError("BatchRecordNotProcessed", missing_reason, permanent=True)
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
    "chunk_key",
    "collect_job",
    "is_chunk_message",
    "record_chunk",
    "sweep",
]
