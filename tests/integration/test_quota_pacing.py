"""Pacing under Bedrock quotas on the local stack (issue 19): the shared schedule on moto's DynamoDB.

A pipeline-level test (30 items against an emulator quota of 20/min with the quota overstated 6x in
BEDROCK_MODEL_RPM) did not finish: it stalled after the first 20 calls; see the branch's report."""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from bedrock_pipeline.pacer_store import DynamoCallPacer
from bedrock_pipeline.pacing import PaceRules, interval_s
from local_stack.resources import LocalResources

MODEL = "amazon.nova-lite-v1:0"


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
