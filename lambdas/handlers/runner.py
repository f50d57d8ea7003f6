"""Runner Lambda: work items (SQS batches) -> Bedrock calls traced as MLflow runs.

Items of a batch run concurrently (bounded by settings.RUNNER_ITEM_CONCURRENCY) on one shared boto3
client and MLflow client; failures are reported per item so only they return to the queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlflow
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from bedrock_pipeline import settings
from bedrock_pipeline.jobs import WorkMessage
from handlers.runtime import logger, metrics, pipeline

processor = AsyncBatchProcessor(event_type=EventType.SQS)
_pool = ThreadPoolExecutor(max_workers=settings.RUNNER_ITEM_CONCURRENCY, thread_name_prefix="item")
_jobs_touched: set[str] = set()


async def record_handler(record: SQSRecord) -> None:
    message = WorkMessage.model_validate_json(record.body)
    outcome = await asyncio.get_running_loop().run_in_executor(_pool, pipeline(True).run_item, message)
    _jobs_touched.add(outcome.job_id)
    if outcome.duplicate:
        metrics.add_metric(name="DuplicateDeliveries", unit=MetricUnit.Count, value=1)
    else:
        name = "ItemsSucceeded" if outcome.succeeded else "ItemsFailed"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _jobs_touched.clear()
    try:
        response = async_process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        # Trace export is asynchronous: flush once per batch, before Lambda freezes the process.
        mlflow.flush_trace_async_logging()
    for job_id in sorted(_jobs_touched):
        if pipeline(True).finalize_if_complete(job_id) is not None:
            logger.info("job finalized", extra={"job_id": job_id})
    return response
