"""SQS adapter for the work queue: one message per work item, sent in batches of ten (SQS's limit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.domain import WorkItem

SQS_BATCH_LIMIT = 10


class SqsWorkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, items: Sequence[WorkItem]) -> None:
        for start in range(0, len(items), SQS_BATCH_LIMIT):
            chunk = items[start : start + SQS_BATCH_LIMIT]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": item.to_message()} for i, item in enumerate(chunk)],
            )
            if response.get("Failed"):
                # Raise so the ingest message is retried; items already sent are deduplicated by the ledger.
                raise RuntimeError(
                    f"could not enqueue {len(response['Failed'])} work items: {response['Failed']}"
                )


def queue_url_of(sqs_client: Any, queue_arn: str) -> str:
    """A queue's URL from its ARN (an event source names queues by ARN; the API wants URLs)."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return str(sqs_client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def requeue(sqs_client: Any, queue_url: str, body: str, *, delay_seconds: float, deferrals: int) -> None:
    """The same work item as a fresh message due in ``delay_seconds``: its receive count starts again,
    so waiting for a model's quota spends none of the item's retries (the original message is then
    deleted by the batch response; if that fails too, the ledger makes the second delivery a no-op)."""
    sqs_client.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        DelaySeconds=max(0, min(settings.SQS_MAX_DELAY_SECONDS, round(delay_seconds))),
        MessageAttributes={
            settings.PACING_DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(deferrals)}
        },
    )
