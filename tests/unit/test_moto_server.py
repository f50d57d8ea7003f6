"""The twin's moto launcher changes how fast moto answers, never what it answers."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import SQSBackend, sqs_backends

from local_stack.moto_server import is_dynamodb_request, message_within_retention

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
