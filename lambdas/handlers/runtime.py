"""What every handler shares: Powertools Logger/Metrics (created once), the environment contract
validated at cold start, and the `Core` (adapters and the use cases' dependencies) built once per
execution environment."""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parameters import get_secret
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bedrock_pipeline import settings
from bedrock_pipeline.batch.adapters import BedrockBatchJobs, DynamoBatchRegistry, S3BatchFiles
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.media_store import S3MediaStore
from bedrock_pipeline.pace_policy import PacePolicy, pacing_mode, parse_model_rpm
from bedrock_pipeline.ports import ModelCatalog, ModelGateway
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.storage import S3AnswerCache, S3PromptSource, S3ResultStore
from bedrock_pipeline.use_cases.collect_batch import ChunkDeps, CollectDeps
from bedrock_pipeline.use_cases.finalize import FinalizeDeps
from bedrock_pipeline.use_cases.ingest import IngestDeps
from bedrock_pipeline.use_cases.paced_calls import PacedGateway, Pacing
from bedrock_pipeline.use_cases.run_item import CallDeps, OncePerItem, RunnerDeps
from bedrock_pipeline.use_cases.submit_batch import BatchDeps
from bedrock_pipeline.work_queue import ItemBodies, SqsWorkQueue

if TYPE_CHECKING:  # the MLflow adapter is imported when the core is built, not at cold start
    from bedrock_pipeline.tracking import RunTracker

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
    default_execution_mode: Literal["on_demand", "batch", "auto"] = Field(
        default=settings.DEFAULT_EXECUTION_MODE, alias=settings.ENV_DEFAULT_EXECUTION_MODE
    )
    batch_role_arn: str = Field(default="", alias=settings.ENV_BATCH_ROLE_ARN)
    retry_base_seconds: int = Field(
        default=settings.RETRY_BASE_SECONDS, ge=0, le=43_200, alias=settings.ENV_RETRY_BASE_SECONDS
    )
    retry_max_seconds: int = Field(
        default=settings.RETRY_MAX_SECONDS, ge=0, le=43_200, alias=settings.ENV_RETRY_MAX_SECONDS
    )
    # Read by fan_out.item_pool; validated here so a bad value fails the cold start, not a batch.
    runner_item_concurrency: int = Field(
        default=settings.RUNNER_ITEM_CONCURRENCY, ge=1, le=100, alias=settings.ENV_RUNNER_ITEM_CONCURRENCY
    )

    # None: "adaptive" if any quota is given, else settings.BEDROCK_PACING (`pacing_mode`)
    bedrock_pacing: Literal["adaptive", "off"] | None = Field(default=None, alias=settings.ENV_BEDROCK_PACING)
    bedrock_model_rpm: str = Field(default="", alias=settings.ENV_BEDROCK_MODEL_RPM)
    bedrock_target_utilisation: float = Field(
        default=settings.BEDROCK_TARGET_UTILISATION, gt=0, le=1, alias=settings.ENV_BEDROCK_TARGET_UTILISATION
    )
    bedrock_pacing_max_hold_seconds: float = Field(
        default=settings.BEDROCK_PACING_MAX_HOLD_SECONDS,
        ge=0,
        le=settings.RUNNER_TIMEOUT_SECONDS / 2,
        alias=settings.ENV_BEDROCK_PACING_MAX_HOLD_SECONDS,
    )

    @field_validator("bedrock_model_rpm")
    @classmethod
    def _model_rpm_parses(cls, value: str) -> str:
        parse_model_rpm(value)  # raises with the offending part
        return value

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.default_models.split(",") if m.strip())

    @property
    def paced(self) -> bool:
        known = parse_model_rpm(self.bedrock_model_rpm)
        return pacing_mode(self.bedrock_pacing, known, settings.BEDROCK_PACING) == "adaptive"

    def pace_policy(self) -> PacePolicy:
        return PacePolicy(
            known_rpm=parse_model_rpm(self.bedrock_model_rpm),
            target_utilisation=self.bedrock_target_utilisation,
            start_rpm=settings.PACING_START_RPM,
            unknown_ceiling_rpm=settings.PACING_UNKNOWN_CEILING_RPM,
            recovery_s=settings.PACING_RECOVERY_SECONDS,
            decrease_factor=settings.PACING_DECREASE_FACTOR,
            probe_per_minute=settings.PACING_PROBE_PER_MINUTE,
            probe_span=settings.PACING_PROBE_SPAN,
            cooldown_s=settings.PACING_COOLDOWN_SECONDS,
            max_lag_s=settings.PACING_MAX_LAG_SECONDS,
        )


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


