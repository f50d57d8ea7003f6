"""Properties of the network, data and MLflow stacks: placement, ingress, secrets, durability."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized


def _ingress_rules(synth: Synthesized) -> list[dict[str, Any]]:
    rules = [r["Properties"] for r in synth.all_resources("AWS::EC2::SecurityGroupIngress").values()]
    for group in synth.all_resources("AWS::EC2::SecurityGroup").values():
        rules.extend(group["Properties"].get("SecurityGroupIngress", []))
    return rules


def _container(synth: Synthesized, stack: str) -> dict[str, Any]:
    (task,) = synth.resources(stack, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    return container


def test_given_the_vpc_when_synthesized_then_it_has_no_nat_and_the_endpoints_the_workloads_call(
    synthesized: Synthesized,
) -> None:
    network = synthesized.json("network")["Resources"]
    assert not [r for r in network.values() if r["Type"] == "AWS::EC2::NatGateway"]
    services = json.dumps(
        [r["Properties"]["ServiceName"] for r in network.values() if r["Type"] == "AWS::EC2::VPCEndpoint"]
    )
    for name in ("bedrock-runtime", "sqs", "logs", "ecr.api", "ecr.dkr", "secretsmanager", "s3", "dynamodb"):
        assert f".{name}" in services, name
    synthesized.templates["network"].has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})


def test_given_every_security_group_when_ingress_is_read_then_nothing_is_open_to_the_internet(
    synthesized: Synthesized,
) -> None:
    for rule in _ingress_rules(synthesized):
        assert rule.get("CidrIp") not in ("0.0.0.0/0",) and rule.get("CidrIpv6") != "::/0", rule


def test_given_the_alb_when_synthesized_then_it_accepts_only_the_configured_cidrs(
    synthesized: Synthesized,
) -> None:
    (alb_sg,) = [
        g
        for lid, g in synthesized.resources("mlflow", "AWS::EC2::SecurityGroup").items()
        if lid.startswith("AlbSg")
    ]
    assert [(r["CidrIp"], r["FromPort"]) for r in alb_sg["Properties"]["SecurityGroupIngress"]] == [
        ("192.0.2.0/24", 80)
    ]


def test_given_postgres_when_synthesized_then_only_mlflow_reaches_5432_and_lambdas_reach_mlflow_5000(
    synthesized: Synthesized,
) -> None:
    rules = [r for r in _ingress_rules(synthesized) if "SourceSecurityGroupId" in r]
    postgres = [r for r in rules if r["FromPort"] == 5432]
    assert len(postgres) == 1 and "ServiceSg" in json.dumps(postgres[0]["SourceSecurityGroupId"])
    assert "PostgresSg" in json.dumps(postgres[0]["GroupId"])
    sources_5000 = {json.dumps(r["SourceSecurityGroupId"]) for r in rules if r["FromPort"] == 5000}
    assert any("AlbSg" in s for s in sources_5000)
    assert any("FunctionSg" in s for s in sources_5000)
    assert all("AlbSg" in s or "FunctionSg" in s for s in sources_5000)


def test_given_the_fargate_services_when_synthesized_then_they_run_isolated_without_public_ips(
    synthesized: Synthesized,
) -> None:
    for lid, service in synthesized.all_resources("AWS::ECS::Service").items():
        network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED", lid
        assert json.dumps(network["Subnets"]).count("workloadSubnet") == 2, lid


def test_given_postgres_when_deployed_then_one_writer_on_encrypted_backed_up_efs(
    synthesized: Synthesized,
) -> None:
    data = synthesized.templates["data"]
    data.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DesiredCount": 1,
            "DeploymentConfiguration": Match.object_like({"MinimumHealthyPercent": 0, "MaximumPercent": 100}),
        },
    )
    data.has_resource_properties(
        "AWS::EFS::FileSystem", {"Encrypted": True, "BackupPolicy": {"Status": "ENABLED"}}
    )
    data.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {"PosixUser": {"Uid": "999", "Gid": "999"}, "RootDirectory": Match.any_value()},
    )
    data.has_resource_properties(
        "AWS::ServiceDiscovery::Service",
        {"Name": "postgres", "DnsConfig": Match.object_like({"DnsRecords": [{"Type": "A", "TTL": 10}]})},
    )
    volume = synthesized.resources("data", "AWS::ECS::TaskDefinition")
    (task,) = volume.values()
    efs = task["Properties"]["Volumes"][0]["EFSVolumeConfiguration"]
    assert efs["TransitEncryption"] == "ENABLED" and efs["AuthorizationConfig"]["IAM"] == "ENABLED"


def test_given_the_containers_when_synthesized_then_secrets_come_from_secrets_manager_not_plain_env(
    synthesized: Synthesized,
) -> None:
    expected = {"data": {"POSTGRES_USER", "POSTGRES_PASSWORD"},
                "mlflow": {"DB_USERNAME", "DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                           "MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}}  # fmt: skip
    for stack, names in expected.items():
        container = _container(synthesized, stack)
        assert {s["Name"] for s in container["Secrets"]} == names
        assert all("secretsmanager" in json.dumps(s["ValueFrom"]) or "Ref" in json.dumps(s["ValueFrom"])
                   for s in container["Secrets"])  # fmt: skip
        plain = {e["Name"] for e in container.get("Environment", [])}
        assert not any(word in name for name in plain for word in ("PASSWORD", "SECRET", "USER"))


def test_given_mlflow_when_synthesized_then_the_server_contract_is_set(synthesized: Synthesized) -> None:
    env = {e["Name"]: e["Value"] for e in _container(synthesized, "mlflow")["Environment"]}
    assert env["MLFLOW_WORKERS"] == "1"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DB_HOST"] == "postgres.bedrock-mlflow.internal"
    assert "mlflow.bedrock-mlflow.internal:5000" in json.dumps(env["MLFLOW_ALLOWED_HOSTS"])
    assert "/mlflow-artifacts" in json.dumps(env["MLFLOW_ARTIFACTS_DESTINATION"])
    mlflow = synthesized.templates["mlflow"]
    mlflow.has_resource_properties(
        "AWS::ServiceDiscovery::Service",
        {"Name": "mlflow", "DnsConfig": Match.object_like({"DnsRecords": [{"Type": "A", "TTL": 10}]})},
    )
    mlflow.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {"Port": 5000, "HealthCheckPath": "/health", "Matcher": {"HttpCode": "200"}},
    )
    mlflow.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"LoadBalancerAttributes": Match.array_with([{"Key": "access_logs.s3.enabled", "Value": "true"}])},
    )
    mlflow.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {"TargetTrackingScalingPolicyConfiguration": Match.object_like(
            {"PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})},
    )  # fmt: skip
    synthesized.templates["data"].has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )
