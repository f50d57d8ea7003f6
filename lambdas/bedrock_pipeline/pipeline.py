"""The pipeline's use cases: ingest a prompt file, run a work item, finalize a job.

Plain Python over small adapters (S3, SQS, DynamoDB clients; the Bedrock gateway; the MLflow
tracker); the handlers only build a `Pipeline` once per cold start and call these methods.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from botocore.exceptions import ClientError

from bedrock_pipeline import settings
from bedrock_pipeline.bedrock import ResponseCache
from bedrock_pipeline.estimate import estimate_items
from bedrock_pipeline.jobs import JobKind, JobRef, WorkMessage, experiment_for, job_id_for
from bedrock_pipeline.ledger import JobLedger, item_digest
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import ParsedPromptFile, parse_prompt_file
from bedrock_pipeline.results import ResultStore, format_table, summarize, summary_document
from bedrock_pipeline.runner import RunnerDeps, TransientItemError, execute, failure_line
from bedrock_pipeline.tracking import TAG_ERROR, TAG_KIND, TAG_SOURCE, TAG_SOURCE_ETAG, RunTracker, user_tags

logger = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10
# How long a completed item's idempotency record answers duplicates. After it expires the ledger's end
# mark still stops a duplicate; the record matters for concurrent duplicates and the crash window.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class IngestReport:
    job_id: str
    experiment_id: str
    parent_run_id: str
    items: int
    rejected_lines: int
    rejected_reason: str | None = None
    duplicate: bool = False
    skipped: str | None = None  # why nothing was done (object gone or replaced): not an error


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
    # Powertools idempotency (DynamoDB, pk "id", TTL "expiration"). Without it, run_item still never
    # counts twice (ledger) but concurrent duplicates of one item could both call the model.
    dynamodb: Any = None
    idempotency_table: str = ""
    _idempotency_config: IdempotencyConfig | None = field(default=None, init=False, repr=False)
    _run_once: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.idempotency_table:
            self._idempotency_config = IdempotencyConfig(
                event_key_jmespath="item_key",
                expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
                lambda_context=_FallbackContext(),
            )
            persistence = DynamoDBPersistenceLayer(
                table_name=self.idempotency_table, boto3_client=self.dynamodb
            )
            self._run_once = idempotent_function(
                data_keyword_argument="work",
                persistence_store=persistence,
                config=self._idempotency_config,
            )(self._run_item_body)

    def register_lambda_context(self, context: Any) -> None:
        """An in-progress idempotency record expires with the invocation: a crashed one does not block."""
        if self._idempotency_config is not None and context is not None:
            self._idempotency_config.register_lambda_context(context)

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.s3, self.bucket)

    # --- ingest ---------------------------------------------------------------------------
    def ingest_object(
        self, bucket: str, key: str, kind: JobKind = "batch", etag: str | None = None
    ) -> IngestReport:
        """Validate, split and enqueue one prompt file. Never raises for bad content (see README).

        ``etag``: the version the S3 event announced. An object deleted or overwritten since is
        skipped, not retried: the overwrite sends its own event, and a deleted file has nothing to run.
        """
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                return IngestReport(
                    "", "", "", 0, 0, skipped=f"s3://{bucket}/{key}: the object no longer exists"
                )
            raise
        if etag and head["ETag"].strip('"') != etag.strip('"'):
            return IngestReport(
                "",
                "",
                "",
                0,
                0,
                skipped=f"s3://{bucket}/{key}: replaced since the event (its own event runs it)",
            )
        etag = head["ETag"].strip('"')
        job_id = job_id_for(key, etag)
        if head["ContentLength"] > settings.MAX_PROMPT_FILE_BYTES:
            parsed = ParsedPromptFile.rejection(
                f"file is {head['ContentLength']:,} bytes; the limit is {settings.MAX_PROMPT_FILE_BYTES:,}"
            )
        else:
            body = self.s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"].read()
            problem = file_problem(body)
            parsed = (
                ParsedPromptFile.rejection(problem)
                if problem
                else parse_prompt_file(body, default_models=self.default_models)
            )
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
        elif errors and not items:
            # Not one good line: the job's run says so, not only its errors.jsonl.
            first = errors[0]
            self.tracker.client.set_tag(
                parent_run_id,
                TAG_ERROR,
                f"no valid record; {len(errors)} bad line(s), first: line {first['lineNumber']}: {first['reason']}"[
                    :5000
                ],
            )
        if errors:
            self.store.put_errors(job_id, errors)
            self.tracker.log_job_artifact_text(
                parent_run_id, "".join(json.dumps(e) + "\n" for e in errors), "errors.jsonl"
            )

        self.ledger.register(
            job, expected=len(items), rejected_lines=len(parsed.errors), rejected_reason=rejected_reason
        )
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
        """Run one work item once (docs/RELIABILITY.md). A duplicate delivery of an ended item does nothing.

        Raises (TransientItemError or whatever failed) when the item should return to the queue.
        """
        job_id = message.job.job_id
        end = self.ledger.item_end(job_id, message.item_key)
        redriven = end is not None and end.retryable
        if end is not None and not redriven:
            return ItemOutcome(job_id=job_id, succeeded=end.succeeded, duplicate=True)
        work = {"item_key": message.item_key}
        if self._run_once is not None:
            try:
                done = self._run_once(work=work, message=message)
            except IdempotencyAlreadyInProgressError as exc:
                # Another delivery of the same item is running right now: come back later.
                raise TransientItemError("another delivery of this item is in progress") from exc
        else:
            done = self._run_item_body(work=work, message=message)
        succeeded = bool(done["succeeded"])
        if redriven:
            revised = self.ledger.revise_end(job_id, message.item_key, succeeded)
            return ItemOutcome(job_id=job_id, succeeded=succeeded, duplicate=not revised)
        first_time = self.ledger.record_end(job_id, message.item_key, succeeded)
        return ItemOutcome(job_id=job_id, succeeded=succeeded, duplicate=not first_time)

    def _run_item_body(self, *, work: dict[str, Any], message: WorkMessage) -> dict[str, Any]:
        """Everything up to (not including) the ledger mark; its small result is the idempotency record."""
        del work  # only the idempotency key
        job_id = message.job.job_id
        attempt = self.ledger.begin_attempt(job_id, message.item_key)
        deps = RunnerDeps(
            gateway=self.gateway,
            tracker=self.tracker,
            prices=self.prices,
            responses=ResponseCache(self.s3, self.bucket),
        )
        line = execute(message, deps, attempt=attempt)
        self.store.put_item_result(job_id, message.item_key, line)
        # The idempotency record keeps only this; the line itself is in S3 (it can be large).
        return {"succeeded": "error" not in line, "runId": line["mlflow"]["runId"]}

    def give_up(self, message: WorkMessage, reason: str, attempts: int) -> bool:
        """The item's last receive failed too: end it as a failure with its reason (an error line), while
        its message moves on to the DLQ, so the job still finishes. A redrive may run it again."""
        line = failure_line(message, "RetriesExhausted", f"gave up after {attempts} attempts: {reason}")
        job_id = message.job.job_id
        if self.ledger.has_ended(job_id, message.item_key):
            return False
        self.store.put_item_result(job_id, message.item_key, line)
        ended = self.ledger.record_end(job_id, message.item_key, False, retryable=True)
        self._close_orphan_run(message, line["error"]["errorMessage"])
        return ended

    def _close_orphan_run(self, message: WorkMessage, reason: str) -> None:
        """Best effort: a run an attempt left RUNNING (MLflow went away mid-item) is marked FAILED with the
        reason. A redrive reuses it (and re-logs the cached answer into it)."""
        try:
            run = self.tracker.find_call_run(
                message.job.experiment_id, message.job.job_id, item_digest(message.item_key)
            )
            if run is not None and run.info.status == "RUNNING":
                self.tracker.client.set_tag(run.info.run_id, TAG_ERROR, reason[:5000])
                self.tracker.client.set_terminated(run.info.run_id, "FAILED")
        except Exception:  # MLflow may well be the reason the item gave up
            logger.warning("could not close the run of %s", message.item_key, exc_info=True)

    # --- finalize ---------------------------------------------------------------------------
    def finalize_if_complete(self, job_id: str) -> dict[str, Any] | None:
        """Merge results and close the job's parent run, once, when its last item has ended."""
        if not self.ledger.claim_finalization(job_id):
            return None
        try:
            return self._finalize(job_id)
        except Exception:
            # Let the next runner (or this batch's redelivery) finalize instead of leaving it claimed.
            self.ledger.release_finalization(job_id)
            raise

    def _finalize(self, job_id: str) -> dict[str, Any]:
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
            failed=totals["records"] == 0
            and (counts.rejected_lines > 0 or self.ledger.rejection(job_id) is not None),
        )
        self.ledger.mark_finalized(job_id)
        return summary


# Byte-order marks of encodings a prompt file must not be in (UTF-32 first: its LE mark starts like UTF-16's).
_FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def file_problem(body: bytes) -> str | None:
    """Whole-file problems the line parser would only report line by line, less clearly."""
    for bom, encoding in _FOREIGN_BOMS:
        if body.startswith(bom):
            return f"the file is {encoding}-encoded; prompt files must be UTF-8 (JSON Lines)"
    if not body.strip():
        return "the file is empty: no records to run"
    return None


@dataclass
class _FallbackContext:
    """Outside Lambda (bench, tests calling run_item directly) an in-progress record expires after the
    runner's function timeout, as it would on Lambda; a registered Lambda context replaces this."""

    timeout_seconds: float = settings.RUNNER_TIMEOUT_SECONDS
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_seconds * 1000)
