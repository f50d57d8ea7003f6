"""A pipeline on the local stack for integration tests: the handlers cold-started against fresh
resources, fed by the event pump, with MLflow on PostgreSQL and the Bedrock emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient

from bedrock_pipeline.domain import job_id_for
from bedrock_pipeline.ledger import JobLedger
from local_stack.bedrock_emulator.server import EmulatorServer
from local_stack.event_pump import EventPump, QueueRoute
from local_stack.resources import LocalResources, handler_environment


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(seed=7) as server:
        yield server


@dataclass
class Stack:
    resources: LocalResources
    mlflow: MlflowClient
    s3: Any
    ledger: JobLedger
    pump: EventPump
    emulator: EmulatorServer

    def upload(self, path: Path | None = None, *, key: str | None = None, body: bytes | None = None) -> str:
        """Put a prompt file under incoming/ (a file, or a body under a key); returns its job id."""
        assert path is not None or (key is not None and body is not None)
        key = key or f"incoming/tests/{path.name}"  # type: ignore[union-attr]
        body = body if body is not None else path.read_bytes()  # type: ignore[union-attr]
        response = self.s3.put_object(Bucket=self.resources.bucket, Key=key, Body=body)
        return job_id_for(key, response["ETag"].strip('"'))

    def wait(self, job_id: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.ledger.counts(job_id)
            if counts is not None and counts.finalized:
                return
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {self.ledger.counts(job_id)}")

    def results(self, job_id: str, name: str = "results.jsonl") -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.resources.bucket, Key=f"results/{job_id}/{name}")["Body"]
        return [json.loads(line) for line in body.read().decode().splitlines() if line]


@pytest.fixture
def stack(
    aws_env: dict[str, str],
    moto_server: str,
    mlflow_server_postgres: str,
    local_resources: LocalResources,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """A cold start of the handlers against fresh resources, fed by the event pump."""
    env = handler_environment(
        moto_url=moto_server,
        mlflow_url=mlflow_server_postgres,
        resources=local_resources,
        emulator_url=emulator.url,
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from handlers import runtime

    runtime.environment.cache_clear()
    runtime.reset_core()
    emulator.reset()
    emulator.configure_batch(aws_endpoint=moto_server)  # batch jobs read/write S3 and put events on moto
    pump = EventPump(
        [
            QueueRoute(local_resources.ingest.url, "handlers.ingest.handler", wait_time_seconds=1),
            QueueRoute(local_resources.work.url, "handlers.runner.handler", wait_time_seconds=1),
        ],
        endpoint_url=moto_server,
    )
    pump.start()
    try:
        yield Stack(
            resources=local_resources,
            mlflow=MlflowClient(tracking_uri=mlflow_server_postgres),
            s3=boto3.client("s3"),
            ledger=JobLedger(boto3.client("dynamodb"), local_resources.jobs_table),
            pump=pump,
            emulator=emulator,
        )
    finally:
        pump.stop()
        runtime.environment.cache_clear()
        runtime.reset_core()
