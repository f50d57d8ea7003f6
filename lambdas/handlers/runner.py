"""Runner Lambda: work items (SQS batches) -> Bedrock calls traced as MLflow runs.

Items of a batch run concurrently (bounded by settings.RUNNER_ITEM_CONCURRENCY) on one shared boto3
client and MLflow client; failures are reported per item so only they return to the queue, each with
a growing visibility timeout and its reason recorded for `dlq inspect` (docs/RELIABILITY.md). The
batch's traces are exported together when it ends (bedrock_pipeline/trace_export.py).
"""

from __future__ import annotations

from handlers.cold_start import lean_imports

with lean_imports():  # what the cold start imports, without GC passes or MLflow's AI gateway
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
    from pydantic import ValidationError

    from bedrock_pipeline import settings
    from bedrock_pipeline.domain import WorkItem
    from bedrock_pipeline.ports import ThrottledItem
    from bedrock_pipeline.trace_export import holding_finished_traces
    from bedrock_pipeline.use_cases.collect_batch import (
        BatchChunk,
        chunk_failed,
        is_chunk_message,
        record_chunk,
    )
    from bedrock_pipeline.use_cases.fan_out import item_pool
    from bedrock_pipeline.use_cases.finalize import finalize_if_complete
    from bedrock_pipeline.use_cases.run_item import item_failed, malformed_message, run_item
    from bedrock_pipeline.work_queue import requeue
    from handlers.queue_retries import describe_failure, queue_retries
    from handlers.runtime import logger, metrics, model_core


def next_deferral(record: SQSRecord) -> int:
    """The deferral count a requeued copy of ``record`` carries: one more than the record's own."""
    # Indexing, not .get(): Powertools' SQSMessageAttributes wraps a value only in __getitem__ (a missing
    # key gives None); .get() returns the raw dict, which has no string_value: every second deferral
    # raised, silently, and the item went to the DLQ without ending (docs/PERFORMANCE.md).
    attribute = record.message_attributes[settings.PACING_DEFERRALS_ATTRIBUTE]
    return int((attribute.string_value if attribute is not None else None) or 0) + 1


