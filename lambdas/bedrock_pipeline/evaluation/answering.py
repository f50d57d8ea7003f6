"""Answer every dataset row with every model through the batch runner's core (`runner.execute`).

So an evaluation answer is recorded exactly like a batch call: its own child run under the job's
parent run, the same params/metrics/tags (`pipeline.kind = evaluation`) and a trace linked to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.evaluation.job import DatasetRow, EvaluationJob
from bedrock_pipeline.jobs import JobRef, WorkMessage
from bedrock_pipeline.runner import RunnerDeps, TransientItemError, execute

logger = logging.getLogger(__name__)

TRANSIENT_ATTEMPTS = 2  # botocore already retried each call adaptively; then the row counts as failed


@dataclass(frozen=True)
class Answer:
    row: DatasetRow
    model_id: str
    line: dict[str, Any]  # the runner's result line (Bedrock batch-inference output shape, extended)

    @property
    def ok(self) -> bool:
        return "error" not in self.line

    @property
    def text(self) -> str:
        if not self.ok:
            return ""
        content = self.line["modelOutput"]["output"]["message"].get("content", [])
        return "".join(block.get("text", "") for block in content)

    @property
    def trace_id(self) -> str | None:
        return self.line.get("mlflow", {}).get("traceId")


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


def work_messages(job: EvaluationJob, job_ref: JobRef, rows: Sequence[DatasetRow]) -> list[WorkMessage]:
    return [
        WorkMessage(
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


def answer_all(messages: Sequence[WorkMessage], rows: Sequence[DatasetRow], deps: RunnerDeps) -> list[Answer]:
    """Run every message, concurrently and bounded like the runner (settings.RUNNER_ITEM_CONCURRENCY)."""
    by_id = {row.record_id: row for row in rows}

    def run(message: WorkMessage) -> Answer:
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return Answer(by_id[message.record_id], message.model_id, execute(message, deps))
            except TransientItemError as exc:
                logger.warning(
                    "transient failure %s/%s (attempt %d): %s",
                    message.record_id,
                    message.model_id,
                    attempt,
                    exc,
                )
                last = str(exc)
        error = {"errorCode": "TransientError", "errorMessage": last}
        line = {"recordId": message.record_id, "modelId": message.model_id, "error": error, "mlflow": {}}
        return Answer(by_id[message.record_id], message.model_id, line)

    with ThreadPoolExecutor(max_workers=settings.RUNNER_ITEM_CONCURRENCY, thread_name_prefix="eval") as pool:
        return list(pool.map(run, messages))
