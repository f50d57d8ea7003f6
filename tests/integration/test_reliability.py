"""Fault injection on the local stack: every record of every file ends exactly once.

Real servers on loopback (moto, MLflow, the Bedrock emulator), the real handlers fed by the event
pump. Faults are injected where they happen in production: the emulator throttles, fails and stalls;
the MLflow server process is killed and restarted; a runner process is SIGKILLed mid-batch; SQS
delivers the same work message more than once; files arrive broken. Each test then reads the ledger,
the results, MLflow and the emulator's call statistics: one run and one result line per item, no
item lost, no model answer paid for twice (docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient

from bedrock_pipeline import settings
from bedrock_pipeline.domain import WorkItem, job_id_for
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.use_cases.finalize import finalize_if_complete
from bedrock_pipeline.use_cases.run_item import run_item
from local_stack.bedrock_emulator.server import EmulatorServer
from local_stack.event_pump import EventPump, QueueRoute
from local_stack.mlflow_server import MlflowServerOptions, start_mlflow_server
from local_stack.processes import ManagedProcess, free_port, spawn, wait_until_healthy
from local_stack.resources import DUMMY_CREDENTIALS, LocalResources, handler_environment
from pipeline_cli import dlq
from pipeline_cli.target import Target
from tests.conftest import ResourcesFactory

pytestmark = pytest.mark.integration

MODELS = ("amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0")
# Short everything: failed items come back after 1-2 s instead of minutes.
FAST_RETRIES = {
    "RETRY_BASE_SECONDS": "1",
    "RETRY_MAX_SECONDS": "2",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def prompt_file(records: int, tag: str, models: tuple[str, ...] = MODELS) -> bytes:
    """A job header and ``records`` records with distinct prompts (so the emulator's per-request
    statistics see a repeated answer only when the same item is really called twice)."""
    lines = [json.dumps({"job": {"models": list(models), "inference": {"max_tokens": 64}}})]
    lines += [
        json.dumps({"id": f"r{i}", "prompt": f"[{tag}] Question {i}: name a prime above {i}."})
        for i in range(records)
    ]
    return ("\n".join(lines) + "\n").encode()


class Pipeline:
    """The handlers cold-started against fresh resources; pumps started on demand."""

    def __init__(
        self, resources: LocalResources, moto_url: str, mlflow_url: str, emulator: EmulatorServer
    ) -> None:
        self.resources = resources
        self.moto_url = moto_url
        self.mlflow_url = mlflow_url
        self.emulator = emulator
        self.env = {
            **handler_environment(
                moto_url=moto_url, mlflow_url=mlflow_url, resources=resources, emulator_url=emulator.url
            ),
            **FAST_RETRIES,
        }
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.ledger = JobLedger(boto3.client("dynamodb"), resources.jobs_table)
        self.mlflow = MlflowClient(tracking_uri=mlflow_url)
        self.pumps: list[EventPump] = []

    def pump(self, *, ingest: bool = True, work: bool = True, work_pollers: int = 1) -> EventPump:
        routes = []
        if ingest:
            routes.append(QueueRoute(self.resources.ingest.url, "handlers.ingest.handler", batch_size=1))
        if work:
            routes.append(
                QueueRoute(self.resources.work.url, "handlers.runner.handler", concurrency=work_pollers)
            )
        pump = EventPump(routes, endpoint_url=self.moto_url)
        pump.start()
        self.pumps.append(pump)
        return pump

    def upload(self, name: str, body: bytes) -> str:
        key = f"incoming/reliability/{name}"
        response = self.s3.put_object(Bucket=self.resources.bucket, Key=key, Body=body)
        return job_id_for(key, response["ETag"].strip('"'))

    def wait(self, job_id: str, timeout: float = 60, *, succeeded: int | None = None) -> None:
        """Until the job is finalized (with ``succeeded`` items, when given)."""

        def done() -> bool:
            counts = self.ledger.counts(job_id)
            return counts is not None and counts.finalized and succeeded in (None, counts.succeeded)

        self.wait_for(done, timeout, f"job {job_id} to finish: {self.ledger.counts(job_id)}")

    def results(self, job_id: str, name: str = "results.jsonl") -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.resources.bucket, Key=f"results/{job_id}/{name}")["Body"]
        return [json.loads(line) for line in body.read().decode().splitlines() if line]

    def parent_run(self, job_id: str) -> Any:
        (run,) = self.mlflow.search_runs(
            [e.experiment_id for e in self.mlflow.search_experiments()],
            filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'job'",
        )
        return run

    def target(self) -> Target:
        """What the CLI talks to, pointed at this test's resources."""
        return Target(
            "local",
            self.resources.bucket,
            self.resources.jobs_table,
            self.mlflow_url,
            {"endpoint_url": self.moto_url, "region_name": "us-east-1", **DUMMY_CREDENTIALS},
        )

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def queue_depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def call_runs(self, job_id: str) -> list[Any]:
        return self.mlflow.search_runs(
            [e.experiment_id for e in self.mlflow.search_experiments()],
            filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
            max_results=5000,
        )

    def assert_exactly_once(
        self, job_id: str, items: int, *, succeeded: int | None = None
    ) -> list[dict[str, Any]]:
        """The ledger, the results file and MLflow agree: each item ended once, with one run."""
        counts = self.ledger.counts(job_id)
        assert counts is not None and counts.finalized
        assert (counts.expected, counts.ended) == (items, items)
        if succeeded is not None:
            assert counts.succeeded == succeeded
        lines = self.results(job_id)
        assert len(lines) == items
        assert len({(line["recordId"], line["modelId"]) for line in lines}) == items  # none lost, none twice
        runs = self.call_runs(job_id)
        per_item = Counter(run.data.tags["pipeline.item_digest"] for run in runs)
        assert per_item and max(per_item.values()) == 1, f"duplicate runs: {per_item.most_common(3)}"
        run_ids = {run.info.run_id for run in runs}
        for line in lines:
            if line["mlflow"]["runId"] is not None:
                assert line["mlflow"]["runId"] in run_ids
        ok_runs = [run for run in runs if run.info.status == "FINISHED"]
        assert len(ok_runs) == sum(1 for line in lines if "error" not in line)
        return lines

    def stop(self) -> None:
        for pump in self.pumps:
            pump.stop()


