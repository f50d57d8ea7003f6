"""Pacing under Bedrock quotas on the local stack (issue 19): the shared schedule on moto's DynamoDB,
and a batch larger than an emulator quota it overstates, whose items are requeued more than once."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from bedrock_pipeline import settings
from bedrock_pipeline.pace_policy import PaceRules
from bedrock_pipeline.pace_schedule import (
    interval_s,
)
from bedrock_pipeline.pacer_store import DynamoCallPacer
from bedrock_pipeline.pacing import (
    SHALLOW_FACTOR,
)
from local_stack.resources import LocalResources
from tests.conftest import ResourcesFactory
from tests.integration.harness import Stack

MODEL = "amazon.nova-lite-v1:0"


@pytest.fixture
def local_resources(local_resources_factory: ResourcesFactory) -> LocalResources:
    # Two receives before the DLQ: an item that spent receives while it waited for the quota (or whose
    # requeue failed) lands there within the test, instead of hiding behind the back-off.
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

    time.sleep(max(0.0, max(slots) - time.time()))  # the 40 calls made (a throttle comes at its slot)
    for _ in range(3):
        for pacer in runners:  # both see the same overshoot: 6 of the 40 calls throttled
            pacer.throttled(MODEL)
    item = db.get_item(TableName=local_resources.jobs_table, Key={"pk": {"S": f"PACE#{MODEL}"}})["Item"]
    # More than NOISE_MARGIN of the calls throttled, in a minute far from full (which tells no quota):
    # a 30 % cut, once (the throttles after it are in its cooldown), and every throttle counted: the
    # cut's test window starts at once (a shallow cut's), so those after it count in a new window.
    assert float(item["rate_rpm"]["N"]) == pytest.approx(600 * SHALLOW_FACTOR)
    counted = float(item["prev_strikes"]["N"]) + float(item["window_strikes"]["N"])
    assert counted == 6 and item["trusted"] == {"BOOL": False} and float(item["test_from"]["N"]) > 0


def test_an_item_written_by_the_earlier_rules_is_read_booked_and_cut(
    aws_env: dict[str, str], local_resources: LocalResources
) -> None:
    rules = PaceRules(ceiling_rpm=600, start_rpm=600)
    db = boto3.client("dynamodb")
    now = time.time()
    key = {"pk": {"S": f"PACE#{MODEL}"}}
    db.put_item(  # the fields pacer_store.py wrote before issue 19's fix: cut 5 s ago, to 300/min
        TableName=local_resources.jobs_table,
        Item={
            **key,
            "rate_rpm": {"N": "300"},
            "cut_at": {"N": f"{now - 5:.6f}"},
            "next_slot": {"N": f"{now:.6f}"},
            "cut": {"BOOL": True},
        },
    )
    pacer = DynamoCallPacer(db, local_resources.jobs_table, lambda _: rules)
    assert 0 <= pacer.book(MODEL) <= interval_s(300) + 0.1
    pacer.throttled(MODEL)  # within the old cut's cooldown, which still holds: counted, no cut
    item = db.get_item(TableName=local_resources.jobs_table, Key=key, ConsistentRead=True)["Item"]
    assert float(item["rate_rpm"]["N"]) == pytest.approx(300) and float(item["strikes"]["N"]) == 1

    db.update_item(TableName=local_resources.jobs_table, Key=key, UpdateExpression="REMOVE cut")
    fresh = DynamoCallPacer(db, local_resources.jobs_table, lambda _: rules)
    for _ in range(3):  # not cooling now: throttles beyond NOISE_MARGIN of the calls since the cut
        fresh.throttled(MODEL)  # (25 in 5 s) cut, written with every field of the new rules
    item = db.get_item(TableName=local_resources.jobs_table, Key=key, ConsistentRead=True)["Item"]
    assert float(item["rate_rpm"]["N"]) < 300 and float(item["cool_until"]["N"]) > now
    assert {"calls_before", "lost", "lost_at", "found_rpm", "trusted", "strikes"} <= item.keys()
    assert {"window_from", "window_strikes", "proven_rpm", "noise"} <= item.keys()


def test_an_item_cut_hours_ago_by_the_earlier_rules_counts_its_first_window_from_a_minute_back(
    aws_env: dict[str, str], local_resources: LocalResources
) -> None:
    """Its window starts a minute before its next slot, not at the cut two hours ago: else the first
    window would hold two hours of slots and no share of throttles would ever reach the quota's."""
    rules = PaceRules(ceiling_rpm=600, start_rpm=600)
    db = boto3.client("dynamodb")
    now = time.time()
    key = {"pk": {"S": f"PACE#{MODEL}"}}
    db.put_item(
        TableName=local_resources.jobs_table,
        Item={**key, "rate_rpm": {"N": "300"}, "cut_at": {"N": f"{now - 7200:.6f}"},
              "next_slot": {"N": f"{now:.6f}"}, "cool_until": {"N": f"{now - 7140:.6f}"}},
    )  # fmt: skip
    pacer = DynamoCallPacer(db, local_resources.jobs_table, lambda _: rules)
    # Untrusted since, the rate grew back to its 600/min ceiling long ago: the last minute holds 600
    # calls, and 70 throttled is beyond a tenth of them.
    for _ in range(70):
        pacer.throttled(MODEL)
    item = db.get_item(TableName=local_resources.jobs_table, Key=key, ConsistentRead=True)["Item"]
    assert float(item["cool_until"]["N"]) > now and float(item["cut_at"]["N"]) >= now  # a cut, now


