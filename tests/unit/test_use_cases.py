"""Specification of the use cases (ingest, run an item, finalize) on in-memory ports: no server.

The integration tests run the same code against moto, MLflow and the Bedrock emulator; these pin the
rules themselves: what a good, bad or duplicate file does, how an item runs once across retries,
give-ups and duplicate deliveries, and that a job finalizes exactly once.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest

from bedrock_pipeline.domain import JobRef, ModelResponse, WorkItem
from bedrock_pipeline.ledger import FINALIZATION_LEASE_SECONDS
from bedrock_pipeline.ports import BedrockCallError, TransientItemError
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.finalize import FinalizeDeps, finalize_if_complete
from bedrock_pipeline.use_cases.ingest import IngestDeps, IngestReport, ingest_prompt_file
from bedrock_pipeline.use_cases.run_item import (
    IDEMPOTENCY_KEY_NAME,
    CallDeps,
    OncePerItem,
    RunnerDeps,
    item_failed,
    record_call,
    run_item,
)
from tests.unit.fakes import (
    MemoryAnswers,
    MemoryIdempotency,
    MemoryLedger,
    MemoryQueue,
    MemoryRecorder,
    MemoryResults,
    MemorySource,
    ScriptedGateway,
)

BUCKET = "prompts"
MODEL = "amazon.nova-lite-v1:0"
OTHER = "anthropic.claude-3-haiku-20240307-v1:0"


@dataclass
class World:
    """Every port in memory, and the use cases' dependencies made of them."""

    source: MemorySource
    queue: MemoryQueue
    ledger: MemoryLedger
    recorder: MemoryRecorder
    results: MemoryResults
    answers: MemoryAnswers
    gateway: ScriptedGateway

    @property
    def ingest(self) -> IngestDeps:
        return IngestDeps(
            source=self.source,
            queue=self.queue,
            ledger=self.ledger,
            recorder=self.recorder,
            results=self.results,
            prices=PriceTable.load(),
            default_models=(MODEL,),
        )

    @property
    def runner(self) -> RunnerDeps:
        calls = CallDeps(self.gateway, self.recorder, PriceTable.load(), self.answers)
        return RunnerDeps(call=calls, ledger=self.ledger, results=self.results)

    @property
    def finalize(self) -> FinalizeDeps:
        return FinalizeDeps(ledger=self.ledger, results=self.results, recorder=self.recorder)

    def upload(self, key: str, lines: list[object] | bytes) -> tuple[str, IngestReport]:
        body = (
            lines if isinstance(lines, bytes) else "".join(json.dumps(line) + "\n" for line in lines).encode()
        )
        etag = self.source.put(BUCKET, key, body)
        return etag, ingest_prompt_file(self.ingest, BUCKET, key, etag=etag)

    def run_all(self) -> None:
        for item in self.queue.received():
            run_item(self.runner, item)
            finalize_if_complete(self.finalize, item.bound_job.job_id)


@pytest.fixture
def world() -> World:
    return World(
        MemorySource(),
        MemoryQueue(),
        MemoryLedger(),
        MemoryRecorder(),
        MemoryResults(),
        MemoryAnswers(),
        ScriptedGateway(),
    )


def _records(n: int) -> list[object]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(n)]


# --- ingest ------------------------------------------------------------------------------------------
def test_given_a_good_file_when_ingested_then_one_bound_item_per_record_and_model_is_enqueued(
    world: World,
) -> None:
    _, report = world.upload("incoming/team/a.jsonl", [{"job": {"models": [MODEL, OTHER]}}, *_records(3)])

    items = world.queue.received()
    assert report.items == 6 and report.rejected_lines == 0 and not report.duplicate
    assert {(i.record_id, i.model_id) for i in items} == {
        (f"r{n}", m) for n in range(3) for m in (MODEL, OTHER)
    }
    assert {i.bound_job.job_id for i in items} == {report.job_id}
    assert world.ledger.counts(report.job_id).expected == 6
    parent = world.recorder.runs[report.parent_run_id]
    assert parent.tags["pipeline.source"] == f"s3://{BUCKET}/incoming/team/a.jsonl"
    assert world.recorder.experiments == {"bedrock-batch/team": parent.experiment_id}


