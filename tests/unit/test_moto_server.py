"""The twin's moto launcher changes how fast moto answers, never what it answers."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import SQSBackend, sqs_backends

from local_stack import moto_internals
from local_stack.moto_internals import message_within_retention
from local_stack.moto_server import is_dynamodb_request

REGION = "us-east-1"


def test_the_retention_check_agrees_with_motos_own_for_fresh_and_expired_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process moto here (the backend's own objects are compared), not the session's moto server.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for n in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
        backend = sqs_backends[DEFAULT_ACCOUNT_ID][REGION]
        fresh, old, older = backend.get_queue("q")._messages
        old.sent_timestamp -= 61_000  # sent 61 s earlier than it was: past the 60 s retention
        older.sent_timestamp -= 3_600_000
        original = SQSBackend.is_message_valid_based_on_retention_period
        for message, expected in ((fresh, True), (old, False), (older, False)):
            assert original(backend, "q", message) is expected
            assert message_within_retention(backend, "q", message) is expected


def test_only_dynamodb_requests_are_serialized() -> None:
    assert is_dynamodb_request({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.UpdateItem"})
    assert not is_dynamodb_request({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"})
    assert not is_dynamodb_request({"PATH_INFO": "/bucket/key"})


@pytest.fixture
def sqs_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's SQS cuts installed on moto's classes, taken off again after the test."""
    from moto.sqs.models import Queue

    from local_stack.moto_internals import install_sqs_shortcuts

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # in-process moto, as above
    monkeypatch.setattr(Queue, "attributes", Queue.__dict__["attributes"])
    monkeypatch.setattr(SQSBackend, "send_message", SQSBackend.send_message)
    monkeypatch.setattr(SQSBackend, "send_message_batch", SQSBackend.send_message_batch)
    monkeypatch.setattr(
        SQSBackend,
        "is_message_valid_based_on_retention_period",
        SQSBackend.is_message_valid_based_on_retention_period,
    )
    assert install_sqs_shortcuts() is True
    assert install_sqs_shortcuts() is True  # idempotent


def test_sending_no_longer_counts_the_queue_but_every_answer_is_motos(
    sqs_shortcuts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sqs.models import Queue

    counted: list[str] = []
    real_count = Queue.__dict__["approximate_number_of_messages"]
    monkeypatch.setattr(
        Queue,
        "approximate_number_of_messages",
        property(lambda queue: counted.append(queue.name) or real_count.fget(queue)),
    )
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="work")["QueueUrl"]
        for n in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"b{n}"} for n in range(5)]
        )
        assert counted == []  # moto as shipped counts the whole queue for each message sent
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (
            attributes["ApproximateNumberOfMessages"] == "10"
            and "ContentBasedDeduplication" not in attributes
        )

        fifo = sqs.create_queue(
            QueueName="jobs.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        counted.clear()  # GetQueueAttributes counts, as it should
        for _ in range(2):  # the same body twice: deduplicated by content
            sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
        sqs.send_message_batch(
            QueueUrl=fifo, Entries=[{"Id": "1", "MessageBody": "same", "MessageGroupId": "g"}]
        )
        assert counted == []  # FIFO sends, single and batched, count nothing either
        attributes = sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["All"])["Attributes"]
        assert (
            attributes["ApproximateNumberOfMessages"] == "1"
            and attributes["ContentBasedDeduplication"] == "true"
        )

        strict = sqs.create_queue(QueueName="strict.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        with pytest.raises(sqs.exceptions.ClientError, match="ContentBasedDeduplication"):
            sqs.send_message(QueueUrl=strict, MessageBody="x", MessageGroupId="g")


def test_the_installed_moto_is_one_the_twin_was_verified_against() -> None:
    version = moto_internals.installed_moto_version()
    assert version in moto_internals.VERIFIED_MOTO_VERSIONS, (
        f"moto {version}: re-check each patch listed in local_stack/moto_internals.py, then add the version"
    )


@pytest.fixture
def unverified_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(moto_internals, "installed_moto_version", lambda: "0.0.1")
    moto_internals.private_paths_enabled.cache_clear()
    yield
    moto_internals.private_paths_enabled.cache_clear()


def test_on_an_unverified_moto_its_classes_are_left_alone_and_its_own_server_runs(
    unverified_moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.server
    from moto.sqs.models import Queue

    shipped = (
        Queue.__dict__["attributes"],
        SQSBackend.send_message,
        SQSBackend.is_message_valid_based_on_retention_period,
    )
    assert moto_internals.install_sqs_shortcuts() is False
    assert shipped == (
        Queue.__dict__["attributes"],
        SQSBackend.send_message,
        SQSBackend.is_message_valid_based_on_retention_period,
    )
    started: list[list[str] | None] = []
    monkeypatch.setattr(moto.server, "main", started.append)
    moto_internals.serve("127.0.0.1", 4599, lambda app: app)
    assert started == [["-H", "127.0.0.1", "-p", "4599"]]
