"""The pipeline's use cases: ingest a prompt file, run a work item, finalize a job.

Plain Python over small adapters (S3, SQS, DynamoDB clients; the Bedrock gateway; the MLflow
tracker); the handlers only build a `Pipeline` once per cold start and call these methods.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.estimate import estimate_items
from bedrock_pipeline.jobs import JobKind, JobRef, WorkMessage, experiment_for, job_id_for
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import ParsedPromptFile, parse_prompt_file
from bedrock_pipeline.results import ResultStore, format_table, summarize, summary_document
from bedrock_pipeline.runner import RunnerDeps, execute
from bedrock_pipeline.tracking import TAG_ERROR, TAG_KIND, TAG_SOURCE, TAG_SOURCE_ETAG, RunTracker, user_tags

logger = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10


@dataclass(frozen=True)
class IngestReport:
    job_id: str
    experiment_id: str
    parent_run_id: str
    items: int
    rejected_lines: int
    rejected_reason: str | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class ItemOutcome:
    job_id: str
    succeeded: bool
    duplicate: bool = False
    line: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    s3: Any
    sqs: Any
    ledger: JobLedger
    tracker: RunTracker
    prices: PriceTable
    bucket: str
    work_queue_url: str = ""
    gateway: Any = None  # ModelGateway; only the runner needs one
    default_models: Sequence[str] = settings.DEFAULT_MODELS

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.s3, self.bucket)

    # --- ingest ---------------------------------------------------------------------------
    def ingest_object(self, bucket: str, key: str, kind: JobKind = "batch") -> IngestReport:
        head = self.s3.head_object(Bucket=bucket, Key=key)
        etag = head["ETag"].strip('"')
        job_id = job_id_for(key, etag)
        if head["ContentLength"] > settings.MAX_PROMPT_FILE_BYTES:
            parsed = ParsedPromptFile.rejection(
                f"file is {head['ContentLength']:,} bytes; the limit is {settings.MAX_PROMPT_FILE_BYTES:,}"
            )
        else:
            body = self.s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"].read()
            parsed = parse_prompt_file(body, default_models=self.default_models)
        return self._start_job(parsed, bucket, key, etag, job_id, kind)

    def _start_job(
        self, parsed: ParsedPromptFile, bucket: str, key: str, etag: str, job_id: str, kind: JobKind
    ) -> IngestReport:
        experiment_id = self.tracker.ensure_experiment(experiment_for(key, parsed.job.experiment))
        source = f"s3://{bucket}/{key}"
        parent_tags = {
            **user_tags(parsed.job.tags),
            TAG_KIND: kind,
            TAG_SOURCE: source,
            TAG_SOURCE_ETAG: etag,
        }
        parent_run_id = self.tracker.start_job_run(experiment_id, job_id, key.rsplit("/", 1)[-1], parent_tags)
        job = JobRef(
            job_id=job_id,
            kind=kind,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            source_bucket=bucket,
            source_key=key,
            source_etag=etag,
        )
        rejected_reason = parsed.rejected
        items = [] if rejected_reason else parsed.items
        if not rejected_reason and parsed.job.budget_usd is not None and items:
            estimate = estimate_items(items, self.prices)
            if estimate.cost_usd > parsed.job.budget_usd:
                rejected_reason = (
                    f"estimated cost {estimate.cost_usd:.4f} USD exceeds the job budget "
                    f"{parsed.job.budget_usd:.4f} USD"
                )
                items = []

        errors = [
            {"lineNumber": e.line_number, "reason": e.reason, "excerpt": e.excerpt} for e in parsed.errors
        ]
        if rejected_reason:
            errors.insert(0, {"lineNumber": None, "reason": f"file rejected: {rejected_reason}"})
            self.tracker.client.set_tag(parent_run_id, TAG_ERROR, rejected_reason[:5000])
        if errors:
            self.store.put_errors(job_id, errors)
            self.tracker.log_job_artifact_text(
                parent_run_id, "".join(json.dumps(e) + "\n" for e in errors), "errors.jsonl"
            )

        self.ledger.register(job, expected=len(items), rejected_lines=len(parsed.errors))
        # Enqueue, then mark: a crash in between re-sends on redelivery (the runner skips ended items)
        # instead of losing items. A job already marked was a redelivered event: nothing to do twice.
        duplicate = self.ledger.is_enqueued(job_id)
        if not duplicate:
            self._enqueue(job, items)
            self.ledger.mark_enqueued(job_id)
        if not items:
            self.finalize_if_complete(job_id)
        return IngestReport(
            job_id=job_id,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            items=len(items),
            rejected_lines=len(parsed.errors),
            rejected_reason=rejected_reason,
            duplicate=duplicate,
        )

    def _enqueue(self, job: JobRef, items: Sequence[Any]) -> None:
        messages = [
            WorkMessage(
                job=job,
                record_id=item.record_id,
                line_number=item.line_number,
                model_id=item.model_id,
                request=item.request,
                stream=item.stream,
                tags=item.tags,
            )
            for item in items
        ]
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            response = self.sqs.send_message_batch(
                QueueUrl=self.work_queue_url,
                Entries=[{"Id": str(i), "MessageBody": m.model_dump_json()} for i, m in enumerate(chunk)],
            )
            if response.get("Failed"):
                # Raise so the ingest message is retried; items already sent are deduplicated by the ledger.
                raise RuntimeError(
                    f"could not enqueue {len(response['Failed'])} work items: {response['Failed']}"
                )

    # --- run --------------------------------------------------------------------------------
    def run_item(self, message: WorkMessage) -> ItemOutcome:
        """Run one work item once. A duplicate delivery of an ended item does nothing."""
        job_id = message.job.job_id
        if self.ledger.has_ended(job_id, message.item_key):
            return ItemOutcome(job_id=job_id, succeeded=True, duplicate=True)
        line = execute(message, RunnerDeps(gateway=self.gateway, tracker=self.tracker, prices=self.prices))
        succeeded = "error" not in line
        self.store.put_item_result(job_id, message.item_key, line)
        first_time = self.ledger.record_end(job_id, message.item_key, succeeded)
        return ItemOutcome(job_id=job_id, succeeded=succeeded, duplicate=not first_time, line=line)

    # --- finalize ---------------------------------------------------------------------------
    def finalize_if_complete(self, job_id: str) -> dict[str, Any] | None:
        """Merge results and close the job's parent run, once, when its last item has ended."""
        if not self.ledger.claim_finalization(job_id):
            return None
        job = self.ledger.job(job_id)
        counts = self.ledger.counts(job_id)
        assert job is not None and counts is not None
        lines = self.store.item_results(job_id)
        self.store.put_results(job_id, lines)
        rows = summarize(lines)
        summary = summary_document(job_id, rows, counts.rejected_lines)
        self.store.put_summary(job_id, summary)
        totals = summary["totals"]
        self.tracker.log_job_artifact_text(job.parent_run_id, format_table(rows) + "\n", "summary.txt")
        self.tracker.log_job_artifact_text(job.parent_run_id, json.dumps(summary, indent=2), "summary.json")
        self.tracker.finish_job_run(
            job.parent_run_id,
            {
                "records": totals["records"],
                "succeeded": totals["succeeded"],
                "failed": totals["failed"],
                "rejected_lines": counts.rejected_lines,
                "input_tokens": sum(r.input_tokens for r in rows),
                "output_tokens": sum(r.output_tokens for r in rows),
                "cost_usd": totals["cost_usd"],
            },
            failed=totals["records"] == 0 and counts.rejected_lines > 0,
        )
        self.ledger.mark_finalized(job_id)
        return summary
