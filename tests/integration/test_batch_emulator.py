"""Bedrock batch inference jobs on the emulator, through boto3's ``bedrock`` client, with moto's S3,
EventBridge and SQS: the control plane, the output files, the states and their events, the faults."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from local_stack.bedrock_emulator import EmulatorAdmin, EmulatorServer
from local_stack.bedrock_emulator.batch_runner import PARTIAL_FAULT_MESSAGE
from local_stack.eventbridge import ensure_batch_events_rule
from local_stack.resources import (
    ResourceNames,
    aws_client,
    delete_resources,
    ensure_resources,
    lookup_resources,
)

pytestmark = pytest.mark.integration

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatchRole"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
FAST = {"state_delay_seconds": 0.05, "minimum_records": 100}


@pytest.fixture(scope="module")
def emulator(moto_server: str) -> Iterator[EmulatorServer]:
    with EmulatorServer(seed=3, aws_endpoint=moto_server) as server:
        yield server


@pytest.fixture
def batch(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator.reset()
    emulator.configure_batch(**FAST)
    yield emulator
    emulator.reset()


@pytest.fixture
def bucket(moto_server: str) -> str:
    name = f"batch-{uuid.uuid4().hex[:12]}"
    aws_client("s3", moto_server).create_bucket(Bucket=name)
    return name


def _bedrock(emulator: EmulatorServer, *, validate: bool = True) -> Any:
    """``validate=False``: botocore sends what it would refuse (min/max), so the server's checks run."""
    return boto3.client(
        "bedrock",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=validate),
    )


def _runtime(emulator: EmulatorServer) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _anthropic(number: int) -> dict[str, Any]:
    return {
        "recordId": f"REC{number:08d}",
        "modelInput": {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": [{"type": "text", "text": f"What is {number} + 1?"}]}],
        },
    }


def _upload(s3: Any, bucket: str, key: str, records: list[dict[str, Any]]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())


def _create(
    bedrock: Any, bucket: str, name: str, *, model: str = HAIKU, prefix: str = "in/", **extra: Any
) -> str:
    return str(
        bedrock.create_model_invocation_job(
            jobName=name,
            roleArn=ROLE,
            modelId=model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/{prefix}"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}},
            **extra,
        )["jobArn"]
    )


