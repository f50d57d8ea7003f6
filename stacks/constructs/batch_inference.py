"""Bedrock batch inference (issue 20): the service role Bedrock assumes, the state-change rule feeding
the collector's queue, the sweep schedule, and what ingest, the collector and the runner may do.

Built straight into the pipeline stack's scope. The service role is trusted by bedrock.amazonaws.com
only for batch jobs of this account (aws:SourceAccount, aws:SourceArn on model-invocation-job/*: the
confused-deputy conditions of https://docs.aws.amazon.com/bedrock/latest/userguide/batch-iam-sr.html)
and reaches the prompt bucket's batch/ prefix only; ingest may pass exactly that role, to Bedrock only.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from bedrock_pipeline import settings as pipeline
from stacks.constructs.scoped_grants import arn_token, grant_read_keys, grant_write_keys

BATCH_KEYS = f"{pipeline.BATCH_PREFIX}*"
BATCH_INPUT_KEYS = f"{pipeline.BATCH_PREFIX}*/input/*"
BATCH_OUTPUT_KEYS = f"{pipeline.BATCH_PREFIX}*/output/*"
BATCH_CHUNK_KEYS = f"{pipeline.BATCH_PREFIX}*/chunks/*"  # collect_batch.chunk_key
# What ingest calls to submit (CreateModelInvocationJob), and the collector to read a job's state.
SUBMIT_ACTION = "bedrock:CreateModelInvocationJob"  # on the job and the model it runs
GET_JOB_ACTION = "bedrock:GetModelInvocationJob"  # on the job
LIST_JOBS_ACTION = "bedrock:ListModelInvocationJobs"  # no resource type: "*" only


def add_batch_inference(
    scope: Construct,
    *,
    bucket: s3.Bucket,
    events_queue: sqs.IQueue,
    ingest: lambda_.Function,
    collector: lambda_.Function,
    runner: lambda_.Function,
    jobs_table: dynamodb.ITableV2,
    work_queue: sqs.IQueue,
    model_arns: list[str],
    sweep_schedule: str,
) -> iam.Role:
    stack = cdk.Stack.of(scope)
    jobs_arn = stack.format_arn(
        service="bedrock",
        resource="model-invocation-job",
        resource_name="*",
        arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
    )
    role = iam.Role(
        scope,
        "BatchInferenceRole",
        description="Assumed by Bedrock to run this pipeline's batch inference jobs (batch/ only)",
        assumed_by=iam.ServicePrincipal(
            "bedrock.amazonaws.com",
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": jobs_arn},
            },
        ),
    )
    bucket.grant_read(role, BATCH_INPUT_KEYS)
    bucket.grant_put(role, BATCH_OUTPUT_KEYS)
    cdk.Validations.of(role).acknowledge(
        *(
            cdk.Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
            for finding, reason in {
                "Action::s3:GetObject*": "Bedrock reads the batch input files, under batch/*/input/ only.",
                "Action::s3:GetBucket*": "Metadata of the prompt bucket, which holds the batch files.",
                "Action::s3:List*": "Bedrock lists the job's input prefix to find its .jsonl files.",
                "Action::s3:Abort*": "Bedrock's multipart uploads of outputs, under batch/*/output/ only.",
                f"Resource::{arn_token(bucket)}/{BATCH_INPUT_KEYS}": "Each job's input folder.",
                f"Resource::{arn_token(bucket)}/{BATCH_OUTPUT_KEYS}": "Each job's output folder.",
            }.items()
        )
    )

    # Ingest writes the input files and submits the jobs, passing this role and no other.
    grant_write_keys(bucket, ingest, BATCH_KEYS, why="Only batch/: the batch input files and their items.")
    ingest.add_to_role_policy(iam.PolicyStatement(actions=[SUBMIT_ACTION], resources=[jobs_arn, *model_arns]))
    ingest.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
        )
    )
    ingest.add_environment(pipeline.ENV_BATCH_ROLE_ARN, role.role_arn)
    # The collector reads job states, outputs and items and writes chunk files; a runner reads a chunk file.
    collector.add_to_role_policy(iam.PolicyStatement(actions=[GET_JOB_ACTION], resources=[jobs_arn]))
    collector.add_to_role_policy(iam.PolicyStatement(actions=[LIST_JOBS_ACTION], resources=["*"]))
    grant_read_keys(bucket, collector, BATCH_KEYS, why="Only batch/: job items and Bedrock's output files.")
    grant_write_keys(
        bucket, collector, BATCH_CHUNK_KEYS, why="Only batch/*/chunks/: the chunk files it writes."
    )
    jobs_table.grant_read_write_data(collector)  # which pipeline job a Bedrock job is; collected once
    work_queue.grant_send_messages(collector)  # the chunks
    grant_read_keys(
        bucket,
        runner,
        BATCH_CHUNK_KEYS,
        why="Only batch/*/chunks/: chunk files (items, Bedrock's output lines).",
    )
    jobs_finding = (
        f"Resource::arn:{_nag(stack.partition, 'Partition')}:bedrock:{_nag(stack.region, 'Region')}:"
        f"{_nag(stack.account, 'AccountId')}:model-invocation-job/*"
    )
    for fn in (ingest, collector):
        cdk.Validations.of(fn).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[{jobs_finding}]",
                reason="A batch job's ARN is made when it is created: this account's and region's jobs.",
            )
        )
    cdk.Validations.of(ingest).acknowledge(
        *(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{arn}]",
                reason="A cross-region inference profile routes to this model in regions AWS chooses; "
                "the model id still pins the resource.",
            )
            for arn in model_arns
            if "*" in arn
        )
    )
    cdk.Validations.of(collector).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="bedrock:ListModelInvocationJobs takes no resource type (Service Authorization "
            "Reference): the sweep lists the account's batch jobs, nothing else.",
        )
    )

    # Bedrock's state changes feed the collector's queue; the sweep finds jobs whose event was lost.
    events.Rule(
        scope,
        "BatchStateChanges",
        description="Bedrock batch inference job state changes -> the collector's queue",
        event_pattern=events.EventPattern(
            source=[pipeline.BATCH_EVENT_SOURCE], detail_type=[pipeline.BATCH_EVENT_DETAIL_TYPE]
        ),
        targets=[targets.SqsQueue(events_queue)],
    )
    events.Rule(
        scope,
        "BatchSweep",
        description="Collect finished batch jobs whose state-change event never came",
        schedule=events.Schedule.expression(sweep_schedule),
        targets=[targets.LambdaFunction(collector, retry_attempts=0)],
    )
    return role


def _nag(value: str, pseudo: str) -> str:
    """How cdk-nag writes a stack attribute in a finding: the value, or ``<AWS::Pseudo>`` when unresolved."""
    return f"<AWS::{pseudo}>" if cdk.Token.is_unresolved(value) else value