class _Invocation:
    """Per-invocation state. On Lambda one process runs one invocation at a time; the local event pump
    may run several in one process (pollers as threads), so nothing here is module-global."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool  # this invocation's item threads
        self.jobs_touched: set[str] = set()
        self.poison: set[str] = set()

    def record_chunk(self, record: SQSRecord) -> None:
        """Each record of a batch chunk once; a failure returns the whole chunk (recorded records are
        then duplicates, which do nothing)."""
        chunk = BatchChunk.model_validate_json(record.body)
        try:
            outcomes = record_chunk(model_core().chunks, chunk)
        except Exception as exc:
            count = int(record.attributes.approximate_receive_count or 1)
            try:
                last = queue_retries().is_last_receive(record.event_source_arn, count)
                self.jobs_touched.update(
                    chunk_failed(
                        model_core().chunks,
                        chunk,
                        body=record.body,
                        reason=f"batch chunk: {describe_failure(exc)}",
                        receive_count=count,
                        last_receive=last,
                    )
                )
            except Exception:  # the chunk still returns to the queue; only the bookkeeping is missing
                logger.exception("could not record the failure of a batch chunk")
            raise
        for outcome in outcomes:
            self.jobs_touched.add(outcome.job_id)
            name = "DuplicateDeliveries" if outcome.duplicate else "BatchRecordsRecorded"
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)

    def after_failure(self, record: SQSRecord, item: WorkItem, exc: BaseException) -> None:
        """Record why, and on the last receive before the DLQ end the item as a failure with that reason."""
        reason = describe_failure(exc)
        receive_count = int(record.attributes.approximate_receive_count or 1)
        try:
            try:
                last = queue_retries().is_last_receive(record.event_source_arn, receive_count)
            except Exception:  # unknown: let the queue decide (the item can still end on a redrive)
                logger.exception("could not tell whether this was the last receive")
                last = False
            gave_up = item_failed(
                model_core().runner,
                item,
                body=record.body,
                reason=reason,
                receive_count=receive_count,
                last_receive=last,
            )
            if gave_up:
                self.jobs_touched.add(item.bound_job.job_id)
                metrics.add_metric(name="ItemsGaveUp", unit=MetricUnit.Count, value=1)
        except Exception:  # the message still returns to the queue; only the bookkeeping is missing
            logger.exception("could not record the failure of a work item", extra={"reason": reason})
        logger.warning(
            "work item returned to the queue",
            extra={"item_key": item.key, "receive_count": receive_count, "reason": reason},
        )

    def defer(self, record: SQSRecord, exc: ThrottledItem) -> bool:
        """Requeue an item its model has no room for as a fresh message (no receive spent). False past
        PACING_MAX_DEFERRALS (a quota that lets nothing through): the item then fails as any other."""
        deferrals = next_deferral(record)
        if deferrals > settings.PACING_MAX_DEFERRALS:
            return False
        url = queue_retries().queue(record.event_source_arn)[0]
        requeue(
            model_core().sqs, url, record.body, delay_seconds=exc.retry_after_seconds, deferrals=deferrals
        )
        metrics.add_metric(name="ItemsDeferred", unit=MetricUnit.Count, value=1)
        return True

    async def record_handler(self, record: SQSRecord) -> None:
        loop = asyncio.get_running_loop()
        if is_chunk_message(record.body):  # records of a finished Bedrock batch job (collect_batch.py)
            await loop.run_in_executor(self.pool, self.record_chunk, record)
            return
        try:
            # A large item's body is in S3 (work_queue.ItemBodies): read off the event loop.
            item = await loop.run_in_executor(self.pool, model_core().item_bodies.item_from, record.body)
        except (ValidationError, ValueError) as exc:
            # No retry can fix a malformed body: straight back (visibility 0) so it reaches the DLQ soon.
            self.poison.add(record.message_id)
            reason = f"malformed work message: {describe_failure(exc)}"
            count = int(record.attributes.approximate_receive_count or 1)
            await loop.run_in_executor(
                self.pool,
                lambda: malformed_message(
                    model_core().runner, body=record.body, reason=reason, receive_count=count
                ),
            )
            raise
        try:
            outcome = await loop.run_in_executor(self.pool, run_item, model_core().runner, item)
        except ThrottledItem as exc:
            try:
                deferred = await loop.run_in_executor(self.pool, self.defer, record, exc)
            except Exception as failure:  # not requeued: the queue's failure path, with its bookkeeping
                await loop.run_in_executor(self.pool, self.after_failure, record, item, failure)
                raise
            if deferred:
                return  # the fresh message carries the item; this one is deleted as done
            await loop.run_in_executor(self.pool, self.after_failure, record, item, exc)
            raise
        except Exception as exc:
            await loop.run_in_executor(self.pool, self.after_failure, record, item, exc)
            raise
        self.jobs_touched.add(outcome.job_id)
        if outcome.duplicate:
            metrics.add_metric(name="DuplicateDeliveries", unit=MetricUnit.Count, value=1)
        else:
            name = "ItemsSucceeded" if outcome.succeeded else "ItemsFailed"
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    core = model_core()
    if core.once is not None:
        core.once.register_lambda_context(context)

    with item_pool() as pool:
        invocation = _Invocation(pool)
        response = _process_batch(event, context, invocation)
    queue_retries().back_off(event, response, immediate=invocation.poison)
    for job_id in sorted(invocation.jobs_touched):
        if finalize_if_complete(core.finalize, job_id) is not None:
            logger.info("job finalized", extra={"job_id": job_id})
    return response


def _process_batch(event: dict[str, Any], context: LambdaContext, invocation: _Invocation) -> dict[str, Any]:
    async def record_handler(record: SQSRecord) -> None:
        await invocation.record_handler(record)

    try:
        # The batch's traces go out together when it ends: one span post, not one per item.
        with holding_finished_traces():
            response = async_process_partial_response(
                event=event,
                record_handler=record_handler,
                # Every item failing is still a partial response: back-off and bookkeeping below must run.
                processor=AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
                context=context,
            )
    finally:
        # The batch's traces went out as its hold ended (above), so this returns at once; it matters
        # only if MLFLOW_ENABLE_ASYNC_TRACE_LOGGING is turned back on: nothing may wait in a frozen process.
        mlflow.flush_trace_async_logging()
    return response
