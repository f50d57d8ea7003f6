"""The job ledger on moto's DynamoDB (server mode): every item ends once, however often and however
concurrently its end is written, and the job's totals add up across its end shards."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from bedrock_pipeline.domain import JobRef
from bedrock_pipeline.ledger import END_SHARDS, ItemEnd, JobCounts, JobLedger, item_digest
from local_stack.resources import LocalResources


@pytest.fixture
def ledger(aws_env: dict[str, str], local_resources: LocalResources) -> JobLedger:
    del aws_env
    return JobLedger(boto3.client("dynamodb"), local_resources.jobs_table)


def _job(job_id: str) -> JobRef:
    return JobRef(
        job_id=job_id,
        experiment_id="1",
        parent_run_id="r",
        source_bucket="b",
        source_key="incoming/x.jsonl",
        source_etag="e",
    )


def test_each_item_counts_once_under_concurrent_duplicate_ends(ledger: JobLedger) -> None:
    items = [f"e:rec-{n}:model" for n in range(150)]
    # The test means something only if the items spread over several shards.
    assert len({int(item_digest(i)[:8], 16) % END_SHARDS for i in items}) > 40
    ledger.register(_job("j1"), expected=len(items), rejected_lines=2)
    attempts = [(item, n % 3 != 0) for item in items for n in range(4)]  # 4 deliveries of each
    with ThreadPoolExecutor(max_workers=16) as pool:
        firsts = list(
            pool.map(lambda a: ledger.record_end("j1", a[0], succeeded=a[0].endswith("0:model")), attempts)
        )
    assert sum(firsts) == len(items)
    expected_ok = sum(1 for i in items if i.endswith("0:model"))
    assert ledger.counts("j1") == JobCounts(
        expected=150, succeeded=expected_ok, failed=150 - expected_ok, rejected_lines=2, finalized=False
    )
    claimed = ledger.claim_finalization("j1")
    assert claimed is not None and claimed.job == _job("j1") and claimed.counts.complete
    assert ledger.claim_finalization("j1") is None


def test_item_end_reports_how_an_item_ended(ledger: JobLedger) -> None:
    ledger.register(_job("j2"), expected=3, rejected_lines=0)
    assert ledger.item_end("j2", "a") is None
    assert ledger.record_end("j2", "a", succeeded=True)
    assert ledger.record_end("j2", "b", succeeded=False)
    assert ledger.record_end("j2", "c", succeeded=False, retryable=True)
    # A second end with the other outcome is still a duplicate, and changes nothing.
    assert not ledger.record_end("j2", "a", succeeded=False)
    assert [ledger.item_end("j2", k) for k in "abc"] == [
        ItemEnd(succeeded=True, retryable=False),
        ItemEnd(succeeded=False, retryable=False),
        ItemEnd(succeeded=False, retryable=True),
    ]
    assert ledger.counts("j2") == JobCounts(3, 1, 2, 0, False)
    # Another job's items with the same keys are its own.
    assert ledger.item_end("other", "a") is None


def test_a_redriven_item_revises_its_end_once_and_reopens_the_job(ledger: JobLedger) -> None:
    ledger.register(_job("j3"), expected=2, rejected_lines=0)
    ledger.record_end("j3", "a", succeeded=True)
    ledger.record_end("j3", "gave-up", succeeded=False, retryable=True)
    assert ledger.claim_finalization("j3")
    ledger.mark_finalized("j3")
    assert ledger.counts("j3") == JobCounts(2, 1, 1, 0, True)

    assert not ledger.revise_end("j3", "a", succeeded=True)  # not retryable: nothing to revise
    assert ledger.revise_end("j3", "gave-up", succeeded=True)
    assert not ledger.revise_end("j3", "gave-up", succeeded=True)  # a duplicate of the redriven message
    assert ledger.item_end("j3", "gave-up") == ItemEnd(succeeded=True, retryable=False)
    assert ledger.counts("j3") == JobCounts(2, 2, 0, 0, False)
    assert ledger.claim_finalization("j3")


def test_a_redriven_item_that_fails_again_stays_failed_and_final(ledger: JobLedger) -> None:
    ledger.register(_job("j4"), expected=1, rejected_lines=0)
    ledger.record_end("j4", "x", succeeded=False, retryable=True)
    assert ledger.revise_end("j4", "x", succeeded=False)
    assert ledger.item_end("j4", "x") == ItemEnd(succeeded=False, retryable=False)
    assert ledger.counts("j4") == JobCounts(1, 0, 1, 0, False)
    assert not ledger.revise_end("j4", "x", succeeded=True)


def test_counts_of_an_unknown_job_is_none(ledger: JobLedger) -> None:
    assert ledger.counts("nope") is None


def test_a_redelivered_job_is_known_as_enqueued_and_retries_add_up_on_the_job(ledger: JobLedger) -> None:
    """Given a job registered and enqueued, when its event comes again, then register says so (ingest
    enqueues nothing twice); retries counted concurrently all land on the job's counters."""
    assert ledger.register(_job("j5"), expected=3, rejected_lines=0) is False  # new: enqueue it
    assert ledger.register(_job("j5"), expected=3, rejected_lines=0) is False  # not marked yet: again
    ledger.mark_enqueued("j5")
    assert ledger.register(_job("j5"), expected=3, rejected_lines=0) is True
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: ledger.count_retry("j5"), range(4)))
    counts = ledger.counts("j5")
    assert counts is not None and counts.retries == 4 and counts.ended == 0
