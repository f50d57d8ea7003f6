"""What a queue-fed handler does with the messages it fails: back off by receive count, know the last
receive before the DLQ, and say why in one short line (the ledger's failure notes)."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import boto3

from bedrock_pipeline.work_queue import queue_url_of
from handlers.runtime import environment, logger


def retry_delay_seconds(receive_count: int, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Visibility timeout for an item returned to the queue: doubling per receive, capped, with jitter
    (half fixed, half random) so items throttled together do not come back together."""
    if base <= 0:
        return 0
    delay = min(cap, base * 2 ** max(0, receive_count - 1))
    return int(delay / 2 + (rng or random).uniform(0, delay / 2))


class QueueRetries:
    """What a handler does to the messages it reports as failed: back off by receive count, and knows
    when a receive is the last one before the DLQ (so the item can end as a failure with its reason)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self._queues: dict[str, tuple[str, int | None]] = {}

    def queue(self, queue_arn: str) -> tuple[str, int | None]:
        """(queue URL, maxReceiveCount or None without a DLQ) for an event source ARN; cached."""
        if queue_arn not in self._queues:
            url = queue_url_of(self._sqs, queue_arn)
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
            policy = json.loads(attributes.get("Attributes", {}).get("RedrivePolicy", "{}") or "{}")
            max_receive = int(policy["maxReceiveCount"]) if "maxReceiveCount" in policy else None
            self._queues[queue_arn] = (url, max_receive)
        return self._queues[queue_arn]

    def is_last_receive(self, queue_arn: str, receive_count: int) -> bool:
        max_receive = self.queue(queue_arn)[1]
        return max_receive is not None and receive_count >= max_receive

    def back_off(
        self,
        event: dict[str, Any],
        response: dict[str, Any],
        immediate: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """ChangeMessageVisibility on each failed message: growing delays by ApproximateReceiveCount;
        ``immediate`` ids (poison messages no retry can fix) come back at once, to reach the DLQ soon."""
        env = environment()
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for record in event.get("Records", []):
            message_id = record.get("messageId")
            if message_id not in failed:
                continue
            count = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = (
                0
                if message_id in immediate
                else retry_delay_seconds(count, env.retry_base_seconds, env.retry_max_seconds)
            )
            try:
                url, _ = self.queue(record["eventSourceARN"])
                self._sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=delay
                )
            except Exception:  # the queue's own visibility timeout still brings it back
                logger.exception("could not back off message %s", message_id)


@functools.cache
def queue_retries() -> QueueRetries:
    return QueueRetries(boto3.client("sqs"))


def describe_failure(exc: BaseException) -> str:
    """The reason recorded for a failed message: the exception and its cause, short."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:2000]
