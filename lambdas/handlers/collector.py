"""Collector Lambda: Bedrock batch job state changes (EventBridge -> batch-events queue) and the
scheduled sweep -> chunks of the finished job's records on the work queue (use_cases/collect_batch.py).

A queue record is one EventBridge event ("Batch Inference Job State Change"); the schedule invokes the
function directly with a "Scheduled Event", which sweeps ListModelInvocationJobs for jobs whose event
never came. A failure returns the event to the queue with a growing delay and its reason recorded.
"""

from __future__ import annotations

from handlers.cold_start import lean_imports

with lean_imports():  # no MLflow here: the runners record the chunks
    import json
    from typing import Any

    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from bedrock_pipeline.use_cases.collect_batch import arn_of_event, collect_job, sweep
    from handlers.queue_retries import describe_failure, queue_retries
    from handlers.runtime import core, logger, metrics

SCHEDULED_EVENT = "Scheduled Event"  # EventBridge's detail-type for a schedule's invocation


def record_handler(record: SQSRecord) -> None:
    try:
        arn = arn_of_event(json.loads(record.body))
        if arn is None:
            logger.warning("an event without a batch job", extra={"body": record.body[:500]})
            return
        report = collect_job(core().collect, arn)
    except Exception as exc:
        count = int(record.attributes.approximate_receive_count or 1)
        try:
            core().ledger.note_failure(record.body, f"collector: {describe_failure(exc)}", count)
        except Exception:
            logger.exception("could not record the failure of a batch event")
        raise
    logger.info("batch job event", extra=report.__dict__)
    if not report.skipped:
        metrics.add_metric(name="BatchJobsCollected", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="BatchChunksSent", unit=MetricUnit.Count, value=report.chunks)


def on_schedule() -> dict[str, Any]:
    """The sweep: collect every finished job of ours whose state-change event never came."""
    reports = sweep(core().collect)
    logger.info("batch sweep", extra={"collected": [r.arn for r in reports]})
    metrics.add_metric(name="BatchJobsSwept", unit=MetricUnit.Count, value=len(reports))
    return {"collected": [r.arn for r in reports]}


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("detail-type") == SCHEDULED_EVENT:
        return on_schedule()
    response = process_partial_response(
        event=event,
        record_handler=record_handler,
        processor=BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
        context=context,
    )
    queue_retries().back_off(event, response)
    return response
