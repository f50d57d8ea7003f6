"""Application inference profiles in the deployment: a setting lists the ARNs the pipeline may invoke
(each with the model or cross-region profile it copies), and the functions that call Bedrock are granted
the profile *and* the models behind it (User Guide, "Prerequisites for inference profiles"); ingest may
read the profiles (GetInferenceProfile) to price their calls."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template
from pydantic import ValidationError

from bedrock_pipeline import function_catalogue as catalogue
from stacks.platform import create_app
from stacks.settings import PlatformSettings
from tests.infra.conftest import TEST_CONTEXT

PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
CROSS_REGION = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/f6e5d4c3b2a1"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
INVOKE = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    profiles = {PROFILE: HAIKU, CROSS_REGION: f"us.{NOVA}"}
    context = {
        **TEST_CONTEXT,
        "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"], "application_inference_profiles": profiles},
    }
    platform = create_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    platform.app.synth()
    return Template.from_stack(platform.pipeline).to_json()


def _statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    (spec,) = [f for f in catalogue.FUNCTIONS if f.name == function]
    (role,) = [
        res["Properties"]["Role"]["Fn::GetAtt"][0]
        for res in template["Resources"].values()
        if res["Type"] == "AWS::Lambda::Function"
        and spec.handler
        in (res["Properties"].get("Handler"), *res["Properties"].get("ImageConfig", {}).get("Command", []))
    ]
    return [
        statement
        for res in template["Resources"].values()
        if res["Type"] == "AWS::IAM::Policy" and {"Ref": role} in res["Properties"]["Roles"]
        for statement in res["Properties"]["PolicyDocument"]["Statement"]
    ]


def _resources(template: dict[str, Any], function: str, actions: set[str]) -> set[str]:
    found: set[str] = set()
    for statement in _statements(template, function):
        granted = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if actions <= set(granted):
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            found |= {_render(r) for r in resources}
    return found


def _render(value: Any) -> str:
    """A resource as text: a string, or a join of strings and references (${AWS::AccountId})."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    separator, parts = value["Fn::Join"]
    return str(separator).join(_render(part) for part in parts)


@pytest.mark.parametrize("function", ["runner", "evaluator", "benchmark"])
def test_given_profiles_then_the_callers_may_invoke_each_profile_and_the_models_behind_it(
    pipeline: dict[str, Any], function: str
) -> None:
    resources = _resources(pipeline, function, INVOKE)
    assert {PROFILE, CROSS_REGION} <= resources
    assert f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}" in resources
    # The cross-region copy routes to the model in regions AWS picks: its profile and every region's model.
    assert f"arn:aws:bedrock:us-east-1:${{AWS::AccountId}}:inference-profile/us.{NOVA}" in resources
    assert f"arn:aws:bedrock:*::foundation-model/{NOVA}" in resources


def test_given_profiles_then_only_ingest_may_read_them_and_only_them(pipeline: dict[str, Any]) -> None:
    assert _resources(pipeline, "ingest", {"bedrock:GetInferenceProfile"}) == {PROFILE, CROSS_REGION}
    for function in ("runner", "evaluator", "benchmark"):
        assert _resources(pipeline, function, {"bedrock:GetInferenceProfile"}) == set()


@pytest.mark.parametrize(
    "profiles",
    [
        {"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x": HAIKU},  # a system profile
        {"a1b2c3d4e5f6": HAIKU},  # an id, not an ARN
        {PROFILE: PROFILE},  # what it copies must be a model or cross-region id
        {PROFILE: ""},
    ],
)
def test_given_a_bad_profile_setting_then_settings_refuse_it(profiles: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PlatformSettings(application_inference_profiles=profiles)
