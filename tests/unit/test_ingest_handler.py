"""The ingest handler's metrics: a redelivered S3 event is the same job, so it counts nothing twice."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.ingest import IngestDeps
from handlers import ingest as ingest_handler
from tests.unit.fakes import MemoryLedger, MemoryQueue, MemoryRecorder, MemoryResults, MemorySource

BUCKET = "prompts"


@dataclass
class RecordedMetrics:
    added: list[tuple[str, float]] = field(default_factory=list)

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.added.append((name, value))


def _s3_event_record(key: str, etag: str, message_id: str) -> SQSRecord:
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "eTag": etag}},
            }
        ]
    }
    return SQSRecord(
        {"messageId": message_id, "body": json.dumps(body), "attributes": {"ApproximateReceiveCount": "1"}}
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"prompt": "a"}\n{"prompt": "b"}\nnot json\n', [("WorkItemsEnqueued", 2), ("RejectedLines", 1)]),
        (b"", [("WorkItemsEnqueued", 0), ("RejectedLines", 0), ("RejectedFiles", 1)]),
    ],
)
def test_a_redelivered_s3_event_emits_the_job_metrics_only_once(
    monkeypatch: pytest.MonkeyPatch, body: bytes, expected: list[tuple[str, float]]
) -> None:
    source = MemorySource()
    deps = IngestDeps(
        source=source,
        queue=MemoryQueue(),
        ledger=MemoryLedger(),
        recorder=MemoryRecorder(),
        results=MemoryResults(),
        prices=PriceTable.load(),
        default_models=("amazon.nova-lite-v1:0",),
    )
    metrics = RecordedMetrics()
    monkeypatch.setattr(ingest_handler, "core", lambda: SimpleNamespace(ingest=deps))
    monkeypatch.setattr(ingest_handler, "metrics", metrics)
    etag = source.put(BUCKET, "incoming/twice.jsonl", body)

    ingest_handler.record_handler(_s3_event_record("incoming/twice.jsonl", etag, "m1"), set())
    ingest_handler.record_handler(_s3_event_record("incoming/twice.jsonl", etag, "m2"), set())

    assert metrics.added == expected
