"""Batch mode at ingest (issue 20): how a job is planned, written in Bedrock's input format, split at
Bedrock's quotas and submitted once, on in-memory ports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from bedrock_pipeline.batch.files import BatchLimits, plan_parts
from bedrock_pipeline.domain import JobRef, WorkItem
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.ingest import IngestDeps, IngestReport, ingest_prompt_file
from bedrock_pipeline.use_cases.submit_batch import BatchDeps, client_token
from tests.unit.fakes import (
    MemoryBatchFiles,
    MemoryBatchJobs,
    MemoryBatchRegistry,
    MemoryLedger,
    MemoryQueue,
    MemoryRecorder,
    MemoryResults,
    MemorySource,
)

BUCKET = "prompts"
NOVA = "amazon.nova-lite-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/batch"
MIN = 3


@dataclass
class World:
    source: MemorySource = field(default_factory=MemorySource)
    queue: MemoryQueue = field(default_factory=MemoryQueue)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    results: MemoryResults = field(default_factory=MemoryResults)
    jobs: MemoryBatchJobs = field(default_factory=MemoryBatchJobs)
    files: MemoryBatchFiles = field(default_factory=MemoryBatchFiles)
    registry: MemoryBatchRegistry = field(default_factory=MemoryBatchRegistry)
    default_mode: str = "on_demand"
    limits: BatchLimits = field(default_factory=BatchLimits)
    batch_set_up: bool = True

    @property
    def batch(self) -> BatchDeps:
        return BatchDeps(self.jobs, self.files, self.registry, BUCKET, ROLE, self.limits, min_records=MIN)

    @property
    def ingest(self) -> IngestDeps:
        return IngestDeps(
            source=self.source,
            queue=self.queue,
            ledger=self.ledger,
            recorder=self.recorder,
            results=self.results,
            prices=PriceTable.load(),
            default_models=(NOVA,),
            default_mode=self.default_mode,
            batch=self.batch if self.batch_set_up else None,
        )

    def upload(self, key: str, lines: list[object]) -> tuple[str, IngestReport]:
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        etag = self.source.put(BUCKET, key, body)
        return etag, ingest_prompt_file(self.ingest, BUCKET, key, etag=etag)

    def parent_tags(self, report: IngestReport) -> dict[str, str]:
        return self.recorder.runs[report.parent_run_id].tags


def _records(n: int, **extra: object) -> list[object]:
    return [{"id": f"r{i}", "prompt": f"question {i}", **extra} for i in range(n)]


def test_batch_mode_writes_bedrocks_records_per_model_and_submits_one_job_each() -> None:
    world = World()
    _, report = world.upload(
        "incoming/a.jsonl", [{"job": {"mode": "batch", "models": [NOVA, HAIKU]}}, *_records(4)]
    )

    assert report.execution == "batch" and report.items == 8 and not world.queue.received()
    tags = world.parent_tags(report)
    assert tags["pipeline.execution"] == "batch" and tags["pipeline.execution_reason"] == "mode batch"
    parts = world.registry.parts(report.job_id)
    assert [p.model_id for p in parts] == [NOVA, HAIKU] and [p.records for p in parts] == [4, 4]
    for part in parts:
        job = world.jobs.jobs[part.arn]
        assert job["role_arn"] == ROLE and job["model_id"] == part.model_id
        assert job["input_uri"] == f"s3://{BUCKET}/batch/{report.job_id}/input/{part.name}/"
        assert job["output_uri"] == f"s3://{BUCKET}/batch/{report.job_id}/output/{part.name}/"
        (key,) = world.files.keys(f"batch/{report.job_id}/input/{part.name}/")
        lines = [json.loads(line) for line in world.files.objects[key].splitlines()]
        items = [WorkItem.from_message(line) for line in world.files.objects[part.items_key].splitlines()]
        assert [line["recordId"] for line in lines] == [item.digest for item in items]
        assert all(item.execution == "batch" and item.model_id == part.model_id for item in items)
    haiku_input = world.files.objects[world.files.keys(f"batch/{report.job_id}/input/{parts[1].name}/")[0]]
    assert json.loads(haiku_input.splitlines()[0])["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"
    assert world.ledger.jobs[report.job_id].expected == 8 and world.ledger.jobs[report.job_id].enqueued


def test_a_redelivered_event_creates_no_second_bedrock_job() -> None:
    world = World()
    lines = [{"job": {"mode": "batch"}}, *_records(5)]
    world.upload("incoming/a.jsonl", lines)
    world.ledger.jobs.clear()  # even with the ledger's mark lost (a crash before it), the token holds
    _, report = world.upload("incoming/a.jsonl", lines)

    assert len(world.jobs.jobs) == 1 and world.jobs.create_calls == 2
    assert len(world.registry.parts(report.job_id)) == 1
    part = world.registry.parts(report.job_id)[0]
    assert world.jobs._by_token[client_token(report.job_id, part.name)] == part.arn


def test_batch_mode_reports_each_ineligible_record_as_a_line_error_and_runs_the_rest() -> None:
    world = World()
    lines = [{"job": {"mode": "batch"}}, *_records(MIN), {"id": "s", "prompt": "stream me", "stream": True}]
    _, report = world.upload("incoming/a.jsonl", lines)

    assert report.execution == "batch" and report.items == MIN and report.rejected_lines == 1
    (error,) = world.results.errors[report.job_id]
    assert error["lineNumber"] == MIN + 2 and "streaming" in error["reason"] and NOVA in error["reason"]


def test_auto_runs_on_demand_and_says_why_when_a_model_is_below_bedrocks_minimum() -> None:
    world = World(default_mode="auto")
    _, report = world.upload("incoming/a.jsonl", _records(MIN - 1))

    assert report.execution == "on_demand" and len(world.queue.received()) == MIN - 1
    reason = world.parent_tags(report)["pipeline.execution_reason"]
    assert reason.startswith("auto: ") and "at least 3" in reason and not world.jobs.jobs
    assert all(item.execution == "on_demand" for item in world.queue.received())


def test_auto_chooses_batch_when_every_record_is_eligible() -> None:
    world = World(default_mode="auto")
    _, report = world.upload("incoming/a.jsonl", _records(MIN))
    assert report.execution == "batch" and len(world.jobs.jobs) == 1
    assert "every record can run in batch" in world.parent_tags(report)["pipeline.execution_reason"]


def test_without_batch_set_up_a_batch_file_runs_on_demand_and_says_so() -> None:
    world = World(batch_set_up=False)
    _, report = world.upload("incoming/a.jsonl", [{"job": {"mode": "batch"}}, *_records(MIN)])
    assert report.execution == "on_demand" and len(world.queue.received()) == MIN
    assert "not set up" in world.parent_tags(report)["pipeline.execution_reason"]


def _bound(n: int, model: str = NOVA, text: str = "q") -> list[WorkItem]:
    job = JobRef(
        job_id="j-1",
        experiment_id="1",
        parent_run_id="p",
        source_bucket=BUCKET,
        source_key="k",
        source_etag="e",
    )
    request = {"messages": [{"role": "user", "content": [{"text": text}]}]}
    return [
        WorkItem(record_id=f"r{i}", line_number=i, model_id=model, request=request).bound_to(job)
        for i in range(n)
    ]


def test_records_split_evenly_at_the_per_job_and_per_file_record_quotas() -> None:
    parts = plan_parts("j-1", _bound(25), limits=BatchLimits(max_records_per_file=4, max_records_per_job=10))
    assert [p.records for p in parts] == [9, 8, 8]  # three jobs, none left below the others
    assert [len(p.files) for p in parts] == [3, 2, 2]
    for part in parts:
        counts = [body.count(b"\n") for _, body in part.files]
        assert sum(counts) == part.records and max(counts) <= 4


def test_records_split_at_the_file_and_job_size_quotas() -> None:
    items = _bound(6, text="x" * 300)
    one = len(plan_parts("j-1", items[:1])[0].files[0][1])
    parts = plan_parts("j-1", items, limits=BatchLimits(max_file_bytes=2 * one, max_job_bytes=4 * one + 10))
    assert [p.records for p in parts] == [3, 3]
    assert all(len(body) <= 2 * one for p in parts for _, body in p.files)
    names = [p.name for p in parts]
    assert len(set(names)) == 2 and all(len(name) <= 63 for name in names)


def test_a_record_larger_than_a_file_may_be_is_refused_loudly() -> None:
    with pytest.raises(ValueError, match="larger than"):
        plan_parts("j-1", _bound(1, text="x" * 500), limits=BatchLimits(max_file_bytes=100))


def test_a_budget_is_checked_at_the_price_the_job_runs_at() -> None:
    from bedrock_pipeline.estimate import estimate_items
    from bedrock_pipeline.prompt_file import read_prompt_file

    records = _records(4, max_tokens=1000)
    parsed = read_prompt_file("".join(json.dumps(r) + "\n" for r in records).encode(), default_models=(NOVA,))
    on_demand = estimate_items(parsed.items, PriceTable.load()).cost_usd
    batch = estimate_items(parsed.items, PriceTable.load(), tier="batch").cost_usd
    assert 0 < batch < on_demand
    budget = (batch + on_demand) / 2  # enough in batch mode, not on demand

    world = World()
    _, in_batch = world.upload(
        "incoming/b.jsonl", [{"job": {"mode": "batch", "budget_usd": budget}}, *records]
    )
    _, on_demand_job = world.upload(
        "incoming/o.jsonl", [{"job": {"mode": "on_demand", "budget_usd": budget}}, *records]
    )

    assert in_batch.execution == "batch" and in_batch.items == 4 and not in_batch.rejected_reason
    assert on_demand_job.items == 0 and "budget" in (on_demand_job.rejected_reason or "")
