"""Issue #16, the pre-deploy security review: each point as a property of the synthesized templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline import settings as pipeline
from stacks.constructs import benchmark_schedule
from stacks.platform import create_app
from stacks.settings import PlatformSettings
from tests.infra.conftest import TEST_CONTEXT, Synthesized


def _depends_on(resource: dict[str, Any]) -> set[str]:
    value = resource.get("DependsOn", [])
    return set(value if isinstance(value, list) else [value])


# --- 1. PostgreSQL waits for its storage ---


def test_given_postgres_when_its_service_is_created_then_the_efs_mount_targets_and_nfs_rule_exist_first(
    synthesized: Synthesized,
) -> None:
    (service,) = synthesized.resources("data", "AWS::ECS::Service").values()
    mount_targets = set(synthesized.resources("data", "AWS::EFS::MountTarget"))
    nfs_rules = {
        lid
        for lid, rule in synthesized.resources("data", "AWS::EC2::SecurityGroupIngress").items()
        if rule["Properties"]["FromPort"] == 2049
    }
    assert mount_targets and nfs_rules
    assert mount_targets | nfs_rules <= _depends_on(service)


# --- 2. Images are built for the tasks' architecture ---


def test_given_every_container_image_asset_when_built_then_it_targets_linux_amd64(
    synthesized: Synthesized,
) -> None:
    images = {
        f"{manifest.name}/{asset_id}": asset["source"]
        for manifest in synthesized.outdir.glob("*.assets.json")
        for asset_id, asset in json.loads(manifest.read_text()).get("dockerImages", {}).items()
    }
    assert len(images) >= 2  # the MLflow and PostgreSQL images at least
    for name, source in images.items():
        assert source.get("platform") == "linux/amd64", name
    for lid, task in synthesized.all_resources("AWS::ECS::TaskDefinition").items():
        assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "X86_64", lid


# --- 3. No plain HTTP to real networks; the domain people use is an allowed host ---

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0b5d6a9e-1111-2222-3333-444455556666"


@pytest.mark.parametrize("cidrs", [["0.0.0.0/0"], ["203.0.113.0/24", "10.20.0.0/16"], ["198.51.0.0/16"]])
def test_given_real_cidrs_without_a_certificate_when_settings_are_read_then_synth_is_refused(
    cidrs: list[str],
) -> None:
    with pytest.raises(ValueError, match=r"allowed_cidrs .* certificate_arn is not set") as raised:
        PlatformSettings.from_context({"allowed_cidrs": cidrs})
    (error,) = raised.value.errors()  # type: ignore[attr-defined]
    assert "\n" not in error["msg"]


@pytest.mark.parametrize("cidrs", [["192.0.2.0/24", "198.51.100.0/25", "203.0.113.7/32"]])
def test_given_documentation_ranges_or_a_certificate_when_settings_are_read_then_they_are_accepted(
    cidrs: list[str],
) -> None:
    assert PlatformSettings.from_context({"allowed_cidrs": cidrs}).certificate_arn is None
    with_tls = PlatformSettings.from_context(
        {"allowed_cidrs": ["10.20.0.0/16"], "certificate_arn": CERTIFICATE}
    )
    assert with_tls.allowed_cidrs == ("10.20.0.0/16",)


def test_given_a_domain_name_when_synthesized_then_mlflow_accepts_it_as_host_and_the_url_uses_it(
    tmp_path: Path,
) -> None:
    context = {**TEST_CONTEXT, "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"],
               "certificate_arn": CERTIFICATE, "domain_name": "mlflow.example.com",
               "allowed_cidrs": ["10.20.0.0/16"]}}  # fmt: skip
    platform = create_app(context, outdir=str(tmp_path))
    template = Template.from_stack(platform.mlflow).to_json()
    (task,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    env = {e["Name"]: e["Value"] for e in task["Properties"]["ContainerDefinitions"][0]["Environment"]}
    assert "mlflow.example.com" in json.dumps(env["MLFLOW_ALLOWED_HOSTS"])
    assert template["Outputs"]["MlflowUrl"]["Value"] == "https://mlflow.example.com"


# --- 4. The pipeline has its own MLflow user; no Lambda reads the admin secret ---


def _secret_id(synth: Synthesized, construct_prefix: str) -> str:
    (lid,) = [
        lid
        for lid in synth.resources("data", "AWS::SecretsManager::Secret")
        if lid.startswith(construct_prefix)
    ]
    return lid


def _lambda_role_statements(synth: Synthesized) -> list[dict[str, Any]]:
    return [
        statement
        for lid, policy in synth.resources("pipeline", "AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "secretsmanager:GetSecretValue" in json.dumps(statement["Action"])
    ]


def test_given_the_lambdas_when_they_read_mlflow_credentials_then_only_the_pipeline_users_secret(
    synthesized: Synthesized,
) -> None:
    admin = _secret_id(synthesized, "MlflowAdminCredentials")
    pipeline_user = _secret_id(synthesized, "MlflowPipelineCredentials")
    statements = _lambda_role_statements(synthesized)
    assert statements
    for statement in statements:
        assert admin not in json.dumps(statement["Resource"])
        assert pipeline_user in json.dumps(statement["Resource"])
    for function in synthesized.resources("pipeline", "AWS::Lambda::Function").values():
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        if pipeline.ENV_MLFLOW_CREDENTIALS_SECRET_ARN in env:
            assert pipeline_user in json.dumps(env[pipeline.ENV_MLFLOW_CREDENTIALS_SECRET_ARN])
    # The MLflow task receives both users, so its start-up script can create and reconcile them.
    (task,) = synthesized.resources("mlflow", "AWS::ECS::TaskDefinition").values()
    secrets = {
        s["Name"]: json.dumps(s["ValueFrom"])
        for s in task["Properties"]["ContainerDefinitions"][0]["Secrets"]
    }
    assert (
        pipeline_user in secrets["MLFLOW_PIPELINE_PASSWORD"]
        and admin in secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]
    )


# --- 5. Credentials live and stay with the data they open ---


def test_given_the_credentials_when_a_stack_is_deleted_then_they_are_retained_in_the_data_stack(
    synthesized: Synthesized,
) -> None:
    secrets = synthesized.resources("data", "AWS::SecretsManager::Secret")
    for prefix in ("DatabaseCredentials", "MlflowAdminCredentials", "MlflowPipelineCredentials"):
        lid = _secret_id(synthesized, prefix)
        assert secrets[lid]["DeletionPolicy"] == "Retain", lid
        assert secrets[lid]["UpdateReplacePolicy"] == "Retain", lid
    # The MLflow stack keeps no user credential of its own (only its Flask key).
    assert all(
        not lid.startswith(("AdminCredentials", "Mlflow"))
        for lid in synthesized.resources("mlflow", "AWS::SecretsManager::Secret")
    )


# --- 7. A failed scheduled benchmark is recorded, not retried ---


def test_given_the_asynchronously_invoked_benchmark_when_it_fails_then_the_event_goes_to_a_queue(
    synthesized: Synthesized,
) -> None:
    resources = synthesized.json("pipeline")["Resources"]
    async_specs = [spec for spec in catalogue.FUNCTIONS if spec.async_retry_attempts is not None]
    assert catalogue.BENCHMARK in async_specs
    configs = synthesized.resources("pipeline", "AWS::Lambda::EventInvokeConfig").values()
    assert len(list(configs)) == len(async_specs)
    for config in configs:
        props = config["Properties"]
        assert props["MaximumRetryAttempts"] == 0
        destination = props["DestinationConfig"]["OnFailure"]["Destination"]
        queue_id = destination["Fn::GetAtt"][0]
        assert resources[queue_id]["Type"] == "AWS::SQS::Queue"
        assert resources[queue_id]["Properties"]["SqsManagedSseEnabled"] is True


# --- 8. Only transient objects expire in the prompt bucket ---


def test_given_the_prompt_bucket_when_objects_expire_then_only_incoming_results_and_batch_files_do(
    synthesized: Synthesized,
) -> None:
    (bucket,) = synthesized.resources("pipeline", "AWS::S3::Bucket").values()
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [rule for rule in rules if "ExpirationInDays" in rule]
    assert sorted(rule.get("Prefix") for rule in expiring) == sorted(
        [pipeline.INCOMING_PREFIX, pipeline.RESULTS_PREFIX, pipeline.BATCH_PREFIX]
    )
    assert not any(benchmark_schedule.SUITES_PREFIX.startswith(rule["Prefix"]) for rule in expiring)
    # Old versions and abandoned uploads are still cleaned up everywhere.
    assert any("NoncurrentVersionExpiration" in rule and "Prefix" not in rule for rule in rules)


# --- 9. Every alarm notifies someone; MLflow's health is watched ---


def test_given_every_alarm_when_it_fires_or_recovers_then_the_alarm_topic_is_notified(
    synthesized: Synthesized,
) -> None:
    (topic_id,) = synthesized.resources("data", "AWS::SNS::Topic")
    alarms = synthesized.all_resources("AWS::CloudWatch::Alarm")
    assert {lid.split("/")[0] for lid in alarms} >= {"data", "mlflow", "pipeline"}
    for lid, alarm in alarms.items():
        props = alarm["Properties"]
        for actions in (props.get("AlarmActions"), props.get("OKActions")):
            assert actions and topic_id in json.dumps(actions), lid


def test_given_mlflow_and_postgres_when_synthesized_then_unhealthy_targets_and_missing_tasks_alarm(
    synthesized: Synthesized,
) -> None:
    alarms = [a["Properties"] for a in synthesized.all_resources("AWS::CloudWatch::Alarm").values()]
    metrics = {(a["Namespace"], a["MetricName"]) for a in alarms}
    assert ("AWS/ApplicationELB", "UnHealthyHostCount") in metrics
    running = [a for a in alarms if a["MetricName"] == "RunningTaskCount"]
    services = {
        json.dumps(d["Value"]) for a in running for d in a["Dimensions"] if d["Name"] == "ServiceName"
    }
    assert any("Postgres" in s for s in services) and any(
        "Service" in s and "Postgres" not in s for s in services
    )
    assert all(a["ComparisonOperator"] == "LessThanThreshold" and a["TreatMissingData"] == "breaching"
               for a in running)  # fmt: skip


def test_given_an_alarm_email_when_synthesized_then_it_is_subscribed_to_the_topic(tmp_path: Path) -> None:
    context = {
        **TEST_CONTEXT,
        "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"], "alarm_email": "ops@example.com"},
    }
    platform = create_app(context, outdir=str(tmp_path))
    Template.from_stack(platform.data).has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


# --- 10. Bedrock concurrency follows the account's quotas ---


def test_given_runner_concurrency_settings_when_synthesized_then_event_source_and_item_threads_follow(
    tmp_path: Path,
) -> None:
    context = {**TEST_CONTEXT, "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"],
               "runner_max_concurrency": 3, "runner_item_concurrency": 4}}  # fmt: skip
    template = Template.from_stack(create_app(context, outdir=str(tmp_path)).pipeline).to_json()
    resources = template["Resources"]
    (runner_id,) = [lid for lid, r in resources.items()
                    if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == catalogue.RUNNER.handler]  # fmt: skip
    (mapping,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
                  and r["Properties"]["FunctionName"] == {"Ref": runner_id}]  # fmt: skip
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == 3
    env = resources[runner_id]["Properties"]["Environment"]["Variables"]
    assert env[pipeline.ENV_RUNNER_ITEM_CONCURRENCY] == "4"


def test_given_known_bedrock_quotas_when_synthesized_then_the_runner_paces_by_them(tmp_path: Path) -> None:
    from handlers.runtime import HandlerEnvironment

    quotas = {"amazon.nova-lite-v1:0": 600, "us.anthropic.claude-3-haiku-20240307-v1:0": 300}
    # (bedrock_pacing not set: giving the quotas turns pacing on)
    context = {**TEST_CONTEXT, "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"],
               "bedrock_model_rpm": quotas, "bedrock_target_utilisation": 0.9}}  # fmt: skip
    template = Template.from_stack(create_app(context, outdir=str(tmp_path)).pipeline).to_json()
    resources = template["Resources"]
    (runner,) = [r for r in resources.values()
                 if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == catalogue.RUNNER.handler]  # fmt: skip
    env = runner["Properties"]["Environment"]["Variables"]
    assert env[pipeline.ENV_BEDROCK_PACING] == "adaptive"
    # What the handler reads back at cold start is what was deployed.
    handler_env = HandlerEnvironment.model_validate(
        {
            **{k: v if isinstance(v, str) else "x" * 8 for k, v in env.items()},
            pipeline.ENV_MLFLOW_TRACKING_URI: "https://m",
        }
    )
    # The runner requeues an item its model has no room for: it may send to the work queue.
    role = runner["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [st for r in resources.values() if r["Type"] == "AWS::IAM::Policy"
                  and {"Ref": role} in r["Properties"]["Roles"]
                  for st in r["Properties"]["PolicyDocument"]["Statement"]]  # fmt: skip
    assert any("sqs:SendMessage" in st["Action"] for st in statements)
    assert handler_env.paced
    policy = handler_env.pace_policy()
    assert policy.known_rpm == {m: float(q) for m, q in quotas.items()} and policy.target_utilisation == 0.9
    with pytest.raises(ValueError):
        create_app({**TEST_CONTEXT, "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"],
                    "bedrock_model_rpm": {"amazon.nova-lite-v1:0": 0}}}, outdir=str(tmp_path / "bad"))  # fmt: skip


def test_given_the_item_concurrency_variable_when_the_runner_builds_its_pool_then_it_has_that_many_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bedrock_pipeline.use_cases.fan_out import item_pool

    monkeypatch.setenv(pipeline.ENV_RUNNER_ITEM_CONCURRENCY, "3")
    with item_pool() as pool:
        assert pool._max_workers == 3
    monkeypatch.delenv(pipeline.ENV_RUNNER_ITEM_CONCURRENCY)
    with item_pool() as pool:
        assert pool._max_workers == pipeline.RUNNER_ITEM_CONCURRENCY


# --- 11. Smaller points ---


def test_given_the_postgres_image_when_built_then_it_is_the_current_16_minor() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "containers" / "postgres" / "Dockerfile").read_text()
    (base,) = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert base == "postgres:16.16-bookworm"  # the 16.x minor current in November 2026


# --- 6. Egress stays on the paths the workloads use; gateway endpoints reach only this account ---


def _security_group_ids(synth: Synthesized) -> dict[str, str]:
    """Logical id of every security group of the app, by its stack-qualified id."""
    return dict((lid.split("/")[1], lid) for lid in synth.all_resources("AWS::EC2::SecurityGroup"))


def _egress_rules(synth: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    """(owning group's logical id, rule) for inline and standalone egress rules of every template."""
    rules: list[tuple[str, dict[str, Any]]] = []
    for lid, group in synth.all_resources("AWS::EC2::SecurityGroup").items():
        rules.extend((lid.split("/")[1], rule) for rule in group["Properties"].get("SecurityGroupEgress", []))
    for rule in synth.all_resources("AWS::EC2::SecurityGroupEgress").values():
        props = rule["Properties"]
        owner = json.dumps(props["GroupId"])
        (group_lid,) = [g for g in _security_group_ids(synth) if g in owner]
        rules.append((group_lid, props))
    return rules


def test_given_every_security_group_when_synthesized_then_none_allows_egress_to_anywhere(
    synthesized: Synthesized,
) -> None:
    rules = _egress_rules(synthesized)
    assert rules
    for owner, rule in rules:
        assert rule.get("CidrIp") != "0.0.0.0/0", owner
        assert rule.get("CidrIpv6") != "::/0", owner
        assert rule.get("IpProtocol") != "-1" or rule.get("CidrIp") == "255.255.255.255/32", owner


def _group(synth: Synthesized, prefix: str) -> str:
    (lid,) = [lid for lid in _security_group_ids(synth) if lid.startswith(prefix)]
    return lid


@pytest.mark.parametrize(
    ("source", "destination", "port"),
    [
        ("FunctionSg", "EndpointSg", 443),  # SQS, Secrets Manager, Bedrock runtime endpoints
        ("FunctionSg", "S3PrefixListLookup", 443),  # the prompt bucket through the S3 gateway
        ("FunctionSg", "DynamoDbPrefixListLookup", 443),  # jobs and idempotency tables
        ("FunctionSg", "ServiceSg", 5000),  # MLflow through Cloud Map
        ("ServiceSg", "EndpointSg", 443),  # ECR, logs, secrets
        ("ServiceSg", "S3PrefixListLookup", 443),  # image layers and the artifact bucket
        ("ServiceSg", "PostgresSg", 5432),
        ("PostgresSg", "EndpointSg", 443),
        ("PostgresSg", "S3PrefixListLookup", 443),  # image layers
        ("PostgresSg", "PgData", 2049),  # its data on EFS
    ],
)
def test_given_a_path_a_workload_needs_when_synthesized_then_an_egress_rule_allows_it(
    synthesized: Synthesized, source: str, destination: str, port: int
) -> None:
    owner = _group(synthesized, source)
    matching = [
        rule
        for group, rule in _egress_rules(synthesized)
        if group == owner
        and rule["IpProtocol"] == "tcp"
        and rule["FromPort"] <= port <= rule["ToPort"]
        and destination
        in json.dumps(rule.get("DestinationSecurityGroupId", rule.get("DestinationPrefixListId")))
    ]
    assert matching, f"{source} -> {destination}:{port}"


def _gateway_endpoint(synth: Synthesized, service: str) -> dict[str, Any]:
    (endpoint,) = [
        e["Properties"]
        for e in synth.resources("network", "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway"
        and f'.{service}"' in json.dumps(e["Properties"]["ServiceName"])
    ]
    return endpoint


def test_given_the_s3_gateway_endpoint_when_synthesized_then_it_reaches_only_this_accounts_buckets_and_ecr_layers(
    synthesized: Synthesized,
) -> None:
    statements = _gateway_endpoint(synthesized, "s3").get("PolicyDocument", {}).get("Statement", [])
    assert statements
    account = {"Ref": "AWS::AccountId"}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        conditions = statement.get("Condition", {})
        if conditions:
            assert conditions == {"StringEquals": {"s3:ResourceAccount": account}}, statement
        else:  # AWS's ECR layer bucket, read-only
            assert statement["Action"] == "s3:GetObject", statement
            assert "prod-us-east-1-starport-layer-bucket/*" in json.dumps(statement["Resource"]), statement
    assert any("s3:ResourceAccount" in json.dumps(s) for s in statements)


def test_given_the_dynamodb_gateway_endpoint_when_synthesized_then_it_reaches_only_this_accounts_tables(
    synthesized: Synthesized,
) -> None:
    statements = _gateway_endpoint(synthesized, "dynamodb").get("PolicyDocument", {}).get("Statement", [])
    assert statements
    for statement in statements:
        resource = json.dumps(statement["Resource"])
        assert "AWS::AccountId" in resource and ":table/" in resource, statement


def _acknowledgments(synth: Synthesized) -> list[tuple[str, str, str]]:
    """(construct path, acknowledged rule, reason) from every stack's cloud-assembly metadata."""
    found: list[tuple[str, str, str]] = []
    for metadata in synth.outdir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.extend((path, rule, reason) for rule, reason in entry["data"].items())
    return found


def test_given_the_basic_execution_role_when_acknowledged_then_the_reason_says_it_allows_any_log_group(
    synthesized: Synthesized,
) -> None:
    # AWSLambdaBasicExecutionRole (and the VPC access role) allow logs:CreateLogGroup, CreateLogStream and
    # PutLogEvents on "*": any log group of the account, not only the function's own.
    basic = [(p, r) for p, rule, r in _acknowledgments(synthesized) if "AWSLambdaBasicExecutionRole" in rule]
    assert basic
    for path, reason in basic:
        assert "own logs" not in reason, path
        assert "'*'" in reason and "any log group" in reason, path


def test_given_the_vpc_when_deployed_then_its_default_security_group_loses_its_rules(
    synthesized: Synthesized,
) -> None:
    # restrict_default_security_group: a CDK custom resource revokes the default group's allow-all rules.
    (restrict,) = synthesized.resources("network", "Custom::VpcRestrictDefaultSG").values()
    assert "DefaultSecurityGroup" in json.dumps(restrict["Properties"]["DefaultSecurityGroupId"])


def test_given_the_postgres_file_system_when_its_policy_is_read_then_only_the_task_role_may_mount_it(
    synthesized: Synthesized,
) -> None:
    (file_system,) = synthesized.resources("data", "AWS::EFS::FileSystem").values()
    (task,) = synthesized.resources("data", "AWS::ECS::TaskDefinition").values()
    task_role = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = file_system["Properties"]["FileSystemPolicy"]["Statement"]
    assert statements
    for statement in statements:
        assert statement["Principal"] == {"AWS": {"Fn::GetAtt": [task_role, "Arn"]}}, statement
        assert "elasticfilesystem:ClientRootAccess" not in json.dumps(statement["Action"]), statement
        assert statement["Condition"]["Bool"] == {"elasticfilesystem:AccessedViaMountTarget": "true"}


def test_given_the_access_log_bucket_when_s3_delivers_logs_then_only_for_this_accounts_buckets(
    synthesized: Synthesized,
) -> None:
    """Point 11: S3's log delivery (a service principal) may write here only on behalf of this account's
    buckets; the prompt bucket's own statement lives in another stack and cannot name its source."""
    (policy,) = [
        p
        for p in synthesized.resources("data", "AWS::S3::BucketPolicy").values()
        if "AccessLogs" in json.dumps(p["Properties"]["Bucket"])
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    guards = [
        s
        for s in statements
        if s["Effect"] == "Deny"
        and s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
        and "s3:PutObject" in json.dumps(s["Action"])
    ]
    assert guards, "no statement confines S3 log delivery to this account"
    (guard,) = guards
    assert guard["Condition"] == {"StringNotEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_given_guardrails_when_synthesized_then_only_the_model_callers_may_apply_them(tmp_path: Path) -> None:
    guardrail = "arn:aws:bedrock:us-east-1:111122223333:guardrail/abc123def456"
    context = {
        **TEST_CONTEXT,
        "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"], "guardrails": [guardrail]},
    }
    resources = Template.from_stack(create_app(context, outdir=str(tmp_path)).pipeline).to_json()["Resources"]
    roles_by_handler = {
        r["Properties"]["Handler"]: r["Properties"]["Role"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]
    }
    applying = {
        handler
        for handler, role in roles_by_handler.items()
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        for st in r["Properties"]["PolicyDocument"]["Statement"]
        if st["Action"] == "bedrock:ApplyGuardrail" and st["Resource"] == guardrail
    }
    callers = {catalogue.RUNNER.handler, catalogue.EVALUATOR.handler, catalogue.BENCHMARK.handler}
    assert applying == {h for h in roles_by_handler if h in callers} and applying
    with pytest.raises(ValueError, match="not a guardrail ARN"):
        create_app(
            {**TEST_CONTEXT, "bedrock_mlflow": {**TEST_CONTEXT["bedrock_mlflow"], "guardrails": ["abc123"]}},
            outdir=str(tmp_path / "bad"),
        )