def _wait(bedrock: Any, arn: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {arn} did not end in {timeout} s")


def _read_jsonl(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(
        item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    )


def test_a_job_reads_its_input_and_writes_bedrocks_output_layout(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/part-1.jsonl", [_anthropic(n) for n in range(60)])
    _upload(s3, bucket, "in/part-2.jsonl", [_anthropic(n) for n in range(60, 110)])
    arn = _create(bedrock, bucket, "emulated-job-1")
    job_id = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{job_id}"
    job = _wait(bedrock, arn)
    assert job["status"] == "Completed", job.get("message")
    assert job["jobName"] == "emulated-job-1" and job["modelId"] == HAIKU and job["roleArn"] == ROLE
    assert (job["totalRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (110, 110, 0)
    assert job["endTime"] >= job["submitTime"] and "jobExpirationTime" in job
    assert _keys(s3, bucket, "out/") == [
        f"out/{job_id}/manifest.json.out",
        f"out/{job_id}/part-1.jsonl.out",
        f"out/{job_id}/part-2.jsonl.out",
    ]
    first = _read_jsonl(s3, bucket, f"out/{job_id}/part-1.jsonl.out")
    assert [line["recordId"] for line in first] == [f"REC{n:08d}" for n in range(60)]
    assert first[3]["modelInput"] == _anthropic(3)["modelInput"]
    output = first[3]["modelOutput"]
    assert output["type"] == "message" and output["stop_reason"] == "end_turn"
    # The same answer and tokens as the emulator's Converse for the same request.
    converse = _runtime(batch).converse(
        modelId=HAIKU,
        messages=[{"role": "user", "content": [{"text": "What is 3 + 1?"}]}],
        inferenceConfig={"maxTokens": 50},
    )
    assert output["content"] == [
        {"type": "text", "text": converse["output"]["message"]["content"][0]["text"]}
    ]
    assert output["usage"]["input_tokens"] == converse["usage"]["inputTokens"]
    assert output["usage"]["output_tokens"] == converse["usage"]["outputTokens"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{job_id}/manifest.json.out")["Body"].read())
    lines = first + _read_jsonl(s3, bucket, f"out/{job_id}/part-2.jsonl.out")
    assert manifest == {
        "totalRecordCount": 110,
        "processedRecordCount": 110,
        "successRecordCount": 110,
        "errorRecordCount": 0,
        "inputTokenCount": sum(line["modelOutput"]["usage"]["input_tokens"] for line in lines),
        "outputTokenCount": sum(line["modelOutput"]["usage"]["output_tokens"] for line in lines),
    }


def test_nova_and_llama_records_are_answered_in_their_native_shapes(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    batch.configure_batch(minimum_records=1)
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    nova = {
        "messages": [{"role": "user", "content": [{"text": "What is 2 + 2?"}]}],
        "schemaVersion": "messages-v1",
    }
    llama = {"prompt": "What is 2 + 2?", "max_gen_len": 40}
    _upload(s3, bucket, "nova/a.jsonl", [{"recordId": "N1", "modelInput": nova}])
    _upload(s3, bucket, "llama/a.jsonl", [{"modelInput": llama}])  # no recordId: the job adds one
    nova_arn = _create(bedrock, bucket, "nova-job", model=NOVA, prefix="nova/a.jsonl")
    llama_arn = _create(bedrock, bucket, "llama-job", model=f"us.{LLAMA}", prefix="llama/")
    assert _wait(bedrock, nova_arn)["status"] == "Completed"
    assert _wait(bedrock, llama_arn)["status"] == "Completed"
    nova_line = _read_jsonl(s3, bucket, f"out/{nova_arn.rsplit('/', 1)[1]}/a.jsonl.out")[0]
    llama_line = _read_jsonl(s3, bucket, f"out/{llama_arn.rsplit('/', 1)[1]}/a.jsonl.out")[0]
    assert nova_line["modelOutput"]["output"]["message"]["content"] == [{"text": "The answer is 4."}]
    assert set(nova_line["modelOutput"]["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}
    assert llama_line["modelOutput"]["generation"] == "The answer is 4."
    assert llama_line["modelOutput"]["stop_reason"] == "stop"
    assert len(llama_line["recordId"]) == 11 and llama_line["recordId"].isalnum()


def test_shuffled_output_has_every_record_once_in_another_order(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    batch.configure_batch(shuffle_output=True)
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    arn = _create(bedrock, bucket, "shuffled")
    assert _wait(bedrock, arn)["status"] == "Completed"
    ids = [line["recordId"] for line in _read_jsonl(s3, bucket, f"out/{arn.rsplit('/', 1)[1]}/a.jsonl.out")]
    expected = [f"REC{n:08d}" for n in range(100)]
    assert sorted(ids) == expected and ids != expected


def test_a_record_the_model_cannot_read_gets_an_error_record(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    batch.configure_batch(minimum_records=2)
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(1), {"recordId": "BAD", "modelInput": {"messages": []}}])
    arn = _create(bedrock, bucket, "one-bad-record")
    job = _wait(bedrock, arn)
    assert (job["status"], job["successRecordCount"], job["errorRecordCount"]) == ("Completed", 1, 1)
    bad = _read_jsonl(s3, bucket, f"out/{arn.rsplit('/', 1)[1]}/a.jsonl.out")[1]
    assert bad["recordId"] == "BAD" and "modelOutput" not in bad
    assert bad["error"]["errorCode"] == 400 and "anthropic_version" in bad["error"]["errorMessage"]


def test_the_same_client_request_token_creates_one_job(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    first = _create(bedrock, bucket, "idempotent", clientRequestToken="job-0123abcd")
    again = _create(bedrock, bucket, "idempotent", clientRequestToken="job-0123abcd")
    other = _create(bedrock, bucket, "idempotent", clientRequestToken="job-4567efgh")
    assert first == again != other
    assert bedrock.get_model_invocation_job(jobIdentifier=first)["clientRequestToken"] == "job-0123abcd"
    names = [
        j["jobArn"]
        for j in bedrock.list_model_invocation_jobs(nameContains="idempotent")["invocationJobSummaries"]
    ]
    assert sorted(names) == sorted([first, other])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"roleArn": "arn:aws:iam::123:user/someone"}, "at 'roleArn' failed to satisfy constraint"),
        ({"jobName": "bad name!"}, "at 'jobName' failed to satisfy constraint"),
        (
            {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "https://example.com/x"}}},
            "at 'inputDataConfig.s3InputDataConfig.s3Uri' failed to satisfy constraint",
        ),
        ({"timeoutDurationInHours": 2}, "Member must have value between 24 and 168"),
        (
            {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b-1/in/", "s3InputFormat": "CSV"}}},
            "Member must satisfy enum value set: [JSONL]",
        ),
        ({"modelId": "vendor.no-such-model-v1:0"}, "The provided model identifier is invalid."),
        (
            {"modelId": "amazon.titan-text-express-v1"},
            "Batch inference is not supported for the requested model",
        ),
    ],
)
def test_create_validates_as_bedrock(batch: EmulatorServer, change: dict[str, Any], message: str) -> None:
    request = {
        "jobName": "valid-name",
        "roleArn": ROLE,
        "modelId": HAIKU,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://some-bucket/in/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://some-bucket/out/"}},
    } | change
    bedrock = _bedrock(batch, validate=False)
    with pytest.raises(bedrock.exceptions.ValidationException, match=re.escape(message)):
        bedrock.create_model_invocation_job(**request)
    assert bedrock.list_model_invocation_jobs()["invocationJobSummaries"] == []


def test_too_few_records_fail_the_job_while_validating(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(99)])
    job = _wait(bedrock, _create(bedrock, bucket, "too-few"))
    assert job["status"] == "Failed"
    assert "99 records, fewer than the minimum of 100" in job["message"]
    assert _keys(s3, bucket, "out/") == []


def test_unknown_jobs_and_bad_identifiers(batch: EmulatorServer) -> None:
    bedrock = _bedrock(batch)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")
    with pytest.raises(bedrock.exceptions.ValidationException, match="jobIdentifier"):
        bedrock.get_model_invocation_job(jobIdentifier="Not-A-Job")


def test_stop_moves_a_running_job_to_stopped_with_what_it_processed(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    batch.configure_batch(ms_per_record=20, state_delay_seconds=0.5)
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(200)])
    arn = _create(bedrock, bucket, "to-stop")
    submitted = bedrock.get_model_invocation_job(jobIdentifier=arn)
    assert (submitted["status"], submitted["totalRecordCount"], submitted["processedRecordCount"]) == (
        "Submitted",
        0,
        0,
    )
    deadline = time.monotonic() + 10
    while bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] != "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    running = bedrock.get_model_invocation_job(jobIdentifier=arn)
    assert running["totalRecordCount"] == 200 and 0 < running["processedRecordCount"] < 200
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job = _wait(bedrock, arn)
    assert job["status"] == "Stopped"
    assert 0 < job["processedRecordCount"] < 200 and job["totalRecordCount"] == 200
    lines = _read_jsonl(s3, bucket, f"out/{arn.rsplit('/', 1)[1]}/a.jsonl.out")
    assert len(lines) == job["processedRecordCount"]
    with pytest.raises(bedrock.exceptions.ValidationException, match="State was: Stopped"):
        bedrock.stop_model_invocation_job(jobIdentifier=arn)


def test_fault_fail(batch: EmulatorServer, bucket: str, moto_server: str) -> None:
    batch.configure_batch(faults={"doomed": "fail"})
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    job = _wait(bedrock, _create(bedrock, bucket, "a-doomed-job"))
    assert job["status"] == "Failed" and "fail" in job["message"]
    assert _keys(s3, bucket, "out/") == []


def test_fault_partial(batch: EmulatorServer, bucket: str, moto_server: str) -> None:
    batch.configure_batch(faults={"*": "partial"}, partial_error_rate=0.3)
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    arn = _create(bedrock, bucket, "partly")
    job = _wait(bedrock, arn)
    assert job["status"] == "PartiallyCompleted"
    lines = _read_jsonl(s3, bucket, f"out/{arn.rsplit('/', 1)[1]}/a.jsonl.out")
    errors = [line for line in lines if "error" in line]
    assert 10 < len(errors) < 50 and job["errorRecordCount"] == len(errors)
    assert job["successRecordCount"] == 100 - len(errors)
    assert errors[0]["error"] == {"errorCode": 500, "errorMessage": PARTIAL_FAULT_MESSAGE}


def test_fault_expire(batch: EmulatorServer, bucket: str, moto_server: str) -> None:
    batch.configure_batch(faults={"late": "expire"})
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    job = _wait(bedrock, _create(bedrock, bucket, "too-late"))
    assert job["status"] == "Expired" and "jobExpirationTime" in job
    assert _keys(s3, bucket, "out/") == []


def test_list_filters_and_pages(batch: EmulatorServer, bucket: str, moto_server: str) -> None:
    batch.configure_batch(faults={"broken": "fail"})
    s3, bedrock = aws_client("s3", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    arns = [_create(bedrock, bucket, name) for name in ("alpha-1", "alpha-2", "broken-3")]
    for arn in arns:
        _wait(bedrock, arn)
    failed = bedrock.list_model_invocation_jobs(statusEquals="Failed")["invocationJobSummaries"]
    assert [j["jobArn"] for j in failed] == [arns[2]]
    alphas = bedrock.list_model_invocation_jobs(nameContains="alpha", sortOrder="Ascending")
    assert [j["jobArn"] for j in alphas["invocationJobSummaries"]] == arns[:2]
    pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(PaginationConfig={"PageSize": 2})
    seen = [j["jobArn"] for page in pages for j in page["invocationJobSummaries"]]
    assert seen == list(reversed(arns))  # newest first by default
    later = datetime.now(UTC) + timedelta(hours=1)
    assert bedrock.list_model_invocation_jobs(submitTimeAfter=later)["invocationJobSummaries"] == []
    before = bedrock.list_model_invocation_jobs(submitTimeBefore=later)["invocationJobSummaries"]
    assert len(before) == 3
    admin = EmulatorAdmin(batch.url)
    assert admin.config()["batch"]["faults"] == {"broken": "fail"}
    assert admin.configure_batch(minimum_records=7)["batch"]["minimum_records"] == 7
    with pytest.raises(urllib.error.HTTPError) as refused:
        admin.configure_batch(faults={"x": "explode"})
    assert refused.value.code == 400 and batch.config()["batch"]["faults"] == {"broken": "fail"}


def test_state_changes_reach_the_rules_queue_through_moto_eventbridge(
    batch: EmulatorServer, bucket: str, moto_server: str
) -> None:
    """PutEvents on moto's default bus, delivered by moto to the rule's SQS target (no shortcut)."""
    queue_url, _ = ensure_batch_events_rule(
        aws_client("sqs", moto_server),
        aws_client("events", moto_server),
        f"batch-events-{uuid.uuid4().hex[:8]}",
    )
    batch.configure_batch(faults={"doomed": "fail"})
    s3, sqs, bedrock = aws_client("s3", moto_server), aws_client("sqs", moto_server), _bedrock(batch)
    _upload(s3, bucket, "in/a.jsonl", [_anthropic(n) for n in range(100)])
    arn = _create(bedrock, bucket, "with-events")
    failing = _create(bedrock, bucket, "doomed-with-events")
    assert _wait(bedrock, arn)["status"] == "Completed"
    assert _wait(bedrock, failing)["status"] == "Failed"
    events: dict[str, list[dict[str, Any]]] = {arn: [], failing: []}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(map(len, events.values())) < 8:
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in received.get("Messages", []):
            event = json.loads(message["Body"])
            events[event["detail"]["batchJobArn"]].append(event)
    failed = events[failing][-1]["detail"]
    assert [e["detail"]["status"] for e in events[failing]] == ["Submitted", "Validating", "Failed"]
    assert failed["failureMessage"] == bedrock.get_model_invocation_job(jobIdentifier=failing)["message"]
    assert [e["detail"]["status"] for e in events[arn]] == [
        "Submitted",
        "Validating",
        "Scheduled",
        "InProgress",
        "Completed",
    ]
    last = events[arn][-1]
    assert (last["source"], last["detail-type"]) == ("aws.bedrock", "Batch Inference Job State Change")
    assert last["resources"] == [arn] and last["region"] == "us-east-1"
    assert last["detail"] | {"creationTime": "-"} == {
        "version": "0.0",
        "accountId": "123456789012",
        "batchJobName": "with-events",
        "batchJobArn": arn,
        "batchModelId": f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}",
        "status": "Completed",
        "failureMessage": "",
        "creationTime": "-",
    }


def test_the_stack_resources_carry_the_rule_and_its_queue(moto_server: str) -> None:
    names = ResourceNames.unique("batch")
    resources = ensure_resources(moto_server, names)
    assert ensure_resources(moto_server, names) == resources  # idempotent
    events = aws_client("events", moto_server)
    rule = events.describe_rule(Name=resources.batch_events_rule)
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.bedrock"],
        "detail-type": ["Batch Inference Job State Change"],
    }
    targets = events.list_targets_by_rule(Rule=resources.batch_events_rule)["Targets"]
    queue_arn = aws_client("sqs", moto_server).get_queue_attributes(
        QueueUrl=resources.batch_events_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert [t["Arn"] for t in targets] == [queue_arn]
    assert lookup_resources(moto_server, names).batch_events_queue_url == resources.batch_events_queue_url
    delete_resources(moto_server, resources)
    assert resources.batch_events_rule not in [r["Name"] for r in events.list_rules()["Rules"]]
