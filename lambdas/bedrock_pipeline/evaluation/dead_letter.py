"""Parking evaluation jobs that can never run in the evaluation queue's dead-letter queue (SQS).

A rejected job (invalid message, missing dataset, no usable rows) is sent to the DLQ by the handler
itself, with its reason as a message attribute, instead of failing until the queue's redrive moves it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bedrock_pipeline.evaluation.job import JobRejected
from bedrock_pipeline.ports import ResultStore
from bedrock_pipeline.work_queue import queue_url_of

logger = logging.getLogger(__name__)

REJECT_REASON_ATTRIBUTE = "RejectReason"


def reject(
    *,
    sqs: Any,
    dead_letter_queue_url: str,
    store: ResultStore,
    body: str,
    message_id: str,
    rejection: JobRejected,
) -> None:
    """Park a job that can never run: the message goes to the DLQ with its reason as an attribute,
    and the reason is written to results/<job>/errors.jsonl when the job has an id.

    Sending it ourselves (instead of raising) spares MAX_RECEIVE_COUNT pointless retries; if the send
    fails this raises, so the queue retries and its redrive policy still moves the message.
    """
    logger.warning("evaluation job rejected (message %s): %s", message_id, rejection.reason)
    attributes = {
        REJECT_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": rejection.reason[:250_000]},
        "SourceMessageId": {"DataType": "String", "StringValue": message_id},
    }
    if rejection.job_id:
        attributes["JobId"] = {"DataType": "String", "StringValue": rejection.job_id}
        store.put_errors(
            rejection.job_id, [{"lineNumber": None, "reason": f"job rejected: {rejection.reason}"}]
        )
    sqs.send_message(QueueUrl=dead_letter_queue_url, MessageBody=body, MessageAttributes=attributes)


def dead_letter_queue_url(sqs: Any, queue_url: str) -> str:
    """The DLQ the queue's redrive policy names (so no second setting can drift from the queue's own)."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    arn = policy.get("deadLetterTargetArn")
    if not arn:
        raise RuntimeError(f"queue {queue_url} has no redrive policy, so no DLQ to park bad jobs in")
    return queue_url_of(sqs, arn)
