"""An SQS queue, its dead-letter queue and the visibility timeout its consumer needs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from bedrock_pipeline.function_catalogue import FunctionSpec, QueueSpec


class QueueWithDlq(Construct):
    """Queue whose visibility timeout is 6x its consumer's timeout, with a DLQ after N receives."""

    def __init__(
        self, scope: Construct, construct_id: str, *, spec: QueueSpec, consumer: FunctionSpec
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        self.visibility_timeout_seconds = consumer.visibility_timeout_seconds
        self.dead_letter_queue = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        cdk.Validations.of(self.dead_letter_queue).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is itself the dead-letter queue; an alarm watches its depth.",
            )
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(self.visibility_timeout_seconds),
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=spec.max_receive_count
            ),
        )


def async_failure_queue(scope: Construct, construct_id: str) -> sqs.Queue:
    """Where Lambda puts the failed asynchronous invocations of a function (not retried)."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=cdk.Duration.days(14),
    )
    cdk.Validations.of(queue).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-SQS3",
            reason="This queue is itself a failure destination (Lambda's on-failure record); an alarm "
            "watches its depth.",
        )
    )
    return queue
