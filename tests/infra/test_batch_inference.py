"""Bedrock batch inference in the pipeline stack (issue 20): the service role Bedrock assumes, who may
pass it, the state-change rule feeding the collector's queue, and the sweep schedule."""

from __future__ import annotations

import json
from typing import Any

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline import settings as pipeline
from tests.infra.conftest import Synthesized


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _batch_role(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (lid, role)
        for lid, role in synth.resources("pipeline", "AWS::IAM::Role").items()
        if lid.startswith("BatchInferenceRole")
    ]
    return found


def _function_id(synth: Synthesized, handler: str) -> str:
    (lid,) = [
        lid
        for lid, fn in synth.resources("pipeline", "AWS::Lambda::Function").items()
        if fn["Properties"].get("Handler") == handler
    ]
    return lid


def _statements_of_role(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synth.resources("pipeline", "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _role_of(synth: Synthesized, handler: str) -> str:
    fn = synth.resources("pipeline", "AWS::Lambda::Function")[_function_id(synth, handler)]
    return str(fn["Properties"]["Role"]["Fn::GetAtt"][0])


def test_the_service_role_is_bedrocks_for_this_accounts_batch_jobs_only(synthesized: Synthesized) -> None:
    _, role = _batch_role(synthesized)
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    conditions = statement["Condition"]
    assert conditions["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert "model-invocation-job/*" in json.dumps(conditions["ArnLike"]["aws:SourceArn"])


def test_the_service_role_reads_batch_inputs_and_writes_batch_outputs_only(synthesized: Synthesized) -> None:
    role_id, _ = _batch_role(synthesized)
    statements = _statements_of_role(synthesized, role_id)
    keys = {
        json.dumps(resource)
        for statement in statements
        for resource in _as_list(statement["Resource"])
        if "/" in json.dumps(resource)
    }
    assert keys and all("batch/*/input/*" in key or "batch/*/output/*" in key for key in keys)
    puts = [s for s in statements if "s3:PutObject" in _as_list(s["Action"])]
    assert puts and all("batch/*/output/*" in json.dumps(s["Resource"]) for s in puts)
    reads = [s for s in statements if "s3:GetObject*" in _as_list(s["Action"])]
    assert reads and all(
        "/input/*" in json.dumps(r) for s in reads for r in _as_list(s["Resource"]) if "/" in json.dumps(r)
    )
    assert not any(
        str(a).startswith(("bedrock:", "sqs:", "dynamodb:"))
        for s in statements
        for a in _as_list(s["Action"])
    )


def test_ingest_may_pass_only_that_role_and_only_to_bedrock(synthesized: Synthesized) -> None:
    role_id, _ = _batch_role(synthesized)
    passes = [
        (lid, statement)
        for lid, policy in synthesized.all_resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "iam:PassRole" in _as_list(statement["Action"])
    ]
    pipeline_passes = [(lid, s) for lid, s in passes if "Ingest" in lid or "BatchInference" in json.dumps(s)]
    (only,) = pipeline_passes
    _, statement = only
    assert statement["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}
    ingest = synthesized.resources("pipeline", "AWS::Lambda::Function")[
        _function_id(synthesized, "handlers.ingest.handler")
    ]
    env = ingest["Properties"]["Environment"]["Variables"]
    assert env[pipeline.ENV_BATCH_ROLE_ARN] == {"Fn::GetAtt": [role_id, "Arn"]}
    creates = [
        s
        for s in _statements_of_role(synthesized, _role_of(synthesized, "handlers.ingest.handler"))
        if "bedrock:CreateModelInvocationJob" in _as_list(s["Action"])
    ]
    (create,) = creates
    resources = json.dumps(create["Resource"])
    assert (
        "model-invocation-job/*" in resources and "foundation-model/" in resources and '"*"' not in resources
    )


def test_state_changes_of_batch_jobs_reach_the_collectors_queue(synthesized: Synthesized) -> None:
    rules = synthesized.resources("pipeline", "AWS::Events::Rule")
    (rule,) = [r for r in rules.values() if "EventPattern" in r["Properties"]]
    assert rule["Properties"]["EventPattern"] == {
        "source": [pipeline.BATCH_EVENT_SOURCE],
        "detail-type": [pipeline.BATCH_EVENT_DETAIL_TYPE],
    }
    (target,) = rule["Properties"]["Targets"]
    queue_id = target["Arn"]["Fn::GetAtt"][0]
    mappings = synthesized.resources("pipeline", "AWS::Lambda::EventSourceMapping").values()
    (mapping,) = [m for m in mappings if m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] == queue_id]
    assert mapping["Properties"]["FunctionName"] == {
        "Ref": _function_id(synthesized, catalogue.COLLECTOR.handler)
    }
    # The queue lets EventBridge (this rule) send to it.
    policies = synthesized.resources("pipeline", "AWS::SQS::QueuePolicy").values()
    assert any(
        {"Ref": queue_id} in p["Properties"]["Queues"] and "events.amazonaws.com" in json.dumps(p)
        for p in policies
    )


def test_a_schedule_sweeps_for_jobs_whose_event_was_lost(synthesized: Synthesized) -> None:
    rules = synthesized.resources("pipeline", "AWS::Events::Rule")
    (rule,) = [r for r in rules.values() if "ScheduleExpression" in r["Properties"]]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [_function_id(synthesized, catalogue.COLLECTOR.handler), "Arn"]}
