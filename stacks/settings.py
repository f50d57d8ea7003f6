"""Typed settings of the CDK app, read from cdk.json context (key ``bedrock_mlflow``).

Names, sizes and timeouts the handlers also depend on come from ``bedrock_pipeline.settings`` so the
deployed stack and the offline twin cannot drift apart; everything here only sizes the AWS side.
Every field has a default that synthesizes out of the box.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bedrock_pipeline import settings as pipeline
from bedrock_pipeline.pace_policy import pacing_mode

CONTEXT_KEY = "bedrock_mlflow"

# RFC 5737 TEST-NET-1: a documentation range nobody owns, so the default ALB is reachable from
# nowhere until the operator sets their own CIDRs (never 0.0.0.0/0 by default).
DOCUMENTATION_CIDR = "192.0.2.0/24"
# RFC 5737's three documentation ranges: reachable by nobody, so plain HTTP to them exposes nothing.
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(cidr) for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)

_APPLICATION_PROFILE_ARN = re.compile(
    r"arn:aws(-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:\d{12}:application-inference-profile/[a-z0-9]{1,64}"
)
# The guardrail ARN pattern of the bedrock-runtime service model's guardrailIdentifier, ARN branch.
_GUARDRAIL_ARN = re.compile(r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+")
# Cross-region (system-defined) inference profile ids carry a geography prefix.
_PROFILE_PREFIX = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.(?P<model>.+)$")


class PlatformSettings(BaseModel):
    """Everything an operator may tune in cdk.json without touching code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(default="bedrock-mlflow", pattern=r"^[a-z][a-z0-9-]{2,24}$")
    # The deployment region (ALB access logging and Bedrock ARNs need it at synth time); None means
    # the CLI's CDK_DEFAULT_REGION, else us-east-1.
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    vpc_cidr: str = "10.40.0.0/16"
    max_azs: int = Field(default=2, ge=2, le=3)
    namespace_name: str = "bedrock-mlflow.internal"
    allowed_cidrs: tuple[str, ...] = (DOCUMENTATION_CIDR,)
    certificate_arn: str | None = None
    # The name people use for MLflow (a DNS record pointing at the ALB, matching certificate_arn): MLflow
    # rejects Host headers it does not know, so it joins the allowed hosts, and the MlflowUrl output uses it.
    domain_name: str | None = Field(
        default=None, max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
    )
    # Extra Host headers MLflow accepts (e.g. further names in front of the ALB).
    extra_allowed_hosts: tuple[str, ...] = ()
    models: tuple[str, ...] = pipeline.DEFAULT_MODELS
    # Application inference profiles the pipeline may invoke (records name them by ARN), each with the
    # model or cross-region profile id it copies: IAM authorizes a call through an application profile
    # against the profile *and* the models it routes to (User Guide, "Prerequisites for inference
    # profiles"), so both are granted, and ingest may read the profile (GetInferenceProfile) to price it.
    application_inference_profiles: dict[str, str] = Field(default_factory=dict)
    # Guardrail ARNs records may name in guardrailConfig: Converse with a guardrail needs
    # bedrock:ApplyGuardrail on it (User Guide, "Set up permissions to use Amazon Bedrock Guardrails").
    guardrails: tuple[str, ...] = ()
    schedule_expression: str = "rate(1 day)"
    benchmark_suite: str = "default"
    # How a prompt file without a "mode" in its job header runs (README "Batch mode").
    default_execution_mode: Literal["on_demand", "batch", "auto"] = "on_demand"
    # How often the collector looks for finished batch jobs whose state-change event never came.
    batch_sweep_schedule: str = "rate(1 hour)"

    mlflow_cpu: int = 1024
    mlflow_memory_mib: int = 2048
    mlflow_min_tasks: int = Field(default=1, ge=1)
    mlflow_max_tasks: int = Field(default=2, ge=1)
    mlflow_target_cpu_percent: int = Field(default=60, ge=10, le=90)
    postgres_cpu: int = 512
    postgres_memory_mib: int = 1024
    postgres_database: str = "mlflow"
    postgres_username: str = "mlflow"
    mlflow_admin_username: str = "admin"
    # The pipeline Lambdas' MLflow user (not an admin); created by the MLflow image at start.
    mlflow_pipeline_username: str = Field(default="bedrock-pipeline", pattern=r"^[a-z][a-z0-9-]{2,63}$")

    # Function memory, batch sizes and concurrency are not settings here: the local event pump runs the
    # same functions, so they live in bedrock_pipeline.function_catalogue, shared by both. The one exception
    # is the runner's Bedrock concurrency below, which depends on the account's quotas.
    # Bedrock concurrency = runner_max_concurrency (Lambda instances on the work queue) x
    # runner_item_concurrency (calls each makes at once): at most 10 x 10 = 100 by default. Size the
    # product to the account's Bedrock quotas (requests and tokens per minute, per model and region;
    # Service Quotas console), divided by the models a job fans out to. None = the function catalogue's.
    runner_max_concurrency: int | None = Field(default=None, ge=2, le=1000)  # SQS event source limits
    runner_item_concurrency: int = Field(default=pipeline.RUNNER_ITEM_CONCURRENCY, ge=1, le=100)
    # Pacing under the quotas (README "Sizing to your Bedrock quotas"): every runner books its calls in
    # one schedule per model (in the jobs table). bedrock_model_rpm: the account's "On-demand model
    # inference requests per minute" quota per model or inference-profile id, as Service Quotas shows
    # it; a model not listed starts at a low rate and probes up. "off": botocore's adaptive retries.
    # Not set: "adaptive" once any quota is given, else "off" (`pacing_mode`).
    bedrock_pacing: Literal["adaptive", "off"] | None = None
    bedrock_model_rpm: dict[str, int] = Field(default_factory=dict)
    bedrock_target_utilisation: float = Field(default=pipeline.BEDROCK_TARGET_UTILISATION, gt=0, le=1)

    artifact_noncurrent_version_days: int = 30
    prompt_object_expiration_days: int = 180
    log_retention_days: int = pipeline.LOG_RETENTION_DAYS
    metrics_namespace: str = "BedrockMlflow"
    # Every alarm notifies one SNS topic; this address (if set) is subscribed to it (confirm the e-mail).
    alarm_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr_is_private(cls, value: str) -> str:
        if not ipaddress.ip_network(value).is_private:
            raise ValueError(f"vpc_cidr {value} is not a private range")
        return value

    @field_validator("bedrock_model_rpm")
    @classmethod
    def _quotas_are_positive(cls, value: dict[str, int]) -> dict[str, int]:
        for model_id, rpm in value.items():
            if rpm <= 0 or not model_id or "=" in model_id or "," in model_id:
                raise ValueError(f"bedrock_model_rpm: {model_id!r}: {rpm} is not a model id and a quota > 0")
        return value

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr)  # raises on a typo
        return value

    @model_validator(mode="after")
    def _no_plain_http_to_real_networks(self) -> PlatformSettings:
        # Basic-auth passwords travel in every request: without TLS they may only go to networks nobody owns.
        if self.certificate_arn is None:
            reachable = [cidr for cidr in self.allowed_cidrs if not _is_documentation_range(cidr)]
            if reachable:
                raise ValueError(
                    f"allowed_cidrs {reachable} reach real networks but certificate_arn is not set: "
                    "MLflow would serve basic-auth passwords over plain HTTP; set certificate_arn"
                )
        return self

    @field_validator("models")
    @classmethod
    def _models_present(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one model or inference-profile id is required")
        return value

    @field_validator("application_inference_profiles")
    @classmethod
    def _application_profile_arns(cls, value: dict[str, str]) -> dict[str, str]:
        for arn, model_id in value.items():
            if not _APPLICATION_PROFILE_ARN.fullmatch(arn):
                raise ValueError(
                    f"{arn!r} is not an application inference profile ARN "
                    "(arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>)"
                )
            if not model_id or model_id.startswith("arn:"):
                raise ValueError(
                    f"{arn}: give the model or cross-region profile id it copies, not {model_id!r}"
                )
        return value

    @field_validator("guardrails")
    @classmethod
    def _guardrail_arns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arn in value:
            if not _GUARDRAIL_ARN.fullmatch(arn):
                raise ValueError(
                    f"{arn!r} is not a guardrail ARN (arn:aws:bedrock:<region>:<account>:guardrail/<id>)"
                )
        return value

    @field_validator("schedule_expression")
    @classmethod
    def _schedule_syntax(cls, value: str) -> str:
        if not re.fullmatch(r"(rate|cron|at)\(.+\)", value):
            raise ValueError("schedule_expression must be rate(...), cron(...) or at(...)")
        return value

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> PlatformSettings:
        return cls.model_validate(dict(context or {}))

    def resolved_region(self, environ: Mapping[str, str]) -> str:
        return self.region or environ.get("CDK_DEFAULT_REGION") or "us-east-1"

    @property
    def resolved_pacing(self) -> str:
        return pacing_mode(self.bedrock_pacing, self.bedrock_model_rpm, pipeline.BEDROCK_PACING)

    @property
    def mlflow_workers(self) -> int:
        """Uvicorn workers per MLflow task: one per vCPU, at least one. Each worker runs up to 40 requests
        at once in threads; a second worker per CPU only competes for it (make throughput, server pinned to
        one CPU: 92-93 against 81-84 ms of server CPU per pipeline record; docs/PERFORMANCE.md)."""
        return max(1, self.mlflow_cpu // 1024)

    @property
    def mlflow_host(self) -> str:
        return f"mlflow.{self.namespace_name}"

    @property
    def postgres_host(self) -> str:
        return f"postgres.{self.namespace_name}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """What the Lambdas use: Cloud Map A records straight to the tasks, so the port is explicit."""
        return f"http://{self.mlflow_host}:5000"


def _is_documentation_range(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return any(
        network.version == doc.version and network.subnet_of(doc)  # type: ignore[arg-type]
        for doc in DOCUMENTATION_NETWORKS
    )


def split_inference_profile(model_id: str) -> tuple[str | None, str]:
    """Return (geography prefix or None, foundation-model id) of a model or inference-profile id."""
    match = _PROFILE_PREFIX.match(model_id)
    if match is None:
        return None, model_id
    return match.group(1), match.group("model")


def bedrock_invoke_resource_arns(
    model_ids: tuple[str, ...], *, partition: str, region: str, account: str
) -> list[str]:
    """IAM resources that let a role invoke exactly these models (and nothing else).

    A plain model id needs its foundation-model ARN in this region. A cross-region inference-profile
    id needs the profile ARN in this region *and* the foundation-model ARN in every region the profile
    may route to; the set of regions is AWS's to change, so the region is ``*`` (the model id still
    pins the resource). Global profiles additionally authorize against a region-less model ARN.
    """
    arns: list[str] = []
    for model_id in model_ids:
        geography, base = split_inference_profile(model_id)
        if geography is None:
            arns.append(f"arn:{partition}:bedrock:{region}::foundation-model/{base}")
            continue
        arns.append(f"arn:{partition}:bedrock:{region}:{account}:inference-profile/{model_id}")
        arns.append(f"arn:{partition}:bedrock:*::foundation-model/{base}")
        if geography == "global":
            arns.append(f"arn:{partition}:bedrock:::foundation-model/{base}")
    return list(dict.fromkeys(arns))


def application_profile_resource_arns(
    profiles: Mapping[str, str], *, partition: str, region: str, account: str
) -> list[str]:
    """IAM resources for invoking these application inference profiles: each profile's ARN and what
    its copied model or cross-region profile needs (bedrock_invoke_resource_arns)."""
    arns = list(profiles)
    arns += bedrock_invoke_resource_arns(
        tuple(profiles.values()), partition=partition, region=region, account=account
    )
    return list(dict.fromkeys(arns))
