"""A job's Bedrock batch input: per model, jobs of files in Bedrock's own record format (pure).

Layout in the prompt bucket (settings.BATCH_PREFIX)::

    batch/<job id>/input/<part>/records-<n>.jsonl   what Bedrock reads (one Bedrock job per part)
    batch/<job id>/output/<part>/                   where Bedrock writes <job>/*.jsonl.out, manifest.json.out
    batch/<job id>/items/<part>.jsonl               the part's bound work items, one per record

A record's ``recordId`` is its item's digest (32 hex characters: alphanumeric, as Bedrock's
format asks, and the same on every submission), which is how the collector finds the item again:
Bedrock does not keep the order of records in its output
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html). One model's records
are split into as few jobs, and each job into as few files, as Bedrock's per-job and per-file record
and size quotas allow, evenly, so that no job falls below the minimum a larger one met.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from bedrock_pipeline import settings
from bedrock_pipeline.batch.native import family_of, to_model_input
from bedrock_pipeline.domain import WorkItem

_T = TypeVar("_T")
# Bedrock job names: at most 63 characters, [a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}
# (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelInvocationJob.html).
_JOB_ID_CHARS_IN_NAME = 54


@dataclass(frozen=True)
class BatchLimits:
    max_records_per_file: int = settings.BATCH_MAX_RECORDS_PER_FILE
    max_records_per_job: int = settings.BATCH_MAX_RECORDS_PER_JOB
    max_file_bytes: int = settings.BATCH_MAX_FILE_BYTES
    max_job_bytes: int = settings.BATCH_MAX_JOB_BYTES


@dataclass(frozen=True)
class PlannedPart:
    """One Bedrock batch job to submit: its files and the items behind its records."""

    name: str
    model_id: str
    input_prefix: str
    output_prefix: str
    items_key: str
    files: tuple[tuple[str, bytes], ...]  # (key, JSONL body)
    items_body: bytes
    records: int


def job_prefix(job_id: str) -> str:
    return f"{settings.BATCH_PREFIX}{job_id}/"


def record_line(item: WorkItem) -> bytes:
    """One batch input line: Bedrock's ``{"recordId", "modelInput"}`` for the item's model."""
    family = family_of(item.model_id)
    if family is None:
        raise ValueError(f"{item.model_id}: no batch record format")
    line = {"recordId": item.digest, "modelInput": to_model_input(family, item.request)}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def plan_parts(
    job_id: str, items: Sequence[WorkItem], *, limits: BatchLimits = BatchLimits()
) -> list[PlannedPart]:
    """The Bedrock jobs that run ``items`` (bound, eligible), in model order of first appearance."""
    by_model: dict[str, list[WorkItem]] = {}
    for item in items:
        by_model.setdefault(item.model_id, []).append(item)
    parts: list[PlannedPart] = []
    prefix = job_prefix(job_id)
    for model_id, model_items in by_model.items():
        lines = [(record_line(item), item) for item in model_items]
        for group in _split(lines, limits.max_records_per_job, limits.max_job_bytes):
            name = f"{job_id[:_JOB_ID_CHARS_IN_NAME]}-b{len(parts) + 1}"
            input_prefix = f"{prefix}input/{name}/"
            files = tuple(
                (f"{input_prefix}records-{n}.jsonl", b"".join(line for line, _ in chunk))
                for n, chunk in enumerate(
                    _split(group, limits.max_records_per_file, limits.max_file_bytes), 1
                )
            )
            items_body = "".join(item.to_message() + "\n" for _, item in group).encode()
            parts.append(
                PlannedPart(
                    name=name,
                    model_id=model_id,
                    input_prefix=input_prefix,
                    output_prefix=f"{prefix}output/{name}/",
                    items_key=f"{prefix}items/{name}.jsonl",
                    files=files,
                    items_body=items_body,
                    records=len(group),
                )
            )
    return parts


def _split(lines: list[tuple[bytes, _T]], max_count: int, max_bytes: int) -> list[list[tuple[bytes, _T]]]:
    """``lines`` in as few even groups as keep each within ``max_count`` lines and ``max_bytes``."""
    if not lines:
        return []
    total = sum(len(line) for line, _ in lines)
    groups = max(math.ceil(len(lines) / max_count), math.ceil(total / max_bytes))
    while groups <= len(lines):
        split = _even(lines, groups)
        if all(sum(len(line) for line, _ in group) <= max_bytes for group in split):
            return split
        groups += 1
    raise ValueError(f"a record is larger than {max_bytes:,} bytes")


def _even(values: list[_T], groups: int) -> list[list[_T]]:
    size, extra = divmod(len(values), groups)
    out, start = [], 0
    for n in range(groups):
        end = start + size + (1 if n < extra else 0)
        out.append(values[start:end])
        start = end
    return out
