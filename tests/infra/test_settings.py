"""Typed settings: defaults synthesize, typos fail early, Bedrock ARNs are exact."""

from __future__ import annotations

import pydantic
import pytest

from bedrock_pipeline import settings as pipeline
from stacks.platform import cdk_json_context
from stacks.settings import CONTEXT_KEY, PlatformSettings, bedrock_invoke_resource_arns


def test_given_cdk_json_when_settings_are_read_then_they_validate_and_default_to_a_documentation_cidr() -> (
    None
):
    settings = PlatformSettings.from_context(cdk_json_context()[CONTEXT_KEY])
    assert settings.allowed_cidrs == ("192.0.2.0/24",)
    assert settings.models == pipeline.DEFAULT_MODELS
    assert settings.mlflow_tracking_uri == "http://mlflow.bedrock-mlflow.internal:5000"


@pytest.mark.parametrize(
    "override",
    [{"allowed_cidr": ["10.0.0.0/8"]}, {"allowed_cidrs": ["10.0.0.0/33"]}, {"vpc_cidr": "8.8.8.0/24"},
     {"schedule_expression": "daily"}, {"models": []}, {"bedrock_pacing": "on"}],
)  # fmt: skip
def test_given_a_bad_setting_when_settings_are_read_then_validation_fails(override: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings.from_context(override)


def test_given_quotas_when_pacing_is_not_set_then_the_runner_paces_by_them() -> None:
    assert PlatformSettings().resolved_pacing == "off"
    assert PlatformSettings(bedrock_model_rpm={"amazon.nova-lite-v1:0": 600}).resolved_pacing == "adaptive"
    told_off = PlatformSettings(bedrock_pacing="off", bedrock_model_rpm={"amazon.nova-lite-v1:0": 600})
    assert told_off.resolved_pacing == "off"


def test_given_task_cpus_when_workers_are_sized_then_one_per_vcpu() -> None:
    assert PlatformSettings(mlflow_cpu=512).mlflow_workers == 1
    assert PlatformSettings(mlflow_cpu=1024).mlflow_workers == 1
    assert PlatformSettings(mlflow_cpu=4096).mlflow_workers == 4


def test_given_models_and_profiles_when_arns_are_built_then_profiles_cover_every_region_of_their_model() -> (
    None
):
    arns = bedrock_invoke_resource_arns(
        (
            "amazon.nova-lite-v1:0",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "global.amazon.nova-2-lite-v1:0",
        ),
        partition="aws",
        region="us-west-2",
        account="123456789012",
    )
    assert arns == [
        "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-lite-v1:0",
        "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-west-2:123456789012:inference-profile/global.amazon.nova-2-lite-v1:0",
        "arn:aws:bedrock:*::foundation-model/amazon.nova-2-lite-v1:0",
        "arn:aws:bedrock:::foundation-model/amazon.nova-2-lite-v1:0",
    ]
