"""Where the CLI talks to: the local stack (default) or a deployed stack found by its outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import boto3

from bedrock_pipeline import settings
from local_stack.config import REGION, LocalStackConfig
from pipeline_cli.errors import CliError

# CloudFormation outputs of the deployed pipeline stack (docs/DEPLOY.md lists them).
DEPLOYED_STACK_NAME = os.environ.get("PIPELINE_STACK_NAME", "BedrockMlflow-Pipeline")
OUTPUT_BUCKET = "PromptBucketName"
OUTPUT_JOBS_TABLE = "JobsTableName"
OUTPUT_MLFLOW_URL = "MlflowUrl"


@dataclass(frozen=True)
class Target:
    name: str
    bucket: str
    jobs_table: str
    mlflow_uri: str
    client_kwargs: dict[str, Any]
    bedrock_endpoint: str | None = None  # the Bedrock emulator on the local stack; None: AWS's

    def client(self, service: str) -> Any:
        if service == "bedrock" and self.bedrock_endpoint:
            return boto3.client(service, **{**self.client_kwargs, "endpoint_url": self.bedrock_endpoint})
        return boto3.client(service, **self.client_kwargs)


def local_target(config: LocalStackConfig | None = None) -> Target:
    config = config or LocalStackConfig()
    return Target(
        name="local",
        bucket=settings.PROMPT_BUCKET_NAME,
        jobs_table=settings.JOBS_TABLE_NAME,
        mlflow_uri=config.mlflow_url,
        client_kwargs={
            "endpoint_url": config.moto_url,
            "region_name": REGION,
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
        },
        bedrock_endpoint=config.emulator_url,
    )


def deployed_target(stack_name: str = DEPLOYED_STACK_NAME) -> Target:
    cloudformation = boto3.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [k for k in (OUTPUT_BUCKET, OUTPUT_JOBS_TABLE) if k not in outputs]
    if missing:
        raise CliError(f"stack {stack_name} has no output(s) {', '.join(missing)}: is it deployed?")
    return Target(
        name=stack_name,
        bucket=outputs[OUTPUT_BUCKET],
        jobs_table=outputs[OUTPUT_JOBS_TABLE],
        mlflow_uri=outputs.get(OUTPUT_MLFLOW_URL, ""),
        client_kwargs={},
    )
