"""Answer every dataset row with every model through the runner's own `record_call`.

So an evaluation answer is recorded exactly like a batch call: its own child run under the job's
parent run, the same params/metrics/tags (`pipeline.kind = evaluation`) and a trace linked to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline.domain import CallError, CallOutcome, JobRef, ResultLine, WorkItem
from bedrock_pipeline.evaluation.job import DatasetRow, EvaluationJob
from bedrock_pipeline.ports import TransientItemError
from bedrock_pipeline.use_cases.fan_out import fan_out
from bedrock_pipeline.use_cases.run_item import CallDeps, record_call

logger = logging.getLogger(__name__)

TRANSIENT_ATTEMPTS = 2  # botocore already retried each call adaptively; then the row counts as failed


@dataclass(frozen=True)
class Answer:
    row: DatasetRow
    model_id: str
    line: ResultLine  # the runner's result line (Bedrock batch-inference output shape, extended)

    @property
    def ok(self) -> bool:
        return self.line.succeeded

    @property
    def text(self) -> str:
        return self.line.text

    @property
    def trace_id(self) -> str | None:
        return self.line.mlflow.trace_id


def converse_request(job: EvaluationJob, row: DatasetRow) -> dict[str, Any]:
    inference: dict[str, Any] = {"maxTokens": job.inference.max_tokens}
    if job.inference.temperature is not None:
        inference["temperature"] = job.inference.temperature
    if job.inference.top_p is not None:
        inference["topP"] = job.inference.top_p
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": [{"text": row.prompt}]}],
        "inferenceConfig": inference,
    }
    if job.system:
        request["system"] = [{"text": job.system}]
    return request


def work_items(job: EvaluationJob, job_ref: JobRef, rows: Sequence[DatasetRow]) -> list[WorkItem]:
    return [
        WorkItem(
            job=job_ref,
            record_id=row.record_id,
            line_number=row.line_number,
            model_id=model_id,
            request=converse_request(job, row),
            tags={**job.tags, **row.tags},
        )
        for model_id in job.models
        for row in rows
    ]


def answer_all(items: Sequence[WorkItem], rows: Sequence[DatasetRow], deps: CallDeps) -> list[Answer]:
    """Every item, concurrently and bounded like the runner (settings.RUNNER_ITEM_CONCURRENCY)."""
    by_id = {row.record_id: row for row in rows}

    def run(item: WorkItem) -> Answer:
        last = ""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return Answer(by_id[item.record_id], item.model_id, record_call(item, deps))
            except TransientItemError as exc:
                logger.warning(
                    "transient failure %s/%s (attempt %d): %s", item.record_id, item.model_id, attempt, exc
                )
                last = str(exc)
        line = ResultLine.for_item(item, CallOutcome(error=CallError("TransientError", last)))
        return Answer(by_id[item.record_id], item.model_id, line)

    return fan_out(items, run)
