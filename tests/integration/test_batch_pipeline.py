"""Batch mode end to end on the local stack (issue 20): ingest submits Bedrock batch jobs to the
emulator, which runs them on moto's S3 and sends their state changes through moto's EventBridge to the
batch-events queue; the collector and the runners, fed by the event pump, turn every record into the
run and results line an on-demand call makes, at the batch price, exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient

from bedrock_pipeline import settings
from bedrock_pipeline.batch.adapters import DynamoBatchRegistry
from bedrock_pipeline.domain import job_id_for
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.collect_batch import BatchChunk, chunk_key
from local_stack.bedrock_emulator.server import EmulatorServer
from local_stack.event_pump import EventPump, QueueRoute
from local_stack.resources import LocalResources, handler_environment
from pipeline_cli.status import print_status
from pipeline_cli.target import Target
from tests.conftest import ResourcesFactory

NOVA = "amazon.nova-lite-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch-inference"
RECORDS = 1_000


@dataclass
class BatchStack:
    resources: LocalResources
    mlflow: MlflowClient
    s3: Any
    sqs: Any
    dynamodb: Any
    ledger: JobLedger

    def wait_finalized(self, job_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.ledger.counts(job_id)
            if counts is not None and counts.finalized:
                return
            time.sleep(1)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {self.ledger.counts(job_id)}")

    def wait_drained(self, timeout: float = 120) -> None:
        """Until the work and batch-events queues hold nothing, visible or in flight, for a few polls."""
        urls = (self.resources.work.url, self.resources.batch_events_queue_url)
        deadline, quiet = time.monotonic() + timeout, 0
        while time.monotonic() < deadline and quiet < 3:
            busy = 0
            for url in urls:
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                busy += sum(int(v) for v in attributes.values())
            quiet = quiet + 1 if busy == 0 else 0
            time.sleep(1)
        assert quiet >= 3, "the queues did not drain"

    def results(self, job_id: str, name: str = "results.jsonl") -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.resources.bucket, Key=f"results/{job_id}/{name}")["Body"].read()
        return [json.loads(line) for line in body.decode().splitlines() if line]

    def call_runs(self, job_id: str) -> list[Any]:
        filter_string = f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'"
        experiments = [e.experiment_id for e in self.mlflow.search_experiments()]
        return list(self.mlflow.search_runs(experiments, filter_string, max_results=10_000))


@pytest.fixture
def batch_stack(
    aws_env: dict[str, str],
    moto_server: str,
    mlflow_server_postgres: str,
    local_resources_factory: ResourcesFactory,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BatchStack]:
    # A chunk of records takes seconds to record: visibility long enough that none is redelivered while
    # it runs (a redelivery is tested on purpose below).
    resources = local_resources_factory(visibility_timeouts=120)
    env = handler_environment(
        moto_url=moto_server,
        mlflow_url=mlflow_server_postgres,
        resources=resources,
        emulator_url=emulator.url,
    )
    for name, value in {**env, settings.ENV_BATCH_ROLE_ARN: ROLE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from handlers import runtime

    runtime.reset_core()
    emulator.reset()
    emulator.configure_batch(aws_endpoint=moto_server, state_delay_seconds=0.2, shuffle_output=True)
    pump = EventPump(
        [
            QueueRoute(resources.ingest.url, "handlers.ingest.handler", wait_time_seconds=1),
            QueueRoute(
                resources.work.url,
                "handlers.runner.handler",
                wait_time_seconds=1,
                concurrency=2,
                function_timeout_seconds=settings.RUNNER_TIMEOUT_SECONDS,
            ),
            QueueRoute(resources.batch_events_queue_url, "handlers.collector.handler", batch_size=1),
        ],
        endpoint_url=moto_server,
    )
    pump.start()
    try:
        yield BatchStack(
            resources=resources,
            mlflow=MlflowClient(tracking_uri=mlflow_server_postgres),
            s3=boto3.client("s3"),
            sqs=boto3.client("sqs"),
            dynamodb=boto3.client("dynamodb"),
            ledger=JobLedger(boto3.client("dynamodb"), resources.jobs_table),
        )
    finally:
        pump.stop()
        runtime.reset_core()


def test_a_thousand_records_on_two_models_run_in_batch_once_each_at_the_batch_price(
    batch_stack: BatchStack, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = batch_stack
    lines = [{"job": {"mode": "batch", "models": [NOVA, HAIKU]}}] + [
        {"id": f"q{i:04d}", "prompt": f"Question {i}: name a prime number."} for i in range(RECORDS)
    ]
    key = "incoming/tests/batch-1000.jsonl"
    put = stack.s3.put_object(
        Bucket=stack.resources.bucket,
        Key=key,
        Body="".join(json.dumps(line) + "\n" for line in lines).encode(),
    )
    job_id = job_id_for(key, put["ETag"].strip('"'))
    stack.wait_finalized(job_id, timeout=1200)

    # One Bedrock batch job per model, each submitted and collected once.
    registry = DynamoBatchRegistry(stack.dynamodb, stack.resources.jobs_table)
    parts = registry.parts(job_id)
    assert sorted(p.model_id for p in parts) == sorted([NOVA, HAIKU])
    assert all(p.records == RECORDS and registry.collected(p.arn) for p in parts)

    results = stack.results(job_id)
    assert len(results) == 2 * RECORDS
    assert len({(line["recordId"], line["modelId"]) for line in results}) == 2 * RECORDS
    prices = PriceTable.load()
    for line in results:
        assert "error" not in line, line
        assert "latencyMs" not in line  # Bedrock measures no latency per batch record
        batch = prices.cost(line["modelId"], line["usage"], tier="batch")
        assert batch is not None and line["costUsd"] == pytest.approx(batch.total_usd)
        assert line["mlflow"]["runId"]
    summary = json.loads(
        stack.s3.get_object(Bucket=stack.resources.bucket, Key=f"results/{job_id}/summary.json")[
            "Body"
        ].read()
    )
    assert summary["totals"]["records"] == 2 * RECORDS
    assert summary["totals"]["on_demand_cost_usd"] == pytest.approx(2 * summary["totals"]["cost_usd"])

    runs = stack.call_runs(job_id)
    assert len(runs) == 2 * RECORDS
    assert {run.data.tags["pipeline.execution"] for run in runs} == {"batch"}
    assert "latency_ms" not in runs[0].data.metrics and runs[0].data.metrics["cost_usd"] > 0
    parent = stack.mlflow.get_run(results[0]["mlflow"]["runId"]).data.tags
    assert parent["pipeline.job_id"] == job_id

    # A redelivered event after a crash between sending the chunks and marking the job collected: every
    # chunk is sent again. And one chunk delivered a second time on its own.
    part = parts[0]
    stack.dynamodb.update_item(
        TableName=stack.resources.jobs_table,
        Key={"pk": {"S": f"BATCHJOB#{part.arn}"}},
        UpdateExpression="REMOVE collected_status",
    )
    event = {
        "version": "0",
        "source": settings.BATCH_EVENT_SOURCE,
        "detail-type": settings.BATCH_EVENT_DETAIL_TYPE,
        "resources": [part.arn],
        "detail": {"batchJobArn": part.arn, "status": "Completed"},
    }
    stack.sqs.send_message(QueueUrl=stack.resources.batch_events_queue_url, MessageBody=json.dumps(event))
    chunk = BatchChunk(
        arn=part.arn, records_key=chunk_key(part, 1), count=settings.BATCH_CHUNK_RECORDS
    )  # the first chunk, delivered again
    stack.sqs.send_message(QueueUrl=stack.resources.work.url, MessageBody=chunk.to_message())
    time.sleep(3)
    stack.wait_drained()

    assert registry.collected(part.arn)  # the redelivered event was collected again
    assert len(stack.call_runs(job_id)) == 2 * RECORDS
    assert stack.results(job_id) == results
    counts = stack.ledger.counts(job_id)
    assert counts is not None and counts.succeeded == 2 * RECORDS and counts.failed == 0

    # `status` shows each Bedrock job's state and progress, and the on-demand cost next to the batch cost.
    target = Target(
        name="test",
        bucket=stack.resources.bucket,
        jobs_table=stack.resources.jobs_table,
        mlflow_uri="",
        client_kwargs={},
        bedrock_endpoint=emulator.url,
    )
    capsys.readouterr()
    assert print_status(target, job_id) == 0
    printed = capsys.readouterr().out
    for part in parts:
        assert (
            f"Bedrock batch job {part.name} ({part.model_id}): Completed; {RECORDS:,}/{RECORDS:,}" in printed
        )
    assert "on-demand USD" in printed

    # The parent run says how the job ran and why.
    (parent_run,) = stack.mlflow.search_runs(
        [runs[0].info.experiment_id], f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'job'"
    )
    assert parent_run.data.tags["pipeline.execution"] == "batch"
    assert parent_run.data.tags["pipeline.execution_reason"] == "mode batch"
    assert parent_run.data.metrics["batch_job_seconds"] > 0  # the Bedrock jobs' duration


def test_a_job_whose_state_change_event_was_lost_is_collected_by_the_scheduled_sweep(
    batch_stack: BatchStack, emulator: EmulatorServer
) -> None:
    import uuid

    from handlers import collector
    from local_stack.lambda_sqs import LambdaContext

    stack = batch_stack
    emulator.configure_batch(events="off")  # EventBridge never delivers this job's state changes
    records = 120  # above Bedrock's minimum of 100 records per batch job
    lines = [{"job": {"mode": "batch", "models": [NOVA]}}] + [
        {"id": f"s{i:03d}", "prompt": f"Sweep question {i}."} for i in range(records)
    ]
    key = "incoming/tests/batch-swept.jsonl"
    put = stack.s3.put_object(
        Bucket=stack.resources.bucket,
        Key=key,
        Body="".join(json.dumps(line) + "\n" for line in lines).encode(),
    )
    job_id = job_id_for(key, put["ETag"].strip('"'))
    registry = DynamoBatchRegistry(stack.dynamodb, stack.resources.jobs_table)
    bedrock = boto3.client("bedrock", endpoint_url=emulator.url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        parts = registry.parts(job_id)
        if parts and bedrock.get_model_invocation_job(jobIdentifier=parts[0].arn)["status"] == "Completed":
            break
        time.sleep(0.5)
    (part,) = registry.parts(job_id)
    time.sleep(2)
    assert not registry.collected(part.arn)  # no event came: nothing collected it

    context = LambdaContext(
        function_name="collector",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:collector",
        memory_limit_in_mb=512,
        aws_request_id=str(uuid.uuid4()),
        timeout_seconds=60,
    )
    swept = collector.handler({"detail-type": "Scheduled Event", "source": "aws.events"}, context)

    assert swept == {"collected": [part.arn]}
    stack.wait_finalized(job_id, timeout=300)
    results = stack.results(job_id)
    assert len(results) == records and all("error" not in line for line in results)
    assert len(stack.call_runs(job_id)) == records
    # A second sweep finds nothing left to collect.
    assert collector.handler({"detail-type": "Scheduled Event"}, context) == {"collected": []}