def test_given_bad_lines_when_ingested_then_each_is_reported_with_its_line_and_the_good_lines_still_run(
    world: World,
) -> None:
    body = b'{"prompt": "ok"}\nnot json\n{"prompt": ""}\n{"prompt": "also ok"}\n'
    _, report = world.upload("incoming/mixed.jsonl", body)

    assert report.items == 2 and report.rejected_lines == 2 and report.rejected_reason is None
    assert [e["lineNumber"] for e in world.results.errors[report.job_id]] == [2, 3]
    assert "errors.jsonl" in world.recorder.runs[report.parent_run_id].artifacts


BINARY = bytes(range(256)) * 8  # what an image or an archive looks like to the parser


@pytest.mark.parametrize(
    ("body", "words", "bad_lines"),
    [
        (b"", "empty", 0),
        (b"\n  \n", "empty", 0),
        ("\ufeff{}".encode("utf-16"), "UTF-16", 0),
        (BINARY, "binary", 0),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + BINARY, "binary", 0),
        (b'[{"prompt": "a"}, {"prompt": "b"}]\n', "JSON array", 0),
        (b'[\n  {"prompt": "a"},\n  {"prompt": "b"}\n]\n', "JSON array", 0),  # line 3 alone would run
        (b'{"prompt": ""}\nnot json\n', "no valid record: 2 bad line(s), first: line 1", 2),
        (b'{"job": {"models": ["amazon.nova-lite-v1:0"]}}\n', "no records", 0),
    ],
)
def test_given_a_file_nothing_can_run_from_when_ingested_then_the_job_is_rejected_one_way_whatever_the_cause(
    world: World, body: bytes, words: str, bad_lines: int
) -> None:
    """Empty, foreign encoding, binary, a JSON array, only bad lines, only a header: one rejection each,
    with one reason, finalized at once, and the summary says `rejected` and why."""
    _, report = world.upload("incoming/nothing.jsonl", body)

    assert report.items == 0 and report.rejected_reason and words in report.rejected_reason
    assert world.queue.bodies == [] and world.gateway.calls == []
    errors = world.results.errors[report.job_id]
    assert errors[0] == {"lineNumber": None, "reason": f"file rejected: {report.rejected_reason}"}
    assert len(errors) == 1 + bad_lines  # a binary file is one reason, not one error per "line"
    parent = world.recorder.runs[report.parent_run_id]
    assert parent.status == "FAILED" and parent.tags["pipeline.error"] == report.rejected_reason
    summary = world.results.summaries[report.job_id]
    assert summary["status"] == "rejected" and summary["reason"] == report.rejected_reason
    assert summary["totals"]["records"] == 0


def test_given_reserved_tags_on_a_record_then_it_runs_and_errors_jsonl_lists_a_warning(world: World) -> None:
    body = b'{"id": "a", "prompt": "q", "tags": {"pipeline.job_id": "x", "team": "t"}}\nnot json\n'
    _, report = world.upload("incoming/tags.jsonl", body)

    assert report.items == 1 and report.rejected_lines == 1 and report.rejected_reason is None
    warning, error = world.results.errors[report.job_id]
    assert warning["lineNumber"] == 1 and warning["level"] == "warning"
    assert "pipeline.job_id" in warning["reason"] and "level" not in error
    world.run_all()
    assert world.results.summaries[report.job_id]["status"] == "finished"


def test_given_a_job_over_its_budget_when_ingested_then_no_item_is_enqueued(world: World) -> None:
    _, report = world.upload("incoming/costly.jsonl", [{"job": {"budget_usd": 0.0}}, *_records(2)])
    assert report.items == 0 and "exceeds the job budget" in (report.rejected_reason or "")
    assert world.queue.bodies == []


def test_given_the_same_event_twice_when_ingested_then_items_are_enqueued_once(world: World) -> None:
    etag, first = world.upload("incoming/twice.jsonl", _records(2))
    again = ingest_prompt_file(world.ingest, BUCKET, "incoming/twice.jsonl", etag=etag)

    assert again.job_id == first.job_id and again.parent_run_id == first.parent_run_id
    assert again.duplicate and not first.duplicate
    assert len(world.queue.bodies) == 2


