"""The local stack's EventBridge: the rule that delivers Bedrock's batch job state changes to SQS.

As deployed (issue 20): a rule on the default bus matching source ``aws.bedrock`` and detail-type
``Batch Inference Job State Change`` (settings.BATCH_EVENT_SOURCE / BATCH_EVENT_DETAIL_TYPE) with the
batch-events queue as its target. moto's EventBridge delivers a matching PutEvents to the queue itself
(tests/integration/test_batch_emulator.py shows it), so the emulator's events take AWS's path.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline import settings

TARGET_ID = "batch-events-queue"


def rule_name(queue_name: str) -> str:
    """The rule of a batch-events queue (one per queue: test stacks share moto's default bus)."""
    return f"{queue_name}-state-change"[:64]


def _events_send_policy(queue_arn: str, rule_arn: str) -> str:
    # What EventBridge needs to deliver to an SQS target (moto does not check; AWS does).
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ],
        }
    )


def ensure_batch_events_rule(sqs: Any, events: Any, queue_name: str) -> tuple[str, str]:
    """The batch-events queue (created bare if nothing created it yet: harmless when the function
    catalogue creates it with its DLQ) and the rule on the default bus targeting it. Idempotent.

    ``sqs`` and ``events`` are boto3 clients of the local AWS. Returns (queue URL, rule name).
    """
    try:
        url = str(sqs.get_queue_url(QueueName=queue_name)["QueueUrl"])
    except ClientError:
        url = str(sqs.create_queue(QueueName=queue_name)["QueueUrl"])
    arn = str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
    rule = rule_name(queue_name)
    pattern = {"source": [settings.BATCH_EVENT_SOURCE], "detail-type": [settings.BATCH_EVENT_DETAIL_TYPE]}
    rule_arn = events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")["RuleArn"]
    events.put_targets(Rule=rule, Targets=[{"Id": TARGET_ID, "Arn": arn}])
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": _events_send_policy(arn, rule_arn)})
    return url, rule


def delete_batch_events_rule(events: Any, rule: str) -> None:
    """Remove the rule and its target (missing ones are fine)."""
    try:
        events.remove_targets(Rule=rule, Ids=[TARGET_ID])
        events.delete_rule(Name=rule)
    except ClientError:
        pass
