"""Lambda's side of an SQS event source, imitated: the event it builds, the context it passes, the
partial batch response it reads back, and how it resolves a handler setting.

Pure functions and a small context double (no real Lambda runtime exists offline); the event pump
(local_stack/event_pump.py) polls SQS and uses these to invoke handlers as Lambda would.
"""

from __future__ import annotations

import base64
import importlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes and method of Lambda's context object that handlers and Powertools use."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    timeout_seconds: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self.log_stream_name = (
            self.log_stream_name or f"local/[$LATEST]{self.aws_request_id.replace('-', '')}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API MessageAttributeValue -> Lambda event shape (camelCase, binary as base64 text)."""
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def lambda_sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage message -> one record of Lambda's SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def lambda_sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {"Records": [lambda_sqs_record(message, queue_arn, region) for message in messages]}


class InvalidBatchResponse(ValueError):
    """The handler's response cannot be read as a partial batch response: the whole batch failed."""


def failed_message_ids(response: Any, message_ids: set[str]) -> set[str]:
    """Message ids a handler reported as failed, by Lambda's ReportBatchItemFailures rules.

    Success: None, an object without ``batchItemFailures``, or a null/empty list. Anything Lambda
    could not parse raises InvalidBatchResponse (the caller treats the whole batch as failed).
    """
    try:
        json.dumps(response)  # Lambda serializes the return value; failing that is Runtime.MarshalError
    except (TypeError, ValueError) as error:
        raise InvalidBatchResponse(f"response is not JSON-serializable: {error}") from error
    if response is None:
        return set()
    if not isinstance(response, dict):
        raise InvalidBatchResponse(f"response is not an object: {type(response).__name__}")
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise InvalidBatchResponse("batchItemFailures is not a list")
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or not identifier:
            raise InvalidBatchResponse(f"missing or empty itemIdentifier in {failure!r}")
        if identifier not in message_ids:
            raise InvalidBatchResponse(f"itemIdentifier {identifier!r} is not a message of this batch")
        failed.add(identifier)
    return failed


def import_handler(dotted_path: str) -> Handler:
    """``package.module.function`` -> the function (Lambda's handler setting)."""
    module_name, _, attribute = dotted_path.rpartition(".")
    if not module_name:
        raise ImportError(f"handler {dotted_path!r} is not of the form module.function")
    handler = getattr(importlib.import_module(module_name), attribute, None)
    if handler is None:  # Lambda's Runtime.HandlerNotFound
        raise ImportError(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(handler):
        raise ImportError(f"handler {dotted_path!r} is not callable")
    return handler  # type: ignore[no-any-return]