def test_given_an_object_replaced_or_deleted_since_its_event_then_ingest_skips_it(world: World) -> None:
    etag = world.source.put(BUCKET, "incoming/x.jsonl", b'{"prompt": "v1"}\n')
    world.source.put(BUCKET, "incoming/x.jsonl", b'{"prompt": "v2"}\n')
    replaced = ingest_prompt_file(world.ingest, BUCKET, "incoming/x.jsonl", etag=etag)
    gone = ingest_prompt_file(world.ingest, BUCKET, "incoming/nothing.jsonl", etag=etag)

    assert replaced.skipped and "replaced" in replaced.skipped
    assert gone.skipped and "no longer exists" in gone.skipped
    assert world.queue.bodies == [] and world.ledger.jobs == {}


# --- run an item -------------------------------------------------------------------------------------
def test_given_an_item_when_run_then_one_finished_run_one_call_one_priced_line_and_one_end(
    world: World,
) -> None:
    _, report = world.upload("incoming/one.jsonl", _records(1))
    (item,) = world.queue.received()

    outcome = run_item(world.runner, item)

    assert outcome.succeeded and not outcome.duplicate
    assert world.gateway.calls == [MODEL]
    (run,) = world.recorder.call_runs()
    assert run.status == "FINISHED" and run.metrics["cost_usd"] > 0
    (line,) = world.results.item_results(report.job_id)
    assert line.cost_usd == run.metrics["cost_usd"] and line.mlflow.run_id == run.run_id
    assert line.to_dict()["modelOutput"]["output"]["message"]["content"][0]["text"] == f"answer from {MODEL}"
    assert world.ledger.counts(report.job_id).succeeded == 1


def test_given_an_ended_item_when_delivered_again_then_nothing_runs_twice(world: World) -> None:
    world.upload("incoming/dup.jsonl", _records(1))
    (item,) = world.queue.received()
    run_item(world.runner, item)

    again = run_item(world.runner, item)

    assert again.duplicate and again.succeeded
    assert world.gateway.calls == [MODEL] and len(world.recorder.call_runs()) == 1


def test_given_a_throttled_call_then_the_item_returns_to_the_queue_and_its_retry_keeps_one_run(
    world: World,
) -> None:
    world.gateway = ScriptedGateway(
        {MODEL: [BedrockCallError("ThrottlingException", "slow down", permanent=False)]}
    )
    _, report = world.upload("incoming/throttled.jsonl", _records(1))
    (item,) = world.queue.received()

    with pytest.raises(TransientItemError):
        run_item(world.runner, item)
    assert world.recorder.call_runs() == []  # the attempt's run was dropped
    assert world.ledger.item_end(report.job_id, item.key) is None

    assert run_item(world.runner, item).succeeded
    assert len(world.recorder.call_runs()) == 1 and world.gateway.calls == [MODEL, MODEL]


def test_given_an_item_that_succeeded_on_a_retry_then_the_job_counts_the_retry_everywhere(
    world: World,
) -> None:
    """A retry is visible: the ledger's job counts it, summary.json and the parent run's metric show it."""
    throttled = BedrockCallError("ThrottlingException", "slow down", permanent=False)
    world.gateway = ScriptedGateway({MODEL: [throttled, throttled]})
    _, report = world.upload("incoming/retried.jsonl", _records(2))
    first, _ = world.queue.received()
    for _ in range(2):
        with pytest.raises(TransientItemError):
            run_item(world.runner, first)
    world.run_all()

    assert world.ledger.counts(report.job_id).retries == 2
    summary = world.results.summaries[report.job_id]
    assert summary["retries"] == 2 and summary["status"] == "finished" and summary["reason"] is None
    parent = world.recorder.runs[report.parent_run_id]
    assert parent.metrics["retries"] == 2 and parent.status == "FINISHED"


def test_given_items_that_succeed_at_once_then_no_retry_is_counted(world: World) -> None:
    _, report = world.upload("incoming/smooth.jsonl", _records(3))
    world.run_all()
    assert world.ledger.counts(report.job_id).retries == 0
    assert world.results.summaries[report.job_id]["retries"] == 0


