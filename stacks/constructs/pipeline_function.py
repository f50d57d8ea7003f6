"""A pipeline Lambda as the function catalogue describes it: Python 3.12 in the isolated subnets, JSON
logs in its own log group."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from bedrock_pipeline.function_catalogue import FunctionSpec


class PipelineFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: FunctionSpec,
        code: lambda_.Code,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        environment: dict[str, str],
        log_retention_days: int,
        on_failure: lambda_.IDestination | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention_days(log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        common = dict(
            timeout=cdk.Duration.seconds(spec.timeout_seconds),
            memory_size=spec.memory_mib,
            retry_attempts=spec.async_retry_attempts,
            on_failure=on_failure,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[security_group],
            environment=environment,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
        )
        self.function: lambda_.Function
        if spec.image_dockerfile is not None:
            # A container image for code whose dependencies exceed the 250 MB zip limit; built from
            # lambdas/ at deploy time (synth only stages the folder, no Docker needed here).
            self.function = lambda_.DockerImageFunction(
                self,
                "Function",
                code=lambda_.DockerImageCode.from_image_asset(
                    str(LAMBDAS_DIR),
                    file=spec.image_dockerfile,
                    cmd=[spec.handler],
                    exclude=_IMAGE_EXCLUDES,
                    # Built for the function's X86_64 architecture on any deploying machine (arm64 too).
                    platform=ecr_assets.Platform.LINUX_AMD64,
                ),
                architecture=lambda_.Architecture.X86_64,
                **common,  # type: ignore[arg-type]
            )
        else:
            self.function = lambda_.Function(
                self,
                "Function",
                runtime=lambda_.Runtime.PYTHON_3_12,
                architecture=lambda_.Architecture.X86_64,  # matches the manylinux x86_64 wheels bundled
                code=code,
                handler=spec.handler,
                **common,  # type: ignore[arg-type]
            )
            cdk.Validations.of(self.function).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-L1",
                    reason="Pinned to Python 3.12 on purpose: the bundled wheels (pydantic-core, tiktoken, "
                    "regex) are built for cp312 and the handlers are tested on 3.11/3.12.",
                )
            )
        cdk.Validations.of(self.function).acknowledge(
            *(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{policy}]",
                    reason=reason,
                )
                for policy, reason in _MANAGED_POLICIES.items()
            )
        )


LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
_IMAGE_EXCLUDES = ["**/__pycache__", "**/*.pyc"]
# What CDK attaches to a function in a VPC.
_MANAGED_POLICIES = {
    # Both AWS-managed policies also allow logs:CreateLogGroup/CreateLogStream/PutLogEvents on '*': a function
    # could write to any log group of the account, though Lambda sends its logs to the function's own group
    # (LoggingConfig). Replacing them with a hand-written role is possible but would not narrow the EC2
    # actions, which have no resource-level form here.
    "AWSLambdaBasicExecutionRole": "AWS-managed basic execution role: logs:CreateLogGroup/CreateLogStream/"
    "PutLogEvents on '*' (any log group of the account, not only the function's own, to which Lambda "
    "sends its logs); the VPC access role below grants the same logs actions anyway.",
    "AWSLambdaVPCAccessExecutionRole": "AWS-managed VPC role: ENI create/describe/delete, which the EC2 API "
    "only authorizes on '*', and the same logs actions on '*' as the basic execution role.",
}

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention_days(days: int) -> logs.RetentionDays:
    """The CloudWatch retention enum for a day count (only the values CloudWatch offers)."""
    if days not in _RETENTION:
        raise ValueError(f"log retention {days} days: choose one of {sorted(_RETENTION)}")
    return _RETENTION[days]
