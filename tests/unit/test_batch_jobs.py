"""The batch-job store's state rules (the runner's thread is not started: ``start`` records the job)."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.bedrock_emulator.batch_jobs import BatchJob, BatchJobs
from local_stack.bedrock_emulator.errors import BedrockError

REQUEST = {
    "jobName": "unit-job",
    "roleArn": "arn:aws:iam::123456789012:role/BatchRole",
    "modelId": "us.anthropic.claude-3-haiku-20240307-v1:0",
    "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://bucket/in/"}},
    "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
}


def _jobs() -> tuple[BatchJobs, list[BatchJob]]:
    started: list[BatchJob] = []
    return BatchJobs(lambda _jobs, job: started.append(job)), started


def _create(jobs: BatchJobs, **change: Any) -> str:
    return str(jobs.create(REQUEST | change, "eu-west-1", frozenset())["jobArn"])


def test_a_stopping_job_moves_only_to_stopped_or_failed() -> None:
    jobs, started = _jobs()
    arn = _create(jobs)
    job = started[0]
    assert jobs.transition(job, "Validating") is True
    jobs.stop(arn)
    assert jobs.get(arn)["status"] == "Stopping"
    assert jobs.transition(job, "InProgress") is False  # the runner's next step cannot undo the stop
    assert jobs.get(arn)["status"] == "Stopping"
    assert jobs.transition(job, "Stopped") is True
    got = jobs.get(arn)
    assert got["status"] == "Stopped" and "endTime" in got
    with pytest.raises(BedrockError, match="State was: Stopped"):
        jobs.stop(job.job_id)


def test_a_reset_job_is_gone_for_its_runner() -> None:
    jobs, started = _jobs()
    _create(jobs)
    jobs.reset()
    assert jobs.transition(started[0], "Validating") is None
    assert started[0].stop_requested.is_set()
    assert jobs.list({})["invocationJobSummaries"] == []


def test_arn_region_model_and_token() -> None:
    jobs, started = _jobs()
    arn = _create(jobs, clientRequestToken="abc-123")
    assert arn == f"arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job/{started[0].job_id}"
    assert started[0].model_id == "anthropic.claude-3-haiku-20240307-v1:0"  # the profile's base model
    assert _create(jobs, clientRequestToken="abc-123") == arn and len(started) == 1
    described = jobs.get(arn)
    assert described["modelId"] == REQUEST["modelId"] and described["timeoutDurationInHours"] == 24
    assert (described["totalRecordCount"], described["processedRecordCount"]) == (0, 0)


def test_several_violations_are_reported_together() -> None:
    jobs, started = _jobs()
    with pytest.raises(BedrockError, match=r"^ValidationException: 2 validation errors detected: ") as raised:
        _create(jobs, jobName="bad name", roleArn="role")
    assert "'jobName'" in raised.value.message and "'roleArn'" in raised.value.message
    assert started == []
