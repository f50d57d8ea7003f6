"""Work-queue messages: batches SQS accepts, and by-reference messages the DLQ view can still place."""

from __future__ import annotations

import json

from bedrock_pipeline.work_queue import (
    BODY_KEY_FIELD,
    SQS_BATCH_BYTES,
    SQS_BATCH_LIMIT,
    _batches,
    job_of_body_reference,
)


def test_batches_hold_at_most_ten_messages_and_256_kib_together() -> None:
    bodies = ["x" * 100] * 25 + ["y" * 150_000] * 3 + ["z" * 10]
    batches = list(_batches(bodies))
    assert [b for batch in batches for b in batch] == bodies  # every message, in order
    assert all(len(batch) <= SQS_BATCH_LIMIT for batch in batches)
    assert all(sum(len(b) for b in batch) <= SQS_BATCH_BYTES for batch in batches)
    # 5 small + 1 large fit together; two large do not.
    assert [len(batch) for batch in batches] == [10, 10, 6, 1, 2]


def test_a_reference_message_names_its_job_and_an_item_message_does_not() -> None:
    reference = json.dumps({"version": 1, BODY_KEY_FIELD: "results/job-abc123/items/bodies/0f0f.json"})
    assert job_of_body_reference(reference) == "job-abc123"
    assert job_of_body_reference(json.dumps({"record_id": "r", BODY_KEY_FIELD: "results/x/y"})) is None
    assert job_of_body_reference(json.dumps({BODY_KEY_FIELD: "elsewhere/x.json"})) is None
    assert job_of_body_reference("not json " + BODY_KEY_FIELD) is None
