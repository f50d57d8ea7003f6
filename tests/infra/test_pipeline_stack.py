"""Properties of the pipeline stack: Bedrock access, environment, placement, encryption, wiring, ids."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from bedrock_pipeline import settings as pipeline
from stacks.constructs import benchmark_schedule
from tests.infra.conftest import Synthesized

HANDLERS = {
    "handlers.ingest.handler",
    "handlers.runner.handler",
    "handlers.evaluator.handler",
    "handlers.benchmark.handler",
    "handlers.collector.handler",
}
BEDROCK_ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]


def _handler(function: dict[str, Any]) -> str | None:
    """A zip function's Handler, or the command of a container-image function."""
    props = function["Properties"]
    return props.get("Handler") or (props.get("ImageConfig", {}).get("Command") or [None])[0]


def _pipeline_functions(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        lid: res
        for lid, res in synth.resources("pipeline", "AWS::Lambda::Function").items()
        if _handler(res) in HANDLERS
    }


def _statements(synth: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for lid, policy in synth.all_resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((lid, statement))
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_given_the_pipeline_when_synthesized_then_bedrock_is_granted_only_on_the_configured_model_arns(
    synthesized: Synthesized,
) -> None:
    expected = sorted(
        f"arn:aws:bedrock:us-east-1::foundation-model/{model}" for model in pipeline.DEFAULT_MODELS
    )
    bedrock = [(lid, s) for lid, s in _statements(synthesized) if "bedrock:Invoke" in json.dumps(s["Action"])]
    assert {lid.split("/")[1].split("Function")[0] for lid, _ in bedrock} == {
        "Runner",
        "Evaluator",
        "Benchmark",
    }
    for _, statement in bedrock:
        assert sorted(_as_list(statement["Action"])) == BEDROCK_ACTIONS
        assert sorted(_as_list(statement["Resource"])) == expected
    # Ingest only lists what the account offers (its model check); it never invokes a model.
    listing = [
        (lid, s)
        for lid, s in _statements(synthesized)
        if "bedrock:List" in json.dumps(s["Action"]) and "ModelInvocationJobs" not in json.dumps(s["Action"])
    ]
    assert {lid.split("/")[1].split("Function")[0] for lid, _ in listing} == {"Ingest"}
    for _, statement in listing:
        assert sorted(_as_list(statement["Action"])) == [
            "bedrock:ListFoundationModels",
            "bedrock:ListInferenceProfiles",
        ]


def test_given_every_policy_when_resources_are_read_then_star_is_used_only_where_aws_allows_nothing_else(
    synthesized: Synthesized,
) -> None:
    only_on_star = {
        "ecr:GetAuthorizationToken",  # the ECS execution roles' registry login
        "ec2:DescribeManagedPrefixLists",  # the network stack's prefix-list lookup (a Describe call)
        "bedrock:ListFoundationModels",  # ingest's model check: List actions take no resource type
        "bedrock:ListInferenceProfiles",
        "bedrock:ListModelInvocationJobs",  # the batch sweep: no resource type either
    }
    for lid, statement in _statements(synthesized):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= only_on_star, lid


# Event sources, timeouts, memory and queue visibility: tests/infra/test_catalogue_deployment.py.
# Stateful resources keep the logical ids they were deployed with: a new id makes CloudFormation create
# a new resource, and the retained bucket and jobs table (with their data) would be left behind.
DEPLOYED_LOGICAL_IDS = {
    "AWS::S3::Bucket": {"PromptsBucketC8F33F2C"},
    "AWS::DynamoDB::GlobalTable": {"IdempotencyC15CBC33", "JobsDF1CC2D4"},
    "AWS::SQS::Queue": {
        "IngestQueue88A12394",
        "IngestQueueDlqA9931369",
        "WorkQueueAD162499",
        "WorkQueueDlqD0816F74",
        "EvaluationQueue1E8CF1D2",
        "EvaluationQueueDlqAA19CABD",
        "BenchmarkAsyncFailures954378D8",  # added by issue #16 (the benchmark's on-failure destination)
        "BatchEventsQueueC8B1DFDE",  # added by issue #20 (Bedrock batch job state changes)
        "BatchEventsQueueDlqE7A0D629",
    },
    "AWS::CloudWatch::Dashboard": {"Dashboard9E4231ED"},  # named: a second one by that name would clash
}


@pytest.mark.parametrize("resource_type", sorted(DEPLOYED_LOGICAL_IDS))
def test_given_stateful_resources_when_synthesized_then_they_keep_their_deployed_logical_ids(
    synthesized: Synthesized, resource_type: str
) -> None:
    assert set(synthesized.resources("pipeline", resource_type)) == DEPLOYED_LOGICAL_IDS[resource_type]


def test_given_the_benchmark_prefixes_when_the_stack_names_them_then_they_are_the_handlers() -> None:
    """The stack cannot import the benchmark package (it imports MLflow), so it spells the prefixes."""
    from bedrock_pipeline.benchmark import settings as benchmark_settings

    assert benchmark_schedule.SUITES_PREFIX == benchmark_settings.SUITES_PREFIX
    assert benchmark_schedule.RESULTS_PREFIX == benchmark_settings.RESULTS_PREFIX


def test_given_the_functions_when_synthesized_then_environment_names_come_from_the_shared_settings(
    synthesized: Synthesized,
) -> None:
    functions = _pipeline_functions(synthesized)
    assert {_handler(f) for f in functions.values()} == HANDLERS
    for function in functions.values():
        props = function["Properties"]
        env = props["Environment"]["Variables"]
        assert env[pipeline.ENV_MLFLOW_TRACKING_URI] == "http://mlflow.bedrock-mlflow.internal:5000"
        assert env[pipeline.ENV_DEFAULT_MODELS] == ",".join(pipeline.DEFAULT_MODELS)
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"  # no calls to MLflow's public endpoints
        for name in (pipeline.ENV_PROMPT_BUCKET, pipeline.ENV_WORK_QUEUE_URL, pipeline.ENV_EVALUATION_QUEUE_URL,
                     pipeline.ENV_IDEMPOTENCY_TABLE, pipeline.ENV_JOBS_TABLE, pipeline.ENV_MLFLOW_CREDENTIALS_SECRET_ARN,
                     pipeline.ENV_BENCHMARK_SUITE, "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):  # fmt: skip
            assert name in env, name
        # The secret is referenced by ARN only; its value never reaches the environment.
        assert "Fn::GetStackOutput" in json.dumps(env[pipeline.ENV_MLFLOW_CREDENTIALS_SECRET_ARN])
        assert not any("PASSWORD" in key for key in env)
        if _handler(function) in ("handlers.evaluator.handler", "handlers.benchmark.handler"):
            # pandas + matplotlib for mlflow.genai.evaluate exceed the zip limit: a container image.
            assert props["PackageType"] == "Image"
        else:
            assert props["Runtime"] == "python3.12"
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert "LogGroup" in props["LoggingConfig"]


def test_given_the_functions_when_synthesized_then_they_run_in_the_isolated_subnets(
    synthesized: Synthesized,
) -> None:
    for function in _pipeline_functions(synthesized).values():
        subnets = json.dumps(function["Properties"]["VpcConfig"]["SubnetIds"])
        assert subnets.count("workloadSubnet") == 2
        assert "albSubnet" not in subnets


def test_given_the_data_stores_when_synthesized_then_queues_table_and_buckets_are_encrypted(
    synthesized: Synthesized,
) -> None:
    for lid, queue in synthesized.all_resources("AWS::SQS::Queue").items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, lid
    synthesized.templates["pipeline"].has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "Replicas": [
                Match.object_like({"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}})
            ],
        },
    )
    buckets = synthesized.all_resources("AWS::S3::Bucket")
    assert {lid.split("/")[0] for lid in buckets} == {"data", "pipeline"}
    for lid, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], lid
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}, lid
        assert props["VersioningConfiguration"]["Status"] == "Enabled", lid
        assert props["LifecycleConfiguration"]["Rules"], lid
        if "AccessLogs" not in lid:
            assert "LoggingConfiguration" in props, lid
    for lid, policy in synthesized.all_resources("AWS::S3::BucketPolicy").items():
        assert '"aws:SecureTransport": "false"' in json.dumps(policy), lid


