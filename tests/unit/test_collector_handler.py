"""The collector handler: a state-change event collects its job once (a redelivery counts nothing
twice), and the schedule's invocation sweeps for jobs whose event was lost."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bedrock_pipeline import settings
from handlers import collector as collector_handler
from tests.unit.test_batch_collection import Collecting, _submit
from tests.unit.test_batch_submission import NOVA
from tests.unit.test_ingest_handler import RecordedMetrics


def _event_record(arn: str, message_id: str) -> SQSRecord:
    event = {
        "source": settings.BATCH_EVENT_SOURCE,
        "detail-type": settings.BATCH_EVENT_DETAIL_TYPE,
        "detail": {"batchJobArn": arn, "status": "Completed"},
    }
    body = json.dumps(event)
    return SQSRecord({"messageId": message_id, "body": body, "attributes": {"ApproximateReceiveCount": "1"}})


def test_a_redelivered_state_change_collects_its_job_once(monkeypatch: pytest.MonkeyPatch) -> None:
    world = Collecting()
    (part,) = world.registry.parts(_submit(world, 5, [NOVA]))
    world.bedrock_finishes(part)
    metrics = RecordedMetrics()
    monkeypatch.setattr(collector_handler, "core", lambda: SimpleNamespace(collect=world.collect))
    monkeypatch.setattr(collector_handler, "metrics", metrics)

    collector_handler.record_handler(_event_record(part.arn, "m1"))
    collector_handler.record_handler(_event_record(part.arn, "m2"))

    assert metrics.added == [("BatchJobsCollected", 1), ("BatchChunksSent", 2)]
    assert len(world.queue.chunks()) == 2


def test_the_scheduled_invocation_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    world = Collecting()
    (part,) = world.registry.parts(_submit(world, 5, [NOVA]))
    world.bedrock_finishes(part)
    monkeypatch.setattr(collector_handler, "core", lambda: SimpleNamespace(collect=world.collect))
    metrics = RecordedMetrics()
    monkeypatch.setattr(collector_handler, "metrics", metrics)

    assert collector_handler.on_schedule() == {"collected": [part.arn]}
    assert metrics.added == [("BatchJobsSwept", 1)]
    assert world.registry.collected(part.arn)