def test_a_batch_against_an_overstated_quota_is_requeued_until_every_item_ends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a 20/min emulator quota overstated 6x in BEDROCK_MODEL_RPM and a 5 s hold, the 10 items
    past the first minute's 20 are throttled and requeued (several times each: the schedule runs far
    above the real quota), then every item ends once, and nothing reaches the DLQ.

    This stalled before: the second requeue of an item raised in the runner (the deferral count was
    read with SQSMessageAttributes.get, which returns the raw dict), silently, so the item spent its
    receives and went to the DLQ without ever ending."""
    from handlers import runtime

    monkeypatch.setenv(settings.ENV_BEDROCK_PACING, "adaptive")
    monkeypatch.setenv(settings.ENV_BEDROCK_MODEL_RPM, f"{MODEL}=120")
    monkeypatch.setenv(settings.ENV_BEDROCK_PACING_MAX_HOLD_SECONDS, "5")  # requeue rather than hold
    runtime.environment.cache_clear()
    runtime.reset_core()
    stack.emulator.configure(MODEL, requests_per_minute=20)
    items = 30
    lines = [json.dumps({"job": {"models": [MODEL], "inference": {"max_tokens": 16}}})]
    lines += [
        json.dumps({"id": f"s{i:03d}", "prompt": f"[stall {i}] Name a prime above {i}."})
        for i in range(items)
    ]
    job_id = stack.upload(key="incoming/tests/stall.jsonl", body=("\n".join(lines) + "\n").encode())

    stack.wait(job_id, timeout=240)

    results = stack.results(job_id)
    assert len(results) == items and all("error" not in line for line in results)
    stats = stack.emulator.stats()
    assert stats["models"][MODEL]["throttled"] > 0  # the quota did bite
    assert stats["outcomes"]["ok"] == items and stats["repeated_ok_requests"] == 0
    experiment = stack.mlflow.get_run(results[0]["mlflow"]["runId"]).info.experiment_id
    calls = stack.mlflow.search_runs(
        [experiment],
        f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
        max_results=100,
    )
    assert len(calls) == items  # one run per item: the runs of throttled attempts were deleted
    dlq = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.resources.work.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert dlq["ApproximateNumberOfMessages"] == "0"
