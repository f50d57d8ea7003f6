"""Pacing under Bedrock quotas on the local stack (issue 19): the shared schedule on moto's DynamoDB,
and a batch over an emulator quota smaller than the batch that ends without a DLQ message."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from bedrock_pipeline import settings
from bedrock_pipeline.pacer_store import DynamoCallPacer
from bedrock_pipeline.pacing import PaceRules, interval_s
from local_stack.resources import LocalResources
from tests.conftest import ResourcesFactory
from tests.integration.harness import Stack, emulator, stack  # noqa: F401  (fixtures)

MODEL = "amazon.nova-lite-v1:0"


@pytest.fixture
def local_resources(local_resources_factory: ResourcesFactory) -> LocalResources:
    # Two receives before the DLQ: a throttled item that spent a receive per throttle would land there.
    return local_resources_factory(max_receive_count=2)


def test_two_runners_book_one_schedule_and_one_overshoot_cuts_the_rate_once(
    aws_env: dict[str, str], local_resources: LocalResources
) -> None:
    rules = PaceRules(ceiling_rpm=600, start_rpm=600, cooldown_s=30)
    db = boto3.client("dynamodb")
    runners = [DynamoCallPacer(db, local_resources.jobs_table, lambda _: rules) for _ in range(2)]
    slots: list[float] = []
    lock = threading.Lock()

    def book(pacer: DynamoCallPacer) -> None:
        for _ in range(10):
            wait = pacer.book(MODEL)
            with lock:
                slots.append(time.time() + wait)

    threads = [threading.Thread(target=book, args=(runners[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 40 bookings from two processes at 600/min: one schedule, so they span about 40 intervals.
    assert max(slots) - min(slots) >= 35 * interval_s(600) - rules.max_lag_s

    for pacer in runners:  # both see the same overshoot
        pacer.throttled(MODEL)
    item = db.get_item(TableName=local_resources.jobs_table, Key={"pk": {"S": f"PACE#{MODEL}"}})["Item"]
    assert float(item["rate_rpm"]["N"]) == pytest.approx(600 * rules.decrease_factor)  # cut once, not twice


def test_a_batch_larger_than_the_quota_ends_with_nothing_in_the_dlq(
    stack: Stack,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quota = 20  # per minute; 30 items need the window to slide at least once
    stack.emulator.configure(MODEL, requests_per_minute=quota)
    # The user overstates the quota: the pacer must find the real one from the throttles.
    monkeypatch.setenv(settings.ENV_BEDROCK_MODEL_RPM, f"{MODEL}=120")
    monkeypatch.setenv(settings.ENV_BEDROCK_PACING_MAX_HOLD_SECONDS, "5")  # requeue rather than hold
    lines = [json.dumps({"job": {"models": [MODEL], "inference": {"max_tokens": 8}}})]
    lines += [json.dumps({"id": f"r{i}", "prompt": f"quota {i}"}) for i in range(30)]
    job_id = stack.upload(key="incoming/tests/quota.jsonl", body=("\n".join(lines) + "\n").encode())

    stack.wait(job_id, timeout=240)

    results = stack.results(job_id)
    assert len(results) == 30 and all("error" not in line for line in results)
    stats = stack.emulator.stats()
    assert stats["models"][MODEL]["throttled"] > 0  # the quota did bite
    assert stats["repeated_ok_requests"] == 0
    sqs = boto3.client("sqs")
    dlq = sqs.get_queue_attributes(
        QueueUrl=stack.resources.work.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert dlq["ApproximateNumberOfMessages"] == "0"
