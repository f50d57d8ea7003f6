"""Evaluator Lambda: evaluation jobs (SQS batches from the evaluation queue) -> scored, compared models.

Each message is one job, run to the end inside the invocation (the function timeout is 15 minutes).
A job that can never run (invalid message, missing dataset, no usable rows) is parked in the DLQ with
its reason and counted as processed; anything else that fails goes back to the queue (partial batch).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import mlflow
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings
from bedrock_pipeline.evaluation.dead_letter import dead_letter_queue_url, reject
from bedrock_pipeline.evaluation.evaluate import Evaluator
from bedrock_pipeline.evaluation.job import JobRejected, parse_job
from handlers.runtime import environment, logger, metrics, model_core

processor = BatchProcessor(event_type=EventType.SQS)


class EvaluatorEnvironment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    evaluation_queue_url: str = Field(alias=settings.ENV_EVALUATION_QUEUE_URL, pattern=r"^https?://")


@functools.cache
def evaluator_environment() -> EvaluatorEnvironment:
    return EvaluatorEnvironment.model_validate(dict(os.environ))


@functools.cache
def evaluator() -> Evaluator:
    core = model_core()
    return Evaluator(
        s3=core.s3, tracker=core.recorder, prices=core.prices, gateway=core.gateway, bucket=core.bucket
    )


@functools.cache
def dlq_url() -> str:
    return dead_letter_queue_url(model_core().sqs, evaluator_environment().evaluation_queue_url)


def record_handler(record: SQSRecord) -> None:
    fallback_id = "eval-" + hashlib.sha256(record.message_id.encode()).hexdigest()[:12]
    try:
        job = parse_job(record.body, default_bucket=environment().prompt_bucket, fallback_job_id=fallback_id)
        logger.info("evaluation job started", extra={"job_id": job.job_id, "models": job.models})
        report = evaluator().run(job)
    except JobRejected as rejection:
        reject(
            sqs=model_core().sqs,
            dead_letter_queue_url=dlq_url(),
            store=evaluator().store,
            body=record.body,
            message_id=record.message_id,
            rejection=rejection,
        )
        metrics.add_metric(name="EvaluationJobsRejected", unit=MetricUnit.Count, value=1)
        return
    if report.budget_stopped:
        metrics.add_metric(name="EvaluationJobsOverBudget", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="EvaluationJobsCompleted", unit=MetricUnit.Count, value=1)
    logger.info(
        "evaluation job finished",
        extra={
            "job_id": report.job_id,
            "budget_stopped": report.budget_stopped,
            "best_model": report.comparison.best.model_id if report.comparison else None,
        },
    )


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    evaluator_environment()  # a missing variable fails here, with its name
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        # Each trace went out as its root span ended (runtime.py turns MLflow's async trace queue off),
        # so this returns at once; it matters only if MLFLOW_ENABLE_ASYNC_TRACE_LOGGING is turned back
        # on: nothing may wait in a frozen process.
        mlflow.flush_trace_async_logging()
