"""SQS adapter for the work queue: one message per work item, sent in batches of ten (SQS's limit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bedrock_pipeline.domain import WorkItem

if TYPE_CHECKING:
    from bedrock_pipeline.use_cases.collect_batch import BatchChunk

SQS_BATCH_LIMIT = 10


class SqsWorkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, items: Sequence[WorkItem]) -> None:
        self._send([item.to_message() for item in items])

    def send_chunks(self, chunks: Sequence[BatchChunk]) -> None:
        """A finished batch job's records, in chunks (use_cases/collect_batch.py), for the runners."""
        self._send([chunk.to_message() for chunk in chunks])

    def _send(self, bodies: Sequence[str]) -> None:
        for start in range(0, len(bodies), SQS_BATCH_LIMIT):
            chunk = bodies[start : start + SQS_BATCH_LIMIT]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
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
