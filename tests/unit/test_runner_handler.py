"""The runner handler's requeue bookkeeping, on records as Lambda's SQS event source delivers them."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bedrock_pipeline import settings
from handlers.runner import next_deferral
from local_stack.lambda_sqs import lambda_sqs_event

ARN = "arn:aws:sqs:us-east-1:123456789012:work"


def _record(message_attributes: dict[str, dict[str, str]]) -> SQSRecord:
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": "{}",
        "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "MessageAttributes": message_attributes,
    }
    return SQSRecord(lambda_sqs_event([message], ARN, "us-east-1")["Records"][0])


def test_a_first_deferral_counts_one_and_a_requeued_copy_counts_on() -> None:
    assert next_deferral(_record({})) == 1
    carried = {settings.PACING_DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": "3"}}
    assert next_deferral(_record(carried)) == 4  # raised AttributeError before (every second deferral)