@dataclass(frozen=True)
class Core:
    """The adapters, built once per execution environment (clients are reused across invocations), and
    the use cases' dependencies made of them."""

    s3: Any
    sqs: Any
    bucket: str
    prices: PriceTable
    recorder: RunTracker
    ledger: JobLedger
    default_models: tuple[str, ...]
    work_queue_url: str
    gateway: ModelGateway | None = None  # only where tracing and the Bedrock client are set up
    once: OncePerItem | None = None
    models: ModelCatalog | None = None  # what the account offers, read at ingest's first check
    default_mode: str = settings.DEFAULT_EXECUTION_MODE
    batch_role_arn: str = ""  # empty: batch inference is not set up (every job runs on demand)

    @functools.cached_property
    def batch(self) -> BatchDeps | None:
        """Bedrock batch inference, when the deployment gave a service role for it."""
        if not self.batch_role_arn:
            return None
        return BatchDeps(
            jobs=self.batch_jobs,
            files=self.batch_files,
            registry=self.batch_registry,
            bucket=self.bucket,
            role_arn=self.batch_role_arn,
        )

    @functools.cached_property
    def batch_jobs(self) -> BedrockBatchJobs:
        from bedrock_pipeline.model_catalog import make_catalog_client

        return BedrockBatchJobs(make_catalog_client())

    @functools.cached_property
    def batch_files(self) -> S3BatchFiles:
        return S3BatchFiles(self.s3, self.bucket)

    @functools.cached_property
    def batch_registry(self) -> DynamoBatchRegistry:
        return DynamoBatchRegistry(self.ledger.dynamodb, self.ledger.table)

    @functools.cached_property
    def collect(self) -> CollectDeps:
        queue = SqsWorkQueue(self.sqs, self.work_queue_url, self.item_bodies)
        return CollectDeps(self.batch_jobs, self.batch_files, self.batch_registry, queue, self.bucket)

    @functools.cached_property
    def chunks(self) -> ChunkDeps:
        return ChunkDeps(self.runner, self.batch_files, self.batch_registry)

    pacing: Pacing | None = None  # the models' shared schedules (None: BEDROCK_PACING=off)

    @functools.cached_property
    def results(self) -> S3ResultStore:
        return S3ResultStore(self.s3, self.bucket)

    @functools.cached_property
    def media(self) -> S3MediaStore:
        return S3MediaStore(self.s3)

    @functools.cached_property
    def item_bodies(self) -> ItemBodies:
        return ItemBodies(self.s3, self.bucket)

    @functools.cached_property
    def ingest(self) -> IngestDeps:
        return IngestDeps(
            source=S3PromptSource(self.s3),
            queue=SqsWorkQueue(self.sqs, self.work_queue_url, self.item_bodies),
            ledger=self.ledger,
            recorder=self.recorder,
            results=self.results,
            prices=self.prices,
            default_models=self.default_models,
            models=self.models,
            media=self.media,
            default_mode=self.default_mode,
            batch=self.batch,
        )

    @functools.cached_property
    def calls(self) -> CallDeps:
        if self.gateway is None:
            raise RuntimeError("this core was built without the model gateway: use model_core()")
        return CallDeps(
            gateway=self.gateway,
            recorder=self.recorder,
            prices=self.prices,
            answers=S3AnswerCache(self.s3, self.bucket),
            media=self.media,
        )

    @functools.cached_property
    def runner(self) -> RunnerDeps:
        return RunnerDeps(
            call=self.calls, ledger=self.ledger, results=self.results, once=self.once, pacing=self.pacing
        )

    @functools.cached_property
    def finalize(self) -> FinalizeDeps:
        return FinalizeDeps(
            ledger=self.ledger,
            results=self.results,
            recorder=self.recorder,
            prices=self.prices,
            batch=self.batch_registry,
        )


