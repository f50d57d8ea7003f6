"""What every handler shares: Powertools Logger/Metrics (created once), the environment contract
validated at cold start, and the core `Pipeline` built once per execution environment."""

from __future__ import annotations

import functools
import json
import os
import random
import threading
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parameters import get_secret
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings

SERVICE = "bedrock-pipeline"
# Backoff for items returned to the queue (ChangeMessageVisibility by receive count); see RELIABILITY.md.
logger = Logger(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "BedrockPipeline"), service=SERVICE
)


class HandlerEnvironment(BaseModel):
    """The environment contract; a missing variable fails the cold start with its name, not later."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    prompt_bucket: str = Field(alias=settings.ENV_PROMPT_BUCKET, min_length=3)
    jobs_table: str = Field(alias=settings.ENV_JOBS_TABLE, min_length=3)
    mlflow_tracking_uri: str = Field(alias=settings.ENV_MLFLOW_TRACKING_URI, pattern=r"^https?://")
    work_queue_url: str = Field(default="", alias=settings.ENV_WORK_QUEUE_URL)
    mlflow_credentials_secret_arn: str | None = Field(
        default=None, alias=settings.ENV_MLFLOW_CREDENTIALS_SECRET_ARN
    )
    default_models: str = Field(default=",".join(settings.DEFAULT_MODELS), alias=settings.ENV_DEFAULT_MODELS)
    idempotency_table: str = Field(default="", alias=settings.ENV_IDEMPOTENCY_TABLE)
    retry_base_seconds: int = Field(
        default=settings.RETRY_BASE_SECONDS, ge=0, le=43_200, alias=settings.ENV_RETRY_BASE_SECONDS
    )
    retry_max_seconds: int = Field(
        default=settings.RETRY_MAX_SECONDS, ge=0, le=43_200, alias=settings.ENV_RETRY_MAX_SECONDS
    )

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.default_models.split(",") if m.strip())


@functools.cache
def environment() -> HandlerEnvironment:
    env = HandlerEnvironment.model_validate(dict(os.environ))
    if env.mlflow_credentials_secret_arn:
        # MLflow's basic auth reads these variables; the secret itself never sits in the function config.
        credentials = json.loads(str(get_secret(env.mlflow_credentials_secret_arn, max_age=300)))
        os.environ["MLFLOW_TRACKING_USERNAME"] = credentials["username"]
        os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials["password"]
    os.environ.setdefault("MLFLOW_TRACKING_URI", env.mlflow_tracking_uri)
    # MlflowClient prints a run URL on set_terminated, which costs one more get_run request per run.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Items of a batch share one MLflow client across threads; the default pool (10) drops connections.
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", "32")
    # MLflow's client retries an unreachable server 7 times with backoff factor 2 (minutes per request);
    # a short wait is better here: the item goes back to the queue, which retries with its own backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Export traces inline, not through MLflow's process-wide async queue: that queue's flush (needed
    # before Lambda freezes the process) stops and restarts its consumer under one lock, costing up to
    # a second per batch, and batches that share a process (the local pump) queue behind each other's
    # flushes (docs/PERFORMANCE.md). The runner holds a batch's traces and exports them together when
    # the batch ends (bedrock_pipeline/trace_export.py), so nothing is left to flush after it.
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    return env


# functools.cache does not lock: pollers running as threads of one process (the local event pump)
# would each build a pipeline (and enable autolog) on their first batch. One build, under this lock.
_BUILD_LOCK = threading.Lock()


def pipeline(with_model: bool = False):  # type: ignore[no-untyped-def]
    """The core pipeline, built once per cold start (clients are reused across invocations)."""
    with _BUILD_LOCK:
        return _build_pipeline(with_model)


def reset_pipeline() -> None:
    """Forget the pipeline built so far: the next call builds one from the current environment (tests).

    Under the build lock, and the environment forgotten with it: a poller of the local pump may be
    building right now from the environment as it was, and would otherwise store that pipeline (and
    that environment) after this reset."""
    with _BUILD_LOCK:
        environment.cache_clear()
        _build_pipeline.cache_clear()


@functools.cache
def _build_pipeline(with_model: bool):  # type: ignore[no-untyped-def]
    import mlflow  # deferred: the ingest path is cheaper to import without tracing set up

    from bedrock_pipeline.bedrock import BedrockGateway, make_bedrock_client
    from bedrock_pipeline.ledger import JobLedger
    from bedrock_pipeline.pipeline import Pipeline
    from bedrock_pipeline.pricing import PriceTable
    from bedrock_pipeline.trace_export import export_traces_at_once
    from bedrock_pipeline.tracking import RunTracker, ask_databricks_context_once

    env = environment()
    mlflow.set_tracking_uri(env.mlflow_tracking_uri)
    ask_databricks_context_once()  # not once per tracking request (tracking.py)
    gateway = None
    if with_model:
        mlflow.bedrock.autolog()  # before the client is created: autolog patches client creation
        export_traces_at_once()  # a record's spans in one request, not one each (trace_export.py)
        gateway = BedrockGateway(make_bedrock_client())
    # Items of a batch run concurrently and the finalizer fetches results in parallel: size the pools.
    pooled = Config(max_pool_connections=32)
    dynamodb = boto3.client("dynamodb", config=pooled)
    return Pipeline(
        s3=boto3.client("s3", config=pooled),
        sqs=boto3.client("sqs"),
        ledger=JobLedger(dynamodb, env.jobs_table),
        tracker=RunTracker(),
        prices=PriceTable.load(),
        bucket=env.prompt_bucket,
        work_queue_url=env.work_queue_url,
        gateway=gateway,
        default_models=env.models,
        dynamodb=dynamodb,
        idempotency_table=env.idempotency_table,
    )


def retry_delay_seconds(receive_count: int, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Visibility timeout for an item returned to the queue: doubling per receive, capped, with jitter
    (half fixed, half random) so items throttled together do not come back together."""
    if base <= 0:
        return 0
    delay = min(cap, base * 2 ** max(0, receive_count - 1))
    return int(delay / 2 + (rng or random).uniform(0, delay / 2))