@pytest.fixture
def make_pipeline(
    aws_env: dict[str, str],
    moto_server: str,
    mlflow_server_postgres: str,
    local_resources_factory: ResourcesFactory,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Pipeline]]:
    """``make_pipeline(max_receive_count=5, mlflow_url=None)``: fresh resources (short visibility), the
    handlers' environment set and their cold-start caches cleared, the emulator reset."""
    from handlers import queue_retries, runtime

    built: list[Pipeline] = []

    def factory(*, max_receive_count: int = 5, mlflow_url: str | None = None) -> Pipeline:
        # Work messages: 3 s, a little longer than a batch takes here, so SQS does not hand in-flight
        # messages out again; failed items come back sooner through the handlers' own back-off.
        resources = local_resources_factory(
            visibility_timeouts={"ingest": 1, "work": 3, "evaluation": 1}, max_receive_count=max_receive_count
        )
        pipeline = Pipeline(resources, moto_server, mlflow_url or mlflow_server_postgres, emulator)
        for name, value in pipeline.env.items():
            monkeypatch.setenv(name, value)
        runtime.environment.cache_clear()
        runtime.reset_core()
        queue_retries.queue_retries.cache_clear()
        emulator.reset()
        built.append(pipeline)
        return pipeline

    yield factory
    for pipeline in built:
        pipeline.stop()
    runtime.environment.cache_clear()
    runtime.reset_core()
    queue_retries.queue_retries.cache_clear()
    emulator.reset()


