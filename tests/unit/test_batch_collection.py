"""Collecting a finished Bedrock batch job (issue 20), on in-memory ports: every record becomes the run
and results line an on-demand call makes, at the batch price, exactly once across redeliveries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from bedrock_pipeline.domain import ResultLine
from bedrock_pipeline.ports import BatchPart
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.collect_batch import (
    BatchChunk,
    ChunkDeps,
    CollectDeps,
    arn_of_event,
    chunk_failed,
    collect_job,
    is_chunk_message,
    record_chunk,
    sweep,
)
from bedrock_pipeline.use_cases.finalize import FinalizeDeps, finalize_if_complete
from bedrock_pipeline.use_cases.run_item import CallDeps, RunnerDeps
from tests.unit.fakes import MemoryAnswers, ScriptedGateway
from tests.unit.test_batch_submission import BUCKET, HAIKU, NOVA, World

CHUNK = 4


@dataclass
class Collecting(World):
    answers: MemoryAnswers = field(default_factory=MemoryAnswers)
    gateway: ScriptedGateway = field(default_factory=ScriptedGateway)

    @property
    def collect(self) -> CollectDeps:
        return CollectDeps(self.jobs, self.files, self.registry, self.queue, BUCKET, chunk_records=CHUNK)

    @property
    def chunk_deps(self) -> ChunkDeps:
        calls = CallDeps(self.gateway, self.recorder, PriceTable.load(), self.answers)
        runner = RunnerDeps(call=calls, ledger=self.ledger, results=self.results)
        return ChunkDeps(runner, self.files, self.registry)

    def bedrock_finishes(
        self, part: BatchPart, status: str = "Completed", *, fail: set[str] = frozenset(), skip: int = 0
    ) -> None:
        """What Bedrock does when the job ends: one .jsonl.out per input file (records in another
        order, failed ones with an error object; the last ``skip`` without any line) and a manifest."""
        prefix = part.input_uri.removeprefix(f"s3://{BUCKET}/")
        out = part.output_uri.removeprefix(f"s3://{BUCKET}/") + part.arn.rsplit("/", 1)[1] + "/"
        records = [
            (key.rsplit("/", 1)[1], json.loads(line))
            for key in self.files.keys(prefix)
            for line in self.files.objects[key].splitlines()
        ]
        kept = records[: len(records) - skip]
        by_file: dict[str, list[str]] = {}
        for name, record in reversed(kept):
            line = dict(record)
            if record["recordId"] in fail:
                line["error"] = {"errorCode": 400, "errorMessage": "Malformed input request"}
            elif part.model_id == HAIKU:
                line["modelOutput"] = {
                    "content": [{"type": "text", "text": "batch answer"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 100, "output_tokens": 20},
                }
            else:
                line["modelOutput"] = {
                    "output": {"message": {"role": "assistant", "content": [{"text": "batch answer"}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120},
                }
            by_file.setdefault(name, []).append(json.dumps(line))
        for name, lines in by_file.items():
            self.files.put(f"{out}{name}.out", ("\n".join(lines) + "\n").encode())
        self.files.put(f"{out}manifest.json.out", json.dumps({"totalRecordCount": len(records)}).encode())
        self.jobs.finish(part.arn, status, message="job expired" if status == "Expired" else None)

    def run_chunks(self) -> None:
        for chunk in self.queue.chunks():
            outcomes = record_chunk(self.chunk_deps, chunk)
            for outcome in outcomes:
                finalize_if_complete(
                    FinalizeDeps(self.ledger, self.results, self.recorder, PriceTable.load(), self.registry),
                    outcome.job_id,
                )


def _submit(world: Collecting, n: int, models: list[str]) -> str:
    records = [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(n)]
    _, report = world.upload("incoming/b.jsonl", [{"job": {"mode": "batch", "models": models}}, *records])
    assert report.execution == "batch"
    return report.job_id


def test_a_completed_job_becomes_one_run_and_line_per_record_at_the_batch_price() -> None:
    world = Collecting()
    job_id = _submit(world, 10, [NOVA, HAIKU])
    parts = world.registry.parts(job_id)
    for part in parts:
        world.bedrock_finishes(part)
        report = collect_job(world.collect, part.arn)
        assert report.status == "Completed" and report.records == 10 and report.chunks == 3
    world.run_chunks()

    assert world.gateway.calls == []  # no model was called: the answers came from the batch job
    assert world.answers.answers == {}  # nor cached again: Bedrock's output file keeps them
    runs = world.recorder.call_runs()
    assert len(runs) == 20 and all(run.status == "FINISHED" for run in runs)
    results = world.results.results[job_id]
    assert len(results) == 20 and {line.model_id for line in results} == {NOVA, HAIKU}
    prices = PriceTable.load()
    for line in results:
        usage = {"inputTokens": 100, "outputTokens": 20}
        assert line.cost_usd == pytest.approx(prices.cost(line.model_id, usage, tier="batch").total_usd)
        assert line.cost_usd == pytest.approx(prices.cost(line.model_id, usage).total_usd / 2)
        stored = line.to_dict()
        assert "latencyMs" not in stored and "metrics" not in stored["modelOutput"]
        assert stored["modelOutput"]["output"]["message"]["content"] == [{"text": "batch answer"}]
    assert world.ledger.jobs[job_id].finalized
    # The summary shows, per model, the batch cost next to what the same tokens cost on demand.
    summary = world.results.summaries[job_id]
    for row in summary["models"]:
        assert row["on_demand_cost_usd"] == pytest.approx(2 * row["cost_usd"])
    totals = summary["totals"]
    assert totals["saving_usd"] > 0
    assert totals["saving_usd"] == pytest.approx(totals["on_demand_cost_usd"] - totals["cost_usd"])
    parent = world.recorder.runs[world.ledger.jobs[job_id].job.parent_run_id]
    assert parent.metrics["batch_job_seconds"] == 3600.0  # the Bedrock job's duration (submitted -> ended)
    table = parent.artifacts["summary.txt"]
    assert "on-demand USD" in table.splitlines()[0]


def test_redelivered_events_and_chunks_record_nothing_twice() -> None:
    world = Collecting()
    job_id = _submit(world, 6, [NOVA])
    (part,) = world.registry.parts(job_id)
    world.bedrock_finishes(part)
    collect_job(world.collect, part.arn)
    again = collect_job(world.collect, part.arn)  # the event delivered twice
    assert again.skipped and "already collected" in again.skipped
    world.run_chunks()
    world.run_chunks()  # every chunk delivered twice

    assert len(world.recorder.call_runs()) == 6
    assert len(world.results.results[job_id]) == 6
    assert world.ledger.finalizations == 1


def test_records_bedrock_failed_or_never_reached_end_as_error_lines_with_the_reason() -> None:
    world = Collecting()
    job_id = _submit(world, 8, [NOVA])
    (part,) = world.registry.parts(job_id)
    items = [json.loads(line) for line in world.files.objects[part.items_key].splitlines()]
    digests = [world_item_digest(item) for item in items]
    world.bedrock_finishes(part, "Expired", fail={digests[0]}, skip=2)
    collect_job(world.collect, part.arn)
    world.run_chunks()

    lines = {line.record_id: line for line in world.results.results[job_id]}
    assert len(lines) == 8
    errors = {rid: line.to_dict()["error"] for rid, line in lines.items() if not line.succeeded}
    assert errors["r0"] == {"errorCode": "400", "errorMessage": "Malformed input request"}
    assert (
        errors["r6"]["errorMessage"]
        == errors["r7"]["errorMessage"]
        == "Bedrock batch job Expired: job expired"
    )
    assert len(errors) == 3


def world_item_digest(message: dict) -> str:
    from bedrock_pipeline.domain import WorkItem

    return WorkItem.model_validate(message).digest


def test_a_job_not_finished_or_not_ours_is_left_alone() -> None:
    world = Collecting()
    job_id = _submit(world, 5, [NOVA])
    (part,) = world.registry.parts(job_id)
    assert collect_job(world.collect, part.arn).skipped == "still Submitted"
    assert collect_job(world.collect, "arn:aws:bedrock:us-east-1:1:model-invocation-job/x").skipped
    assert not world.queue.chunks()


def test_the_sweep_collects_a_finished_job_whose_event_was_lost() -> None:
    world = Collecting()
    job_id = _submit(world, 5, [NOVA])
    (part,) = world.registry.parts(job_id)
    assert sweep(world.collect) == []
    world.bedrock_finishes(part)
    (report,) = sweep(world.collect)
    assert report.arn == part.arn and report.chunks == 2
    assert sweep(world.collect) == []  # collected once


def test_the_job_arn_comes_from_the_event_detail() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghijkl"
    event = {
        "source": "aws.bedrock",
        "detail-type": "Batch Inference Job State Change",
        "detail": {"batchJobArn": arn},
    }
    assert arn_of_event(event) == arn
    assert arn_of_event({"resources": [arn], "detail": {}}) == arn


def test_results_lines_round_trip_without_latency() -> None:
    line = ResultLine.from_dict(
        {"recordId": "r", "modelId": NOVA, "modelOutput": {}, "usage": {}, "costUsd": 0.1}
    )
    assert (
        line.latency_ms is None
        and "latencyMs" not in ResultLine(line.record_id, line.model_id, None, None, line.outcome).to_dict()
    )


def test_a_chunk_message_is_told_from_a_work_item_by_its_first_bytes() -> None:
    chunk = BatchChunk(
        arn="arn:aws:bedrock:us-east-1:1:model-invocation-job/x",
        records_key="batch/j/chunks/p/000001.jsonl",
        count=10,
    )
    assert is_chunk_message(chunk.to_message())
    assert BatchChunk.model_validate_json(chunk.to_message()) == chunk
    world = Collecting()
    world.upload("incoming/c.jsonl", [{"prompt": "on demand"}])
    (body,) = world.queue.bodies
    assert not is_chunk_message(body)


def test_a_chunk_that_keeps_failing_ends_its_records_as_failures_on_its_last_receive() -> None:
    world = Collecting()
    job_id = _submit(world, 5, [NOVA])
    (part,) = world.registry.parts(job_id)
    world.bedrock_finishes(part)
    collect_job(world.collect, part.arn)
    first, second = world.queue.chunks()
    body = first.to_message()

    assert (
        chunk_failed(
            world.chunk_deps, first, body=body, reason="MLflow down", receive_count=1, last_receive=False
        )
        == []
    )
    assert world.ledger.failures[body] == ("MLflow down", 1)
    assert chunk_failed(
        world.chunk_deps, first, body=body, reason="MLflow down", receive_count=5, last_receive=True
    ) == [job_id]
    record_chunk(world.chunk_deps, second)
    finalize_if_complete(FinalizeDeps(world.ledger, world.results, world.recorder), job_id)

    lines = world.results.results[job_id]
    failed = [line for line in lines if not line.succeeded]
    assert len(lines) == 5 and len(failed) == CHUNK
    assert all(
        line.outcome.error is not None and "MLflow down" in line.outcome.error.message for line in failed
    )
    # A redrive of the chunk later records the answers and revises the ends (as for on-demand items).
    record_chunk(world.chunk_deps, first)
    assert world.ledger.counts(job_id).succeeded == 5


def test_a_runner_reads_only_its_chunk_file_not_the_jobs_items_or_outputs() -> None:
    """Each chunk file holds its own records (item and output line), so recording a chunk costs the
    same in a 50,000-record job as in a 10-record one (reading whole files per chunk was quadratic)."""
    world = Collecting()
    job_id = _submit(world, 10, [NOVA])
    (part,) = world.registry.parts(job_id)
    first = json.loads(world.files.objects[part.items_key].splitlines()[0])
    world.bedrock_finishes(part, fail={world_item_digest(first)}, skip=2)
    collect_job(world.collect, part.arn)
    chunks = world.queue.chunks()
    assert [chunk.count for chunk in chunks] == [4, 4, 2]
    assert all(chunk.records_key.startswith(f"batch/{job_id}/chunks/") for chunk in chunks)
    for key in list(world.files.objects):
        if "/chunks/" not in key:
            del world.files.objects[key]  # the items, inputs and outputs: a runner must not need them

    world.run_chunks()

    lines = world.results.results[job_id]
    assert len(lines) == 10 and len(world.recorder.call_runs()) == 10
    assert sum(line.succeeded for line in lines) == 7  # one failed by Bedrock, two never processed
