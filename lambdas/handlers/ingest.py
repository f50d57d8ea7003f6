"""Ingest Lambda: S3 notifications (via SQS) -> validated, split work items on the work queue.

A bad prompt file never raises here (its reasons go to results/<job>/errors.jsonl and the job's
parent run). What does raise returns the message to the queue with a growing delay and its reason
recorded for `dlq inspect`; a body that is not an S3 notification at all goes to the DLQ at once.
"""

from __future__ import annotations

from handlers.cold_start import lean_imports

with lean_imports():  # what the cold start imports, without GC passes (this handler imports no MLflow)
    from typing import Any

    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from bedrock_pipeline.use_cases.ingest import ingest_failed, ingest_prompt_file
    from handlers.queue_retries import describe_failure, queue_retries
    from handlers.runtime import core, logger, metrics
    from handlers.s3_events import MalformedEvent, object_refs_in_message


def _note(record: SQSRecord, reason: str) -> None:
    try:
        ingest_failed(
            core().ingest,
            body=record.body,
            reason=reason,
            receive_count=int(record.attributes.approximate_receive_count or 1),
        )
    except Exception:
        logger.exception("could not record the failure of an ingest message", extra={"reason": reason})


def record_handler(record: SQSRecord, poison: set[str]) -> None:
    try:
        refs = object_refs_in_message(record.body)
    except MalformedEvent as exc:
        poison.add(record.message_id)
        _note(record, f"not an S3 notification: {exc}")
        raise
    for ref in refs:
        try:
            report = ingest_prompt_file(core().ingest, ref.bucket, ref.key, etag=ref.etag)
        except Exception as exc:
            _note(record, f"s3://{ref.bucket}/{ref.key}: {describe_failure(exc)}")
            raise
        if report.skipped:
            logger.warning("prompt file skipped", extra={"reason": report.skipped})
            continue
        logger.info("prompt file ingested", extra={"bucket": ref.bucket, "key": ref.key, **report.__dict__})
        if report.duplicate:  # a redelivered event: its job was counted when it was first enqueued
            continue
        metrics.add_metric(name="WorkItemsEnqueued", unit=MetricUnit.Count, value=report.items)
        metrics.add_metric(name="RejectedLines", unit=MetricUnit.Count, value=report.rejected_lines)
        if report.rejected_reason:
            metrics.add_metric(name="RejectedFiles", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    poison: set[str] = set()  # per invocation: the local pump may run several in one process
    response = process_partial_response(
        event=event,
        record_handler=lambda record: record_handler(record, poison),
        processor=BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
        context=context,
    )
    queue_retries().back_off(event, response, immediate=poison)
    return response
