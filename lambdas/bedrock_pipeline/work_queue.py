"""SQS adapter for the work queue: one message per work item, sent in batches SQS accepts.

An item too large for a queue message (an inline image, a long document) travels by reference: its
body is stored in the prompt bucket under ``results/<job>/items/bodies/<digest>.json`` and the message
carries only that key (`ItemBodies`). The runner reads every message through `ItemBodies.item_from`,
so `run_item` sees the same `WorkItem` either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bedrock_pipeline import settings
from bedrock_pipeline.domain import WorkItem, results_prefix

if TYPE_CHECKING:
    from bedrock_pipeline.use_cases.collect_batch import BatchChunk

SQS_BATCH_LIMIT = 10
# SendMessageBatch (SQS API reference): "The maximum allowed individual message size and the maximum
# total payload size (the sum of the individual lengths of all of the batched messages) are both
# 256 KiB (262,144 bytes)."
SQS_BATCH_BYTES = 262_144
BODY_KEY_FIELD = "itemBodyKey"  # the one member of a by-reference message (besides its version)


def item_body_key(item: WorkItem) -> str:
    """Where a by-reference item's body is kept: with its job's results, named by its identity."""
    return f"{results_prefix(item.bound_job.job_id)}items/bodies/{item.digest}.json"


class ItemBodies:
    """Work-queue message bodies: the item itself, or a reference to its body in S3 when it is larger
    than settings.MAX_WORK_ITEM_BYTES."""

    def __init__(
        self, s3_client: Any, bucket: str, *, inline_limit: int = settings.MAX_WORK_ITEM_BYTES
    ) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._inline_limit = inline_limit

    def message_for(self, item: WorkItem) -> str:
        body = item.to_message()
        if len(body.encode()) <= self._inline_limit:
            return body
        key = item_body_key(item)
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body.encode(), ContentType="application/json")
        return json.dumps({"version": item.version, BODY_KEY_FIELD: key})

    def item_from(self, message: str | bytes) -> WorkItem:
        """The item a message carries or names. ValueError for a body no retry can fix (malformed, or a
        reference whose body is gone); other S3 errors propagate (the message is retried)."""
        key = _body_key(message)
        if key is None:
            return WorkItem.from_message(message)
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise ValueError(f"the work item body s3://{self._bucket}/{key} no longer exists") from exc
            raise
        return WorkItem.from_message(body)


def _body_key(message: str | bytes) -> str | None:
    if BODY_KEY_FIELD.encode() not in (message.encode() if isinstance(message, str) else message):
        return None  # cheap: an inline item is not parsed twice
    try:
        value = json.loads(message)
    except ValueError:
        return None
    key = value.get(BODY_KEY_FIELD) if isinstance(value, dict) and "record_id" not in value else None
    return key if isinstance(key, str) and key.startswith(settings.RESULTS_PREFIX) else None


def job_of_body_reference(message: str | bytes) -> str | None:
    """The job id in a by-reference message's key (what `dlq inspect` shows), or None."""
    key = _body_key(message)
    if key is None:
        return None
    return key.removeprefix(settings.RESULTS_PREFIX).split("/", 1)[0] or None


class SqsWorkQueue:
    def __init__(self, sqs_client: Any, queue_url: str, bodies: ItemBodies) -> None:
        self._sqs = sqs_client
        self._url = queue_url
        self._bodies = bodies

    def send(self, items: Sequence[WorkItem]) -> None:
        self._send([self._bodies.message_for(item) for item in items])

    def send_chunks(self, chunks: Sequence[BatchChunk]) -> None:
        """A finished batch job's records, in chunks (use_cases/collect_batch.py), for the runners."""
        self._send([chunk.to_message() for chunk in chunks])

    def _send(self, bodies: Sequence[str]) -> None:
        for chunk in _batches(bodies):
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
            )
            if response.get("Failed"):
                # Raise so the ingest message is retried; items already sent are deduplicated by the ledger.
                raise RuntimeError(
                    f"could not enqueue {len(response['Failed'])} work items: {response['Failed']}"
                )


def _batches(bodies: Sequence[str]) -> Iterator[list[str]]:
    """Up to ten messages whose bodies together fit one SendMessageBatch."""
    chunk: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if chunk and (len(chunk) == SQS_BATCH_LIMIT or size + length > SQS_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(body)
        size += length
    if chunk:
        yield chunk


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