# functools.cache does not lock: pollers running as threads of one process (the local event pump)
# would each build a core (and enable autolog) on their first batch. One build, under this lock.
_BUILD_LOCK = threading.Lock()


def core() -> Core:
    """The core without the model gateway (ingest: no tracing set up, cheaper to import)."""
    with _BUILD_LOCK:
        return _build_core(with_model=False)


def model_core() -> Core:
    """The core with Bedrock traced by MLflow (runner, evaluator, benchmark)."""
    with _BUILD_LOCK:
        return _build_core(with_model=True)


def reset_core() -> None:
    """Forget the cores built so far: the next call builds one from the current environment (tests).

    Under the build lock, and the environment forgotten with it: a poller of the local pump may be
    building right now from the environment as it was, and would otherwise store that core (and
    that environment) after this reset."""
    with _BUILD_LOCK:
        environment.cache_clear()
        _build_core.cache_clear()


@functools.cache
def _build_core(*, with_model: bool) -> Core:
    import mlflow  # deferred: the ingest path is cheaper to import without tracing set up
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from bedrock_pipeline.bedrock import BedrockGateway, make_bedrock_client
    from bedrock_pipeline.mlflow_internals.request_headers import ask_databricks_context_once
    from bedrock_pipeline.model_catalog import BedrockModelCatalog
    from bedrock_pipeline.pacer_store import DynamoCallPacer
    from bedrock_pipeline.trace_export import export_traces_at_once
    from bedrock_pipeline.tracking import RunTracker

    env = environment()
    mlflow.set_tracking_uri(env.mlflow_tracking_uri)
    ask_databricks_context_once()  # not once per tracking request (mlflow_internals)
    # Items of a batch run concurrently and the finalizer fetches results in parallel: size the pools.
    pooled = Config(max_pool_connections=32)
    dynamodb = boto3.client("dynamodb", config=pooled)
    gateway: ModelGateway | None = None
    pacing = None
    if with_model:
        mlflow.bedrock.autolog()  # before the client is created: autolog patches client creation
        export_traces_at_once()  # a record's spans in one request, not one each (trace_export.py)
        paced = env.paced
        gateway = BedrockGateway(make_bedrock_client(paced=paced))
        if paced:  # the schedules live in the job ledger's table, shared by every runner
            pacer = DynamoCallPacer(dynamodb, env.jobs_table, env.pace_policy().rules_for)
            pacing = Pacing(pacer, hold_seconds=env.bedrock_pacing_max_hold_seconds)
            gateway = PacedGateway(gateway, pacing)
    once = None
    if env.idempotency_table:
        once = OncePerItem.with_persistence(
            DynamoDBPersistenceLayer(table_name=env.idempotency_table, boto3_client=dynamodb)
        )
    return Core(
        s3=boto3.client("s3", config=pooled),
        sqs=boto3.client("sqs"),
        bucket=env.prompt_bucket,
        prices=PriceTable.load(),
        recorder=RunTracker(),
        ledger=JobLedger(dynamodb, env.jobs_table),
        default_models=env.models,
        work_queue_url=env.work_queue_url,
        gateway=gateway,
        once=once,
        models=BedrockModelCatalog(),  # lists nothing until ingest checks a file's models
        default_mode=env.default_execution_mode,
        batch_role_arn=env.batch_role_arn,
        pacing=pacing,
    )
