"""The benchmark's schedule and its suites, shipped into the prompt bucket.

Built straight into the given scope (not under a construct of its own) so the schedule and the suite
deployment keep the logical ids they were deployed with.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from constructs import Construct

from stacks.constructs.scoped_grants import arn_token

SUITES_DIR = Path(__file__).resolve().parents[2] / "batch_prompts" / "benchmarks"
# bedrock_pipeline.benchmark.settings.SUITES_PREFIX and RESULTS_PREFIX, which the stack cannot import
# (that package imports MLflow); tests/infra keeps them equal.
SUITES_PREFIX = "benchmarks/"
RESULTS_PREFIX = "results/benchmarks/"


def schedule_benchmark(
    scope: Construct,
    *,
    function: lambda_.IFunction,
    bucket: s3.IBucket,
    schedule_expression: str,
    suite: str,
) -> tuple[scheduler.Schedule, s3deploy.BucketDeployment]:
    schedule = scheduler.Schedule(
        scope,
        "BenchmarkSchedule",
        schedule=scheduler.ScheduleExpression.expression(schedule_expression),
        target=scheduler_targets.LambdaInvoke(
            function,
            input=scheduler.ScheduleTargetInput.from_object({"suite": suite}),
            retry_attempts=0,  # a benchmark is not idempotent: a retry would double-run the suite
        ),
        description="Runs the benchmark suite on a schedule",
    )
    cdk.Validations.of(scope).acknowledge(
        cdk.Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::{arn_token(function)}:*]",
            reason="Scheduler target role: invoke the benchmark function (any version/alias of it).",
        )
    )
    # The benchmark handler reads its suites from the prompt bucket: ship them there.
    suites = s3deploy.BucketDeployment(
        scope,
        "BenchmarkSuites",
        sources=[s3deploy.Source.asset(str(SUITES_DIR), exclude=["*.md"])],
        destination_bucket=bucket,
        destination_key_prefix=SUITES_PREFIX,
        prune=False,
    )
    _acknowledge_suite_deployment(scope, bucket)
    return schedule, suites


def _acknowledge_suite_deployment(scope: Construct, bucket: s3.IBucket) -> None:
    # CDK's own deployment handler (a singleton custom resource at stack level) copies the asset.
    stack = cdk.Stack.of(scope)
    reasons = {
        "AwsSolutions-L1": "CDK's BucketDeployment handler: its runtime is chosen by aws-cdk-lib, "
        "it runs only during deployments.",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
            "CDK's BucketDeployment handler, run only while the stack deploys: the AWS-managed basic "
            "execution role allows logs:CreateLogGroup/CreateLogStream/PutLogEvents on '*' (any log group "
            "of the account, not only its own); CDK gives no way to replace it on this handler."
        ),
        **{
            f"AwsSolutions-IAM5[Action::s3:{action}]": "BucketDeployment's grant on the CDK asset "
            f"bucket and the prompt bucket (read the suite asset, write {SUITES_PREFIX})."
            for action in ("GetBucket*", "GetObject*", "List*", "Abort*", "DeleteObject*")
        },
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-"
        f"{stack.region}/*]": "The CDK bootstrap asset bucket, read-only, for the suite files.",
        f"AwsSolutions-IAM5[Resource::{arn_token(bucket)}/*]": "Objects of the prompt bucket (CDK scopes the "
        f"deployment role to the bucket; the handler writes under {SUITES_PREFIX} only).",
    }
    for child in stack.node.children:
        if child.node.id.startswith("Custom::CDKBucketDeployment"):
            cdk.Validations.of(child).acknowledge(
                *(cdk.Acknowledgment(id=rule, reason=reason) for rule, reason in reasons.items())
            )
