"""The event pump gives handlers Lambda's SQS event source semantics, against a real moto server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import pytest
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import SqsModel

from local_stack.event_pump import (
    EventPump,
    InvalidBatchResponse,
    LambdaContext,
    QueueRoute,
    failed_message_ids,
    import_handler,
)
from local_stack.resources import LocalResources, aws_client

pytestmark = pytest.mark.integration


class Recorder:
    """A handler double's memory: every event and context it was invoked with (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self._lock = threading.Lock()

    def record(self, event: dict[str, Any], context: Any) -> None:
        with self._lock:
            self.events.append(event)
            self.contexts.append(context)

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record for event in self.events for record in event["Records"]]

    def receive_counts(self) -> dict[str, list[int]]:
        counts: dict[str, list[int]] = {}
        for record in self.records:
            counts.setdefault(record["body"], []).append(int(record["attributes"]["ApproximateReceiveCount"]))
        return counts


def queue_depth(moto_server: str, queue_url: str) -> int:
    attributes = aws_client("sqs", moto_server).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def send_batch(moto_server: str, queue_url: str, bodies: list[str]) -> None:
    aws_client("sqs", moto_server).send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    )


def powertools_handler(record_handler: Callable[[SQSRecord], None]) -> Callable[[dict[str, Any], Any], Any]:
    """A handler written the way the pipeline's are: Powertools BatchProcessor, partial failures."""
    processor = BatchProcessor(event_type=EventType.SQS)

    def handler(event: dict[str, Any], context: Any) -> Any:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler


