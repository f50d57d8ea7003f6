"""Ingest Lambda: S3 notifications (via SQS) -> validated, split work items on the work queue."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.runtime import logger, metrics, pipeline
from handlers.s3_events import objects_in_message

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    for bucket, key in objects_in_message(record.body):
        report = pipeline().ingest_object(bucket, key)
        logger.info("prompt file ingested", extra={"bucket": bucket, "key": key, **report.__dict__})
        metrics.add_metric(name="WorkItemsEnqueued", unit=MetricUnit.Count, value=report.items)
        metrics.add_metric(name="RejectedLines", unit=MetricUnit.Count, value=report.rejected_lines)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
