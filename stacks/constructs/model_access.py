"""Who may call which Bedrock models: the runner, evaluator and benchmark invoke the configured models,
application inference profiles and guardrails; ingest reads the profiles it prices.

Kept apart from the pipeline stack so every Bedrock resource grant, and its cdk-nag reason, is in one
place.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from stacks.settings import PlatformSettings, application_profile_resource_arns, bedrock_invoke_resource_arns

BEDROCK_INVOKE_ACTIONS = (
    "bedrock:InvokeModel",  # also authorizes Converse
    "bedrock:InvokeModelWithResponseStream",  # also authorizes ConverseStream
)
# A Converse call with a guardrailConfig is also authorized against the guardrail (User Guide, "Set up
# permissions to use Amazon Bedrock Guardrails": bedrock:ApplyGuardrail on the guardrail's ARN).
GUARDRAIL_ACTIONS = ("bedrock:ApplyGuardrail",)


def model_arns(scope: cdk.Stack, settings: PlatformSettings) -> list[str]:
    """The foundation models (and cross-region profiles) the settings name, as IAM resources."""
    return bedrock_invoke_resource_arns(
        settings.models, partition=scope.partition, region=scope.region, account=scope.account
    )


def grant_model_invocation(
    scope: cdk.Stack,
    settings: PlatformSettings,
    *,
    callers: list[lambda_.IFunction],
    ingest: lambda_.IFunction,
) -> None:
    """InvokeModel* on the models and application profiles to ``callers``; ApplyGuardrail on the
    configured guardrails; GetInferenceProfile on the profiles to ``ingest`` (which prices through them)."""
    arns = model_arns(scope, settings) + application_profile_resource_arns(
        settings.application_inference_profiles,
        partition=scope.partition,
        region=scope.region,
        account=scope.account,
    )
    arns = list(dict.fromkeys(arns))
    if settings.application_inference_profiles:
        # Ingest prices a call through an application profile as its model (model_catalog.py).
        ingest.add_to_role_policy(
            iam.PolicyStatement(
                actions=["bedrock:GetInferenceProfile"],
                resources=list(settings.application_inference_profiles),
            )
        )
    for fn in callers:
        fn.add_to_role_policy(iam.PolicyStatement(actions=list(BEDROCK_INVOKE_ACTIONS), resources=arns))
        if settings.guardrails:
            fn.add_to_role_policy(
                iam.PolicyStatement(actions=list(GUARDRAIL_ACTIONS), resources=list(settings.guardrails))
            )
        cdk.Validations.of(fn).acknowledge(
            *(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{arn}]",
                    reason="A cross-region inference profile routes to this model in regions AWS "
                    "chooses; the model id still pins the resource.",
                )
                for arn in arns
                if "*" in arn
            )
        )