def test_given_a_message_when_the_handler_succeeds_then_it_is_deleted_and_the_event_is_lambdas_shape(
    moto_server: str, local_resources: LocalResources, event_pump: Callable[..., EventPump]
) -> None:
    """Given a message with string and binary attributes on the work queue,
    when the pump invokes a handler that returns nothing,
    then the handler got a Lambda SQS event (valid for Powertools' SqsModel) and the message is gone."""
    queue = local_resources.work
    aws_client("sqs", moto_server).send_message(
        QueueUrl=queue.url,
        MessageBody='{"item": 1}',
        MessageAttributes={
            "job": {"DataType": "String", "StringValue": "job-1"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    recorder = Recorder()
    pump = event_pump(
        [QueueRoute(queue.url, recorder.record, function_timeout_seconds=30, function_name="runner")]
    )

    pump.drain(timeout=15)

    assert len(recorder.events) == 1
    event = recorder.events[0]
    parsed = SqsModel.model_validate(event)
    record = event["Records"][0]
    assert record["body"] == '{"item": 1}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue.arn
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["job"] == {
        "stringValue": "job-1",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    assert parsed.Records[0].md5OfBody == record["md5OfBody"]
    context = recorder.contexts[0]
    assert context.function_name == "runner"
    assert context.invoked_function_arn.endswith(":function:runner")
    assert 0 < context.get_remaining_time_in_millis() <= 30_000
    assert queue_depth(moto_server, queue.url) == 0
    assert pump.counters.deleted == 1
    assert pump.counters.invocations == 1


def test_given_a_batch_when_one_item_is_reported_failed_then_only_it_returns_after_the_visibility_timeout(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given three messages on a queue with a 1 s visibility timeout,
    when a Powertools handler fails one of them once (batchItemFailures),
    then its batch-mates are deleted after one delivery and it comes back with ApproximateReceiveCount 2."""
    queue = local_resources_factory(visibility_timeouts=1).work
    send_batch(moto_server, queue.url, ["ok-1", "flaky", "ok-2"])
    recorder = Recorder()
    attempts: dict[str, int] = {}

    def record_handler(record: SQSRecord) -> None:
        attempts[record.body] = attempts.get(record.body, 0) + 1
        if record.body == "flaky" and attempts[record.body] == 1:
            raise ValueError("transient failure")

    inner = powertools_handler(record_handler)

    def handler(event: dict[str, Any], context: Any) -> Any:
        recorder.record(event, context)
        return inner(event, context)

    pump = event_pump([QueueRoute(queue.url, handler, batch_size=10)])
    pump.drain(timeout=20)

    assert len(recorder.events[0]["Records"]) == 3
    assert recorder.receive_counts() == {"ok-1": [1], "flaky": [1, 2], "ok-2": [1]}
    assert pump.counters.failed_items == 1
    assert pump.counters.deleted == 3
    assert queue_depth(moto_server, queue.url) == 0


def test_given_a_batch_when_the_handler_raises_then_nothing_is_deleted(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given two messages, when the handler raises on its first invocation,
    then both come back (receive count 2) and are deleted only after the retry succeeds."""
    queue = local_resources_factory(visibility_timeouts=1).work
    send_batch(moto_server, queue.url, ["a", "b"])
    recorder = Recorder()

    def handler(event: dict[str, Any], context: Any) -> None:
        recorder.record(event, context)
        if len(recorder.events) == 1:
            raise RuntimeError("boom")

    pump = event_pump([QueueRoute(queue.url, handler)])
    pump.drain(timeout=20)

    assert recorder.receive_counts() == {"a": [1, 2], "b": [1, 2]}
    assert pump.counters.handler_errors == 1
    assert pump.counters.deleted == 2


def test_given_a_batch_when_the_response_names_an_unknown_item_then_the_whole_batch_is_retried(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given two messages, when the handler first answers batchItemFailures with a foreign message id,
    then Lambda's rule applies: the whole batch failed, both messages are delivered again."""
    queue = local_resources_factory(visibility_timeouts=1).work
    send_batch(moto_server, queue.url, ["a", "b"])
    recorder = Recorder()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        recorder.record(event, context)
        if len(recorder.events) == 1:
            return {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]}
        return {"batchItemFailures": []}

    pump = event_pump([QueueRoute(queue.url, handler)])
    pump.drain(timeout=20)

    assert recorder.receive_counts() == {"a": [1, 2], "b": [1, 2]}
    assert pump.counters.handler_errors == 1


def test_given_a_poison_message_when_it_fails_max_receive_count_times_then_sqs_moves_it_to_the_dlq(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given a queue whose RedrivePolicy allows 2 receives, when every invocation fails,
    then the handler sees the message exactly twice and moto's SQS moves it to the DLQ."""
    queue = local_resources_factory(visibility_timeouts=1, max_receive_count=2).work
    aws_client("sqs", moto_server).send_message(QueueUrl=queue.url, MessageBody="poison")
    recorder = Recorder()

    def handler(event: dict[str, Any], context: Any) -> None:
        recorder.record(event, context)
        raise ValueError("always fails")

    pump = event_pump([QueueRoute(queue.url, handler)])
    pump.drain(timeout=20)

    assert recorder.receive_counts() == {"poison": [1, 2]}
    dead = aws_client("sqs", moto_server).receive_message(QueueUrl=queue.dlq_url, WaitTimeSeconds=1)
    assert [message["Body"] for message in dead.get("Messages", [])] == ["poison"]


def test_given_the_prompt_bucket_when_a_file_lands_under_incoming_then_the_ingest_handler_gets_an_s3_event(
    moto_server: str, local_resources: LocalResources, event_pump: Callable[..., EventPump]
) -> None:
    """Given the bucket's S3->SQS notification, when files are put under incoming/ and elsewhere,
    then the ingest handler receives the s3:TestEvent and one S3 event for incoming/ only,
    with the key URL-encoded as S3 sends it."""
    s3 = aws_client("s3", moto_server)
    key = "incoming/team a/prompts+v2.jsonl"
    s3.put_object(Bucket=local_resources.bucket, Key=key, Body=b'{"prompt": "hi"}\n')
    s3.put_object(Bucket=local_resources.bucket, Key="results/other.jsonl", Body=b"{}\n")
    recorder = Recorder()

    pump = event_pump([QueueRoute(local_resources.ingest.url, recorder.record, batch_size=1)])
    pump.drain(timeout=15)

    bodies = [json.loads(record["body"]) for record in recorder.records]
    test_events = [body for body in bodies if body.get("Event") == "s3:TestEvent"]
    # Powertools' S3Event data class, not the strict S3Model: moto's records lack userIdentity,
    # requestParameters, responseElements and bucket.ownerIdentity, which S3Model requires.
    s3_events = [S3Event(body) for body in bodies if "Records" in body]
    assert [event["Bucket"] for event in test_events] == [local_resources.bucket]
    assert len(s3_events) == 1
    s3_event = s3_events[0]
    assert s3_event.record.event_name.startswith("ObjectCreated:")
    assert s3_event.bucket_name == local_resources.bucket
    wire_key = s3_event["Records"][0]["s3"]["object"]["key"]
    assert wire_key != key  # URL-encoded on the wire...
    assert unquote_plus(wire_key) == s3_event.object_key == key  # ...and decodes back to the real key
    assert pump.counters.deleted == 2


def test_given_a_dotted_path_that_does_not_import_when_a_message_arrives_then_the_pump_counts_it_and_lives(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given a route to a handler module that does not exist, when a message arrives,
    then the import error is counted, the message stays on the queue, and the pump keeps polling."""
    queue = local_resources_factory(visibility_timeouts=1).work
    aws_client("sqs", moto_server).send_message(QueueUrl=queue.url, MessageBody="x")

    pump = event_pump([QueueRoute(queue.url, "handlers.does_not_exist.handler")])
    deadline = time.monotonic() + 10
    while pump.counters.import_errors < 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert pump.counters.import_errors >= 2  # retried after the visibility timeout: still polling
    assert pump.running
    assert pump.counters.deleted == 0
    assert queue_depth(moto_server, queue.url) == 1


def test_given_a_pump_when_drain_cannot_empty_the_queue_in_time_then_it_raises_timeout_error(
    moto_server: str,
    local_resources_factory: Callable[..., LocalResources],
    event_pump: Callable[..., EventPump],
) -> None:
    """Given a message that keeps failing (DLQ far away), when drain's timeout passes, then TimeoutError."""
    queue = local_resources_factory(visibility_timeouts=1, max_receive_count=100).work
    aws_client("sqs", moto_server).send_message(QueueUrl=queue.url, MessageBody="x")

    def handler(event: dict[str, Any], context: Any) -> None:
        raise ValueError("fails")

    pump = event_pump([QueueRoute(queue.url, handler)])
    with pytest.raises(TimeoutError, match="not drained"):
        pump.drain(timeout=1.5)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"statusCode": 200}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
    ],
)
def test_given_a_valid_partial_batch_response_when_read_then_the_failed_ids_are_lambdas(
    response: Any, expected: set[str]
) -> None:
    """Given responses Lambda accepts, when read, then the failed ids match Lambda's documented rules."""
    assert failed_message_ids(response, {"m1", "m2"}) == expected


@pytest.mark.parametrize(
    "response",
    [
        "ok",
        ["m1"],
        {"batchItemFailures": "m1"},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"id": "m1"}]},
        {"batchItemFailures": [{"itemIdentifier": "m9"}]},
        {"batchItemFailures": [{"itemIdentifier": object()}]},
    ],
)
def test_given_an_unparseable_response_when_read_then_the_whole_batch_is_failed(response: Any) -> None:
    """Given responses Lambda treats as a complete batch failure, when read, then InvalidBatchResponse."""
    with pytest.raises(InvalidBatchResponse):
        failed_message_ids(response, {"m1", "m2"})


def test_given_a_dotted_path_when_imported_then_the_function_is_returned_lazily() -> None:
    """Given Lambda-style handler settings, when resolved, then module.function is found or ImportError."""
    assert import_handler("json.loads") is json.loads
    with pytest.raises(ImportError):
        import_handler("handler_without_module")
    with pytest.raises(ImportError):
        import_handler("json.no_such_function")


def test_given_a_lambda_context_double_when_time_passes_then_remaining_time_counts_down() -> None:
    """Given a context with a 1 s timeout, when 0.2 s pass, then remaining time has dropped accordingly."""
    context = LambdaContext(
        function_name="f",
        invoked_function_arn="arn",
        memory_limit_in_mb=128,
        aws_request_id="r",
        timeout_seconds=1,
    )
    before = context.get_remaining_time_in_millis()
    time.sleep(0.2)
    after = context.get_remaining_time_in_millis()
    assert 900 < before <= 1000
    assert before - after >= 150
