"""What every handler shares: Powertools Logger/Metrics (created once), the environment contract
validated at cold start, and the core `Pipeline` built once per execution environment."""

from __future__ import annotations

import functools
import json
import os

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parameters import get_secret
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings

SERVICE = "bedrock-pipeline"
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
    return env


@functools.cache
def pipeline(with_model: bool = False):  # type: ignore[no-untyped-def]
    """The core pipeline, built once per cold start (clients are reused across invocations)."""
    import mlflow  # deferred: the ingest path is cheaper to import without tracing set up

    from bedrock_pipeline.bedrock import BedrockGateway, make_bedrock_client
    from bedrock_pipeline.ledger import JobLedger
    from bedrock_pipeline.pipeline import Pipeline
    from bedrock_pipeline.pricing import PriceTable
    from bedrock_pipeline.tracking import RunTracker

    env = environment()
    mlflow.set_tracking_uri(env.mlflow_tracking_uri)
    gateway = None
    if with_model:
        mlflow.bedrock.autolog()  # before the client is created: autolog patches client creation
        gateway = BedrockGateway(make_bedrock_client())
    # Items of a batch run concurrently and the finalizer fetches results in parallel: size the pools.
    pooled = Config(max_pool_connections=32)
    return Pipeline(
        s3=boto3.client("s3", config=pooled),
        sqs=boto3.client("sqs"),
        ledger=JobLedger(boto3.client("dynamodb", config=pooled), env.jobs_table),
        tracker=RunTracker(),
        prices=PriceTable.load(),
        bucket=env.prompt_bucket,
        work_queue_url=env.work_queue_url,
        gateway=gateway,
        default_models=env.models,
    )