def test_throttling_server_errors_and_latency_spikes_end_every_item_once(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """Given the emulator throttling 10 % of calls, failing 6 % with 500/503 and adding latency spikes,
    when an 8-record file runs on 2 models, then every item ends once as a success with one run and
    one line, and no successful model answer was ever requested twice."""
    p = make_pipeline(max_receive_count=8)
    p.emulator.configure("*", throttle_rate=0.1, error_rate=0.06, latency_ms=5, jitter_ms=300)
    p.pump()
    job_id = p.upload("faulty-bedrock.jsonl", prompt_file(8, "faults"))
    p.wait(job_id)

    p.assert_exactly_once(job_id, 16, succeeded=16)
    stats = p.emulator.stats()
    assert stats["outcomes"]["throttled"] > 0 and stats["outcomes"]["error"] > 0  # the faults did happen
    assert stats["outcomes"]["ok"] == 16
    assert stats["repeated_ok_requests"] == 0


def test_duplicated_deliveries_neither_call_again_nor_make_a_second_run(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """Given every work message of a job sent three times over (as SQS may deliver at least once, or a
    re-run ingest re-sends), when two runner pollers take them concurrently, then each item is called
    once, has one run and one line, and the copies are absorbed (idempotency + ledger)."""
    p = make_pipeline()
    p.emulator.configure("*", latency_ms=50)
    ingest = p.pump(work=False)
    job_id = p.upload("duplicates.jsonl", prompt_file(5, "dup"))
    p.wait_for(lambda: p.queue_depth(p.resources.work.url) == 10, 30, "10 work messages")
    ingest.stop()
    bodies = [m["Body"] for m in dlq.peek(p.sqs, p.resources.work.url, 10)]
    assert len(bodies) == 10
    for _ in range(2):
        p.sqs.send_message_batch(
            QueueUrl=p.resources.work.url,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
        )
    runner = p.pump(ingest=False, work_pollers=2)
    p.wait(job_id)
    p.wait_for(lambda: p.queue_depth(p.resources.work.url) == 0, 30, "the copies to be absorbed")

    p.assert_exactly_once(job_id, 10, succeeded=10)
    stats = p.emulator.stats()
    assert stats["outcomes"]["ok"] == 10 and stats["repeated_ok_requests"] == 0
    # Every copy was consumed (maybe more deletes than 30: with a 1 s visibility timeout SQS hands a slow
    # batch's messages out again, as it would on AWS), none went to the DLQ.
    assert runner.counters.deleted >= 30
    assert p.queue_depth(p.resources.work.dlq_url) == 0


def test_the_crash_window_between_the_model_call_and_the_ledger_mark(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """Given a runner that dies (an uncatchable stop, as a SIGKILL) after its run was created and the
    model answered but before the run was finished and the ledger marked, when the item is delivered
    again after the dead invocation's deadline, then the retry reuses that run (found by its
    `pipeline.item_digest` tag) and the cached answer: one run, one call, one line."""
    from handlers import runtime

    p = make_pipeline()
    ingest = p.pump(work=False)
    job_id = p.upload("crash-window.jsonl", prompt_file(1, "crash", models=MODELS[:1]))
    p.wait_for(lambda: p.queue_depth(p.resources.work.url) == 1, 30, "the work message")
    ingest.stop()
    (body,) = [m["Body"] for m in dlq.peek(p.sqs, p.resources.work.url, 1)]
    item = WorkItem.from_message(body)
    core = runtime.model_core()
    assert core.once is not None

    class Killed(BaseException):
        """Not an Exception: like a SIGKILL, nothing in the pipeline gets to clean up after it."""

    class ShortContext:
        def get_remaining_time_in_millis(self) -> int:
            return 500

    real_finish = core.recorder.finish_call_run
    core.recorder.finish_call_run = lambda *a, **k: (_ for _ in ()).throw(Killed())  # type: ignore[method-assign]
    core.once.register_lambda_context(ShortContext())
    try:
        with pytest.raises(Killed):
            run_item(core.runner, item)
    finally:
        core.recorder.finish_call_run = real_finish  # type: ignore[method-assign]
    (orphan,) = p.call_runs(job_id)
    assert orphan.info.status == "RUNNING" and p.ledger.item_end(job_id, item.key) is None

    time.sleep(0.6)  # the dead invocation's in-progress idempotency record expires with its deadline
    outcome = run_item(core.runner, item)
    assert outcome.succeeded and not outcome.duplicate
    assert finalize_if_complete(core.finalize, job_id) is not None

    (line,) = p.assert_exactly_once(job_id, 1, succeeded=1)
    assert line["mlflow"]["runId"] == orphan.info.run_id
    assert p.emulator.stats()["total_calls"] == 1
    # A third delivery (the original message, still on the queue) is only a duplicate.
    assert run_item(core.runner, item).duplicate


def test_mlflow_killed_and_restarted_mid_batch_loses_nothing(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path
) -> None:
    """Given the pipeline's own MLflow server, when it is SIGKILLed while a batch runs and restarted
    seconds later, then items return to the queue meanwhile (nothing dropped), and after the restart
    every item ends once with one run, answers cached before the outage are re-logged, not re-asked."""
    options = MlflowServerOptions(port=free_port(), state_dir=tmp_path / "mlflow")
    server = start_mlflow_server(options)
    try:
        p = make_pipeline(max_receive_count=12, mlflow_url=server.url)
        p.emulator.configure("*", latency_ms=60)
        p.pump()
        job_id = p.upload("mlflow-outage.jsonl", prompt_file(7, "outage"))
        p.wait_for(lambda: (c := p.ledger.counts(job_id)) is not None and c.ended >= 3, 60, "3 items ended")
        server.stop(grace_seconds=0)  # SIGTERM then SIGKILL at once: the server is gone mid-request
        ended_at_kill = p.ledger.counts(job_id).ended  # type: ignore[union-attr]
        server = start_mlflow_server(options)  # ~7 s of outage: the time the server takes to start
        p.wait(job_id, timeout=60)

        assert ended_at_kill < 14  # the outage really hit the middle of the batch
        p.assert_exactly_once(job_id, 14, succeeded=14)
        stats = p.emulator.stats()
        assert stats["repeated_ok_requests"] == 0 and stats["outcomes"]["ok"] == 14
    finally:
        server.stop(grace_seconds=2)


RUNNER_PROCESS = """
import os, sys, time
from local_stack.event_pump import EventPump, QueueRoute
route = QueueRoute(os.environ["WORK_QUEUE_URL"], "handlers.runner.handler", function_timeout_seconds=5)
EventPump([route], endpoint_url=os.environ["AWS_ENDPOINT_URL"]).start()
open(sys.argv[1], "w").write("ready")
time.sleep(600)
"""


def test_a_runner_process_killed_mid_batch_loses_nothing(
    make_pipeline: Callable[..., Pipeline], tmp_path: Path
) -> None:
    """Given the runner in its own process (as a Lambda instance), when it is SIGKILLed with a batch
    half done and a fresh runner takes over, then every item ends once with one run, and the only
    answers asked for again are those the killed process never received (none it had kept)."""
    p = make_pipeline(max_receive_count=20)
    p.emulator.configure("*", latency_ms=250)
    ingest = p.pump(work=False)
    ready = tmp_path / "ready"
    process: ManagedProcess = spawn(
        "runner",
        [sys.executable, "-c", RUNNER_PROCESS, str(ready)],
        tmp_path / "runner.log",
        env=p.env,
    )
    try:
        wait_until_healthy(process, None, 60, ready_file=ready)
        job_id = p.upload("killed-runner.jsonl", prompt_file(10, "kill"))
        p.wait_for(lambda: (c := p.ledger.counts(job_id)) is not None and c.ended >= 4, 60, "4 items ended")
        os.killpg(process.pgid, signal.SIGKILL)
        process.stop(grace_seconds=1)  # reaps it
    finally:
        if process.is_alive():
            process.stop(grace_seconds=1)
    ok_at_kill = p.emulator.stats()["outcomes"]["ok"]
    cached_at_kill = len(
        p.s3.list_objects_v2(Bucket=p.resources.bucket, Prefix=f"results/{job_id}/responses/").get(
            "Contents", []
        )
    )
    counts = p.ledger.counts(job_id)
    assert counts is not None and counts.ended < 20  # killed with work in hand

    ingest.stop()
    p.pump(ingest=False)
    p.wait(job_id, timeout=60)

    p.assert_exactly_once(job_id, 20, succeeded=20)
    stats = p.emulator.stats()
    # Calls whose answer the killed process never received are paid twice, as on Bedrock; none other.
    assert stats["repeated_ok_requests"] <= ok_at_kill - cached_at_kill
    assert stats["outcomes"]["ok"] == 20 + stats["repeated_ok_requests"]


def test_bad_files_are_reported_and_never_poison_the_ingest_queue(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """Given a binary file, a UTF-16 file, an empty file, a file with one oversized line and a queue
    message that is no S3 event at all, then each file becomes a finished job whose errors.jsonl and
    tagged parent run say why, the good line still runs, and only the non-event reaches the DLQ, with
    its reason shown by `dlq inspect`."""
    p = make_pipeline(max_receive_count=2)
    p.pump()
    binary = p.upload("binary.jsonl", bytes(range(256)) * 4)
    utf16 = p.upload("utf16.jsonl", json.dumps({"prompt": "héllo"}).encode("utf-16"))
    empty = p.upload("empty.jsonl", b"")
    oversized = p.upload(
        "oversized-line.jsonl",
        json.dumps({"id": "big", "prompt": "x" * (settings.MAX_LINE_BYTES + 10), "model": MODELS[0]}).encode()
        + b"\n"
        + json.dumps({"id": "fine", "prompt": "[bad-input] hello", "model": MODELS[0]}).encode()
        + b"\n",
    )
    p.sqs.send_message(QueueUrl=p.resources.ingest.url, MessageBody="this is not an S3 event")

    for job_id in (binary, utf16, empty, oversized):
        p.wait(job_id)
    expected = {binary: "binary", utf16: "UTF-16", empty: "empty"}  # each rejected whole, with one reason
    for job_id, words in expected.items():
        errors = p.results(job_id, "errors.jsonl")
        assert errors and all(e["reason"] for e in errors)
        parent = p.parent_run(job_id)
        assert words in parent.data.tags["pipeline.error"]
        assert parent.info.status == "FAILED"
    assert "UTF-16" in p.results(utf16, "errors.jsonl")[0]["reason"]
    (big,) = p.results(oversized, "errors.jsonl")
    assert big["lineNumber"] == 1 and "limit" in big["reason"]
    (fine,) = p.results(oversized)
    assert fine["recordId"] == "fine" and "modelOutput" in fine
    assert "pipeline.error" not in p.parent_run(oversized).data.tags  # one bad line does not fail a job

    p.wait_for(lambda: p.queue_depth(p.resources.ingest.dlq_url) == 1, 30, "the non-event in the ingest DLQ")
    assert p.queue_depth(p.resources.ingest.url) == 0  # nothing left looping
    (letter,) = dlq.inspect(p.target(), "ingest", 10, queue_url=p.resources.ingest.url)  # `dlq inspect`
    assert letter.reason.startswith("not an S3 notification") and letter.receive_count >= 1
    assert letter.body_excerpt == "this is not an S3 event"
    assert p.queue_depth(p.resources.ingest.dlq_url) == 1  # inspecting consumed nothing


def test_an_item_that_exhausts_its_retries_fails_with_its_reason_and_a_redrive_runs_it(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """Given a model failing every call with 500/503 and 2 receives before the DLQ, then its items end
    as failures (error line "RetriesExhausted" with the last reason), the job still finishes, and the
    messages wait in the work DLQ with that reason. When the model recovers and the DLQ is redriven,
    then the same items succeed, the counters and results are corrected, still one run per item."""
    p = make_pipeline(max_receive_count=2)
    broken = MODELS[1]
    p.emulator.configure(broken, error_rate=1.0)
    p.pump()
    job_id = p.upload("exhausted.jsonl", prompt_file(3, "exhaust"))
    p.wait(job_id)

    lines = p.assert_exactly_once(job_id, 6, succeeded=3)
    failed = [line for line in lines if "error" in line]
    assert {line["modelId"] for line in failed} == {broken}
    assert all(line["error"]["errorCode"] == "RetriesExhausted" for line in failed)
    assert all("Exception" in line["error"]["errorMessage"] for line in failed)
    p.wait_for(lambda: p.queue_depth(p.resources.work.dlq_url) == 3, 30, "3 messages in the work DLQ")
    letters = dlq.inspect(p.target(), "work", 10, queue_url=p.resources.work.url)
    assert {d.model_id for d in letters} == {broken} and {d.job_id for d in letters} == {job_id}
    assert all("ServiceUnavailable" in d.reason or "InternalServer" in d.reason for d in letters)

    p.emulator.configure(broken, error_rate=0.0)
    assert dlq.redrive(p.target(), "work", queue_url=p.resources.work.url) == (
        "moved 3 message(s) from the work DLQ back to its queue"
    )
    p.wait(job_id, succeeded=6)
    p.assert_exactly_once(job_id, 6, succeeded=6)
    assert p.queue_depth(p.resources.work.dlq_url) == 0