class QueueRetries:
    """What a handler does to the messages it reports as failed: back off by receive count, and knows
    when a receive is the last one before the DLQ (so the item can end as a failure with its reason)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self._queues: dict[str, tuple[str, int | None]] = {}

    def queue(self, queue_arn: str) -> tuple[str, int | None]:
        """(queue URL, maxReceiveCount or None without a DLQ) for an event source ARN; cached."""
        if queue_arn not in self._queues:
            _, _, _, _, account, name = queue_arn.split(":", 5)
            url = self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
            policy = json.loads(attributes.get("Attributes", {}).get("RedrivePolicy", "{}") or "{}")
            max_receive = int(policy["maxReceiveCount"]) if "maxReceiveCount" in policy else None
            self._queues[queue_arn] = (url, max_receive)
        return self._queues[queue_arn]

    def is_last_receive(self, queue_arn: str, receive_count: int) -> bool:
        max_receive = self.queue(queue_arn)[1]
        return max_receive is not None and receive_count >= max_receive

    def back_off(
        self,
        event: dict[str, Any],
        response: dict[str, Any],
        immediate: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """ChangeMessageVisibility on each failed message: growing delays by ApproximateReceiveCount;
        ``immediate`` ids (poison messages no retry can fix) come back at once, to reach the DLQ soon."""
        env = environment()
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for record in event.get("Records", []):
            message_id = record.get("messageId")
            if message_id not in failed:
                continue
            count = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = (
                0
                if message_id in immediate
                else retry_delay_seconds(count, env.retry_base_seconds, env.retry_max_seconds)
            )
            try:
                url, _ = self.queue(record["eventSourceARN"])
                self._sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=delay
                )
            except Exception:  # the queue's own visibility timeout still brings it back
                logger.exception("could not back off message %s", message_id)


@functools.cache
def queue_retries() -> QueueRetries:
    return QueueRetries(boto3.client("sqs"))


def describe_failure(exc: BaseException) -> str:
    """The reason recorded for a failed message: the exception and its cause, short."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:2000]
