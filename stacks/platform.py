"""Composes the four stacks from typed settings; app.py and the tests call ``create_app``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from stacks.data import DataStack
from stacks.mlflow_service import MLFLOW_PORT, MlflowServiceStack
from stacks.network import NetworkStack
from stacks.pipeline import PipelineStack
from stacks.settings import CONTEXT_KEY, PlatformSettings

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"
STACK_PREFIX = "BedrockMlflow"


@dataclass(frozen=True)
class Platform:
    app: cdk.App
    settings: PlatformSettings
    network: NetworkStack
    data: DataStack
    mlflow: MlflowServiceStack
    pipeline: PipelineStack

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.network, self.data, self.mlflow, self.pipeline]


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context (feature flags + our settings): `python app.py` has no CLI to read it."""
    return dict(json.loads(path.read_text())["context"])


def build_platform(app: cdk.App) -> Platform:
    settings = PlatformSettings.from_context(app.node.try_get_context(CONTEXT_KEY))
    # Region-specific (ALB access logs need the region), account-agnostic: the same templates
    # deploy into any account, and synth needs no credentials or context lookups.
    common: dict[str, Any] = {
        "tags": {"project": settings.prefix},
        "env": cdk.Environment(region=settings.resolved_region(os.environ)),
    }
    network = NetworkStack(app, f"{STACK_PREFIX}-Network", settings=settings, **common)
    # What every workload's security group may reach besides its peers (stacks/constructs/egress.py).
    endpoints = {
        "endpoint_security_group": network.endpoint_security_group,
        "gateway_prefix_lists": network.gateway_prefix_lists,
    }
    data = DataStack(
        app,
        f"{STACK_PREFIX}-Data",
        settings=settings,
        vpc=network.vpc,
        namespace=network.namespace,
        endpoint_security_group=network.endpoint_security_group,
        # PostgreSQL uses no DynamoDB: S3 only, for its image layers.
        s3_prefix_list=network.gateway_prefix_lists["S3"],
        **common,
    )
    mlflow = MlflowServiceStack(
        app,
        f"{STACK_PREFIX}-Mlflow",
        settings=settings,
        vpc=network.vpc,
        namespace=network.namespace,
        cluster=data.cluster,
        artifact_bucket_name=data.artifact_bucket_name,
        log_bucket=data.log_bucket,
        database_secret=data.database_secret,
        admin_secret=data.mlflow_admin_secret,
        pipeline_secret=data.mlflow_pipeline_secret,
        database_host=data.database_host,
        database_port=data.database_port,
        database_name=data.database_name,
        postgres_service=data.postgres_service,
        alarm_topic=data.alarm_topic,
        endpoint_security_group=network.endpoint_security_group,
        s3_prefix_list=network.gateway_prefix_lists["S3"],
        **common,
    )
    pipeline = PipelineStack(
        app,
        f"{STACK_PREFIX}-Pipeline",
        settings=settings,
        vpc=network.vpc,
        log_bucket=data.log_bucket,
        mlflow_service=mlflow.service,
        mlflow_port=MLFLOW_PORT,
        # The pipeline's own MLflow user; no Lambda can read the admin secret.
        mlflow_credentials_secret=data.mlflow_pipeline_secret,
        alarm_topic=data.alarm_topic,
        **endpoints,
        **common,
    )
    return Platform(app, settings, network, data, mlflow, pipeline)


def create_app(context_overrides: dict[str, Any] | None = None, outdir: str | None = None) -> Platform:
    """The CDK app with cdk.json's context; ``CDK_OUTDIR`` (or ``outdir``) sets the output folder."""
    context = cdk_json_context()
    for key, value in (context_overrides or {}).items():
        if key == CONTEXT_KEY:
            context[key] = {**context.get(key, {}), **value}
        else:
            context[key] = value
    app = cdk.App(context=context, outdir=outdir or os.environ.get("CDK_OUTDIR"))
    return build_platform(app)