def test_given_every_call_failing_then_the_job_is_failed_with_the_first_reason(world: World) -> None:
    invalid = BedrockCallError("ValidationException", "bad input", permanent=True)
    world.gateway = ScriptedGateway({MODEL: [invalid, invalid]})
    _, report = world.upload("incoming/all-bad.jsonl", _records(2))
    world.run_all()

    summary = world.results.summaries[report.job_id]
    assert summary["status"] == "failed"
    assert summary["reason"] == "every call failed (2); first: ValidationException: bad input"
    parent = world.recorder.runs[report.parent_run_id]
    assert parent.status == "FAILED" and parent.tags["pipeline.error"] == summary["reason"]


def test_given_a_permanent_error_then_the_item_ends_failed_with_its_reason_and_is_not_called_again(
    world: World,
) -> None:
    world.gateway = ScriptedGateway(
        {MODEL: [BedrockCallError("ValidationException", "bad input", permanent=True)]}
    )
    _, report = world.upload("incoming/invalid.jsonl", _records(1))
    (item,) = world.queue.received()

    outcome = run_item(world.runner, item)

    assert not outcome.succeeded
    (run,) = world.recorder.call_runs()
    assert run.status == "FAILED"
    (line,) = world.results.item_results(report.job_id)
    assert line.to_dict()["error"] == {"errorCode": "ValidationException", "errorMessage": "bad input"}
    assert run_item(world.runner, item).duplicate and world.gateway.calls == [MODEL]


def test_given_recording_fails_after_the_model_answered_then_the_retry_reuses_the_run_and_the_answer(
    world: World,
) -> None:
    _, report = world.upload("incoming/crash.jsonl", _records(1))
    (item,) = world.queue.received()
    world.recorder.fail_next_finish = ConnectionError("MLflow went away")

    with pytest.raises(ConnectionError):
        run_item(world.runner, item)
    outcome = run_item(world.runner, item)

    assert outcome.succeeded and not outcome.duplicate
    assert world.gateway.calls == [MODEL]  # billed once
    (run,) = world.recorder.call_runs()
    assert run.replayed and run.status == "FINISHED"
    assert world.ledger.counts(report.job_id).ended == 1


def test_given_an_item_on_its_last_receive_then_it_ends_failed_and_a_redrive_can_still_succeed(
    world: World,
) -> None:
    _, report = world.upload("incoming/gave-up.jsonl", _records(1))
    (item,) = world.queue.received()
    not_last = item_failed(world.runner, item, body="b", reason="boom", receive_count=1, last_receive=False)
    gave_up = item_failed(world.runner, item, body="b", reason="boom", receive_count=5, last_receive=True)

    assert not not_last and gave_up
    assert world.ledger.failures["b"] == ("boom", 5)
    (line,) = world.results.item_results(report.job_id)
    assert line.outcome.error is not None and line.outcome.error.code == "RetriesExhausted"
    assert finalize_if_complete(world.finalize, report.job_id) is not None  # the job still finishes

    redriven = run_item(world.runner, item)  # the message came back from the DLQ
    assert redriven.succeeded and not redriven.duplicate
    assert world.ledger.counts(report.job_id).succeeded == 1
    assert finalize_if_complete(world.finalize, report.job_id)["totals"]["succeeded"] == 1


def test_record_call_is_the_same_recording_for_items_no_queue_carries(world: World) -> None:
    """The evaluator and the benchmark record through it: same run, trace and line, no ledger."""
    job = JobRef(
        job_id="eval-1",
        kind="evaluation",
        experiment_id="1",
        parent_run_id="p",
        source_bucket=BUCKET,
        source_key="eval/x.jsonl",
        source_etag="e",
    )
    item = WorkItem(job=job, record_id="q1", line_number=1, model_id=OTHER, request={"messages": []})
    line = record_call(item, CallDeps(world.gateway, world.recorder, PriceTable.load()))
    assert (
        line.succeeded and line.mlflow.trace_id and world.recorder.call_runs()[0].run_id == line.mlflow.run_id
    )
    assert world.ledger.jobs == {}


