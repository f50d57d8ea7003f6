"""The pipeline's AWS resources on moto, created idempotently under the names in settings.py.

Mirrors what the CDK app deploys: the prompt bucket notifying the ingest queue for ``incoming/``,
three queues each with a DLQ (redrive after MAX_RECEIVE_COUNT receives), and the Powertools
idempotency table (partition key ``id``, TTL attribute ``expiration``). Bedrock batch inference
(issue 20): an EventBridge rule on the default bus for ``aws.bedrock`` / ``Batch Inference Job State
Change`` whose target is the batch-events queue, as deployed (``eventbridge.py``); the emulator's batch
jobs PutEvents there.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline import settings
from local_stack.config import REGION
from local_stack.eventbridge import delete_batch_events_rule, ensure_batch_events_rule, rule_name

# Queue role -> (settings name, timeout of the function it feeds, which its visibility timeout derives from).
QUEUE_ROLES: dict[str, tuple[str, int]] = {
    queue.role: (queue.name, catalogue.consumer_of(queue).timeout_seconds) for queue in catalogue.QUEUES
}

# Dummy credentials: moto accepts anything, and real ones must never be sent to it.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def aws_client(service: str, endpoint_url: str, region: str = REGION) -> Any:
    """A boto3 client for the local endpoint with dummy credentials."""
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, **DUMMY_CREDENTIALS)


@dataclass(frozen=True)
class ResourceNames:
    bucket: str = settings.PROMPT_BUCKET_NAME
    ingest_queue: str = settings.INGEST_QUEUE_NAME
    work_queue: str = settings.WORK_QUEUE_NAME
    evaluation_queue: str = settings.EVALUATION_QUEUE_NAME
    idempotency_table: str = settings.IDEMPOTENCY_TABLE_NAME
    jobs_table: str = settings.JOBS_TABLE_NAME
    batch_events_queue: str = settings.BATCH_EVENTS_QUEUE_NAME

    @classmethod
    def unique(cls, tag: str | None = None) -> ResourceNames:
        """Fresh names (lowercase, bucket-safe) so tests sharing one moto server never collide."""
        suffix = (tag or "") + uuid.uuid4().hex[:10]
        return cls(
            bucket=f"{settings.PROMPT_BUCKET_NAME}-{suffix}"[:63],
            ingest_queue=f"{settings.INGEST_QUEUE_NAME}-{suffix}",
            work_queue=f"{settings.WORK_QUEUE_NAME}-{suffix}",
            evaluation_queue=f"{settings.EVALUATION_QUEUE_NAME}-{suffix}",
            idempotency_table=f"{settings.IDEMPOTENCY_TABLE_NAME}-{suffix}",
            jobs_table=f"{settings.JOBS_TABLE_NAME}-{suffix}",
            batch_events_queue=f"{settings.BATCH_EVENTS_QUEUE_NAME}-{suffix}",
        )

    def queue_name(self, role: str) -> str:
        return {"ingest": self.ingest_queue, "work": self.work_queue, "evaluation": self.evaluation_queue}[
            role
        ]


@dataclass(frozen=True)
class QueueInfo:
    name: str
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str
    visibility_timeout_seconds: int
    max_receive_count: int


@dataclass(frozen=True)
class LocalResources:
    bucket: str
    ingest: QueueInfo
    work: QueueInfo
    evaluation: QueueInfo
    idempotency_table: str
    jobs_table: str
    batch_events_queue_url: str = ""  # the Batch Inference Job State Change rule's target
    batch_events_rule: str = ""

    @property
    def queues(self) -> dict[str, QueueInfo]:
        return {"ingest": self.ingest, "work": self.work, "evaluation": self.evaluation}


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _ensure_queue(sqs: Any, name: str, attributes: Mapping[str, str]) -> str:
    # Create bare, then set attributes: CreateQueue on an existing queue with different attributes
    # fails (QueueAlreadyExists), SetQueueAttributes converges either way.
    url = str(sqs.create_queue(QueueName=name)["QueueUrl"])
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))
    return url


def _ensure_queue_with_dlq(
    sqs: Any, name: str, visibility_timeout: int, max_receive_count: int, policy: str | None = None
) -> QueueInfo:
    dlq_name = name + settings.DLQ_SUFFIX
    # Messages in a DLQ should outlive the source's retention: 14 days, the SQS maximum.
    dlq_url = _ensure_queue(sqs, dlq_name, {"MessageRetentionPeriod": str(14 * 24 * 3600)})
    dlq_arn = _queue_arn(sqs, dlq_url)
    attributes = {
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        ),
    }
    if policy:
        attributes["Policy"] = policy
    url = _ensure_queue(sqs, name, attributes)
    return QueueInfo(
        name=name,
        url=url,
        arn=_queue_arn(sqs, url),
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
        visibility_timeout_seconds=visibility_timeout,
        max_receive_count=max_receive_count,
    )


def _s3_send_policy(queue_arn: str, bucket: str) -> str:
    # Real SQS refuses S3's notifications without this; moto does not check, AWS does.
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
                }
            ],
        }
    )


def _ensure_table(dynamodb: Any, name: str, partition_key: str, ttl_attribute: str | None = None) -> None:
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": partition_key, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": partition_key, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
    if ttl_attribute is None:
        return
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute}
        )


def _resolve_visibility(visibility_timeouts: int | Mapping[str, int] | None, role: str) -> int:
    if isinstance(visibility_timeouts, int):
        return visibility_timeouts
    if visibility_timeouts and role in visibility_timeouts:
        return int(visibility_timeouts[role])
    return settings.visibility_timeout_for(QUEUE_ROLES[role][1])


def ensure_resources(
    endpoint_url: str,
    names: ResourceNames | None = None,
    *,
    visibility_timeouts: int | Mapping[str, int] | None = None,
    max_receive_count: int = settings.MAX_RECEIVE_COUNT,
    region: str = REGION,
) -> LocalResources:
    """Create (or converge) bucket, queues + DLQs, S3->SQS notification and idempotency table.

    ``visibility_timeouts``: one value for every queue or a per-role mapping ("ingest", "work",
    "evaluation"); default 6x each function's timeout, as deployed. Safe to call repeatedly.
    """
    names = names or ResourceNames()
    sqs = aws_client("sqs", endpoint_url, region)
    s3 = aws_client("s3", endpoint_url, region)
    dynamodb = aws_client("dynamodb", endpoint_url, region)

    queues: dict[str, QueueInfo] = {}
    for role in QUEUE_ROLES:
        name = names.queue_name(role)
        policy = None
        if role == "ingest":
            # The ARN is deterministic from the name; create first to learn it, then attach.
            arn = _queue_arn(sqs, str(sqs.create_queue(QueueName=name)["QueueUrl"]))
            policy = _s3_send_policy(arn, names.bucket)
        queues[role] = _ensure_queue_with_dlq(
            sqs, name, _resolve_visibility(visibility_timeouts, role), max_receive_count, policy
        )

    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=names.bucket)
        else:
            s3.create_bucket(Bucket=names.bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "incoming-to-ingest",
                    "QueueArn": queues["ingest"].arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": settings.INCOMING_PREFIX}]}
                    },
                }
            ]
        },
    )

    # Powertools idempotency layout: partition key "id", TTL on "expiration".
    _ensure_table(dynamodb, names.idempotency_table, "id", ttl_attribute="expiration")
    _ensure_table(dynamodb, names.jobs_table, "pk")
    events = aws_client("events", endpoint_url, region)
    batch_url, batch_rule = ensure_batch_events_rule(sqs, events, names.batch_events_queue)

    return LocalResources(
        bucket=names.bucket,
        ingest=queues["ingest"],
        work=queues["work"],
        evaluation=queues["evaluation"],
        idempotency_table=names.idempotency_table,
        jobs_table=names.jobs_table,
        batch_events_queue_url=batch_url,
        batch_events_rule=batch_rule,
    )


def delete_resources(endpoint_url: str, resources: LocalResources, region: str = REGION) -> None:
    """Remove everything ensure_resources created (bucket emptied first). Missing pieces are fine."""
    sqs = aws_client("sqs", endpoint_url, region)
    s3 = aws_client("s3", endpoint_url, region)
    dynamodb = aws_client("dynamodb", endpoint_url, region)
    for queue in resources.queues.values():
        for url in (queue.url, queue.dlq_url):
            with contextlib.suppress(ClientError):
                sqs.delete_queue(QueueUrl=url)
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=resources.bucket):
            objects = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objects:
                s3.delete_objects(Bucket=resources.bucket, Delete={"Objects": objects, "Quiet": True})
        s3.delete_bucket(Bucket=resources.bucket)
    except ClientError:
        pass
    for table in (resources.idempotency_table, resources.jobs_table):
        with contextlib.suppress(ClientError):
            dynamodb.delete_table(TableName=table)
    if resources.batch_events_rule:
        delete_batch_events_rule(aws_client("events", endpoint_url, region), resources.batch_events_rule)
    if resources.batch_events_queue_url:
        with contextlib.suppress(ClientError):
            sqs.delete_queue(QueueUrl=resources.batch_events_queue_url)


def handler_environment(
    *,
    moto_url: str,
    mlflow_url: str,
    resources: LocalResources,
    emulator_url: str | None = None,
    default_models: tuple[str, ...] | list[str] = settings.DEFAULT_MODELS,
    region: str = REGION,
) -> dict[str, str]:
    """The environment the handlers run with on the local stack, exactly as a Lambda would have it.

    boto3 picks the endpoints up by itself (AWS_ENDPOINT_URL for moto, the service-specific
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME for the emulator), so handler code passes no endpoint.
    """
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,  # Lambda sets both
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        settings.ENV_PROMPT_BUCKET: resources.bucket,
        settings.ENV_WORK_QUEUE_URL: resources.work.url,
        settings.ENV_EVALUATION_QUEUE_URL: resources.evaluation.url,
        settings.ENV_IDEMPOTENCY_TABLE: resources.idempotency_table,
        settings.ENV_JOBS_TABLE: resources.jobs_table,
        settings.ENV_MLFLOW_TRACKING_URI: mlflow_url,
        settings.ENV_DEFAULT_MODELS: ",".join(default_models),
    }
    if emulator_url:
        env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = emulator_url
        env["AWS_ENDPOINT_URL_BEDROCK"] = emulator_url  # the control plane: ingest's model check
    return env


def lookup_resources(
    endpoint_url: str, names: ResourceNames | None = None, region: str = REGION
) -> LocalResources:
    """Describe resources that already exist (raises if a queue is missing); creates nothing."""
    names = names or ResourceNames()
    sqs = aws_client("sqs", endpoint_url, region)
    queues: dict[str, QueueInfo] = {}
    for role in QUEUE_ROLES:
        name = names.queue_name(role)
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        dlq_url = str(sqs.get_queue_url(QueueName=name + settings.DLQ_SUFFIX)["QueueUrl"])
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
        queues[role] = QueueInfo(
            name=name,
            url=url,
            arn=attributes["QueueArn"],
            dlq_url=dlq_url,
            dlq_arn=_queue_arn(sqs, dlq_url),
            visibility_timeout_seconds=int(attributes["VisibilityTimeout"]),
            max_receive_count=int(redrive.get("maxReceiveCount", settings.MAX_RECEIVE_COUNT)),
        )
    batch_url = ""
    with contextlib.suppress(ClientError):  # a stack from before issue 20 has none
        batch_url = str(sqs.get_queue_url(QueueName=names.batch_events_queue)["QueueUrl"])
    return LocalResources(
        bucket=names.bucket,
        ingest=queues["ingest"],
        work=queues["work"],
        evaluation=queues["evaluation"],
        idempotency_table=names.idempotency_table,
        jobs_table=names.jobs_table,
        batch_events_queue_url=batch_url,
        batch_events_rule=rule_name(names.batch_events_queue) if batch_url else "",
    )