def test_given_the_prompt_bucket_when_a_file_lands_in_incoming_then_the_ingest_queue_is_notified(
    synthesized: Synthesized,
) -> None:
    notifications = synthesized.resources("pipeline", "Custom::S3BucketNotifications")
    (config,) = [n["Properties"]["NotificationConfiguration"] for n in notifications.values()]
    (queue_config,) = config["QueueConfigurations"]
    assert queue_config["Events"] == ["s3:ObjectCreated:*"]
    assert queue_config["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": pipeline.INCOMING_PREFIX}
    ]
    assert queue_config["QueueArn"]["Fn::GetAtt"][0].startswith("IngestQueue")


def test_given_the_schedule_when_synthesized_then_it_invokes_the_benchmark_function(
    synthesized: Synthesized,
) -> None:
    synthesized.templates["pipeline"].has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "rate(1 day)",
            "Target": Match.object_like(
                {"Arn": {"Fn::GetAtt": [Match.string_like_regexp("^BenchmarkFunction"), "Arn"]}}
            ),
        },
    )


def test_given_the_pipeline_when_synthesized_then_dlq_age_and_error_alarms_and_a_dashboard_exist(
    synthesized: Synthesized,
) -> None:
    alarms = synthesized.resources("pipeline", "AWS::CloudWatch::Alarm").values()
    metrics = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in metrics
    assert ("AWS/Lambda", "Errors") in metrics
    assert synthesized.resources("pipeline", "AWS::CloudWatch::Dashboard")