# --- finalize ----------------------------------------------------------------------------------------
def test_given_the_last_items_end_concurrently_then_exactly_one_runner_finalizes(world: World) -> None:
    _, report = world.upload("incoming/race.jsonl", [{"job": {"models": [MODEL, OTHER]}}, *_records(8)])
    items = world.queue.received()
    start = threading.Barrier(len(items), timeout=30)  # a thread that failed breaks it: no hang

    def run_then_finalize(item: WorkItem) -> bool:
        run_item(world.runner, item)
        start.wait()  # every item has ended before anyone tries to finalize
        return finalize_if_complete(world.finalize, report.job_id) is not None

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        finalized = list(pool.map(run_then_finalize, items))

    assert finalized.count(True) == 1 and world.ledger.finalizations == 1
    summary = world.results.summaries[report.job_id]
    priced = sum(run.metrics["cost_usd"] for run in world.recorder.call_runs())
    assert summary["totals"] == {
        "records": 16,
        "succeeded": 16,
        "failed": 0,
        "cost_usd": pytest.approx(priced),
    }
    assert priced > 0
    assert [(line.line_number, line.model_id) for line in world.results.results[report.job_id]] == sorted(
        (i.line_number, i.model_id) for i in items
    )
    assert world.recorder.runs[report.parent_run_id].status == "FINISHED"


def test_given_finalizing_fails_then_the_claim_is_released_for_the_next_runner(world: World) -> None:
    _, report = world.upload("incoming/retry-finalize.jsonl", _records(1))
    (item,) = world.queue.received()
    run_item(world.runner, item)

    class Broken(MemoryResults):
        def put_results(self, job_id: str, lines: object) -> None:
            raise ConnectionError("S3 down")

    broken = FinalizeDeps(
        ledger=world.ledger, results=Broken(items=world.results.items), recorder=world.recorder
    )
    with pytest.raises(ConnectionError):
        finalize_if_complete(broken, report.job_id)
    assert finalize_if_complete(world.finalize, report.job_id) is not None
    assert finalize_if_complete(world.finalize, report.job_id) is None  # once


# --- Powertools idempotency, as wired by the runner ----------------------------------------------------
class BlockingGateway(ScriptedGateway):
    """Holds every call until released: a delivery whose model call is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def invoke(self, model_id: str, request: dict[str, object], *, stream: bool) -> ModelResponse:
        self.entered.set()
        assert self.release.wait(timeout=30)
        return super().invoke(model_id, request, stream=stream)


def test_given_a_delivery_in_progress_then_a_concurrent_duplicate_returns_to_the_queue_uncalled(
    world: World,
) -> None:
    world.gateway = BlockingGateway()
    store = MemoryIdempotency()
    deps = replace(world.runner, once=OncePerItem.with_persistence(store))
    world.upload("incoming/concurrent.jsonl", _records(1))
    (item,) = world.queue.received()

    with ThreadPoolExecutor(max_workers=1) as first_delivery:
        first = first_delivery.submit(run_item, deps, item)
        assert world.gateway.entered.wait(timeout=30)
        with pytest.raises(TransientItemError, match="in progress"):
            run_item(deps, item)
        world.gateway.release.set()
        assert first.result(timeout=30).succeeded

    assert world.gateway.calls == [MODEL]
    (key,) = store.records
    # The key keeps the name it had before the use cases moved: earlier deployments' records still match.
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "test-func")
    assert key.startswith(f"{function}.{IDEMPOTENCY_KEY_NAME}#")
    assert store.records[key].status == "COMPLETED"


def test_given_a_finalizer_that_died_holding_its_claim_then_another_takes_over_after_the_lease(
    world: World,
) -> None:
    now = [1000.0]
    world.ledger = MemoryLedger(clock=lambda: now[0])
    _, report = world.upload("incoming/lease.jsonl", _records(1))
    (item,) = world.queue.received()
    run_item(world.runner, item)
    assert world.ledger.claim_finalization(report.job_id) is not None  # then the claimant dies

    assert finalize_if_complete(world.finalize, report.job_id) is None  # its lease still holds
    now[0] += FINALIZATION_LEASE_SECONDS + 1
    assert finalize_if_complete(world.finalize, report.job_id) is not None
