"""Use case: validate, split and enqueue one prompt file, as one job with its parent run.

Never raises for bad content (README "Prompt files"): bad lines and whole-file rejections go to
results/<job>/errors.jsonl and the job's parent run. What raises (S3, SQS, MLflow unreachable)
returns the S3 event to the queue; a redelivered event is the same job and enqueues nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.attachments import is_attachment_key
from bedrock_pipeline.batch.eligibility import ExecutionPlan, plan_execution
from bedrock_pipeline.domain import JobKind, JobRef, WorkItem, experiment_for, job_id_for
from bedrock_pipeline.estimate import estimate_items, over_budget_reason
from bedrock_pipeline.media_tokens import MediaFacts
from bedrock_pipeline.ports import (
    JobLedger,
    MediaStore,
    PromptSource,
    ResultStore,
    RunRecorder,
    SourceObject,
    WorkQueue,
)
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import ParsedPromptFile, read_prompt_file
from bedrock_pipeline.run_names import (
    TAG_EXECUTION,
    TAG_EXECUTION_REASON,
    TAG_KIND,
    TAG_SOURCE,
    TAG_SOURCE_ETAG,
    user_tags,
)
from bedrock_pipeline.use_cases.attachment_check import check_attachments
from bedrock_pipeline.use_cases.finalize import FinalizeDeps, finalize_if_complete
from bedrock_pipeline.use_cases.model_check import ModelCatalog, drop_unknown_models, resolve_profiles
from bedrock_pipeline.use_cases.submit_batch import BatchDeps, submit_batch


@dataclass(frozen=True)
class IngestDeps:
    source: PromptSource
    queue: WorkQueue
    ledger: JobLedger
    recorder: RunRecorder
    results: ResultStore
    prices: PriceTable
    default_models: Sequence[str] = settings.DEFAULT_MODELS
    models: ModelCatalog | None = None  # None: every model id is sent (Bedrock decides)
    media: MediaStore | None = None  # None: attachments are not checked at ingest (Bedrock decides)
    default_mode: str = settings.DEFAULT_EXECUTION_MODE  # for files whose header names no "mode"
    batch: BatchDeps | None = None  # None: batch inference is not set up here (every job runs on demand)

    @property
    def finalize(self) -> FinalizeDeps:
        return FinalizeDeps(
            ledger=self.ledger, results=self.results, recorder=self.recorder, prices=self.prices
        )


@dataclass(frozen=True)
class IngestReport:
    job_id: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    items: int = 0
    rejected_lines: int = 0
    rejected_reason: str | None = None
    duplicate: bool = False
    skipped: str | None = None  # why nothing was done (object gone or replaced): not an error
    execution: str = "on_demand"  # how the items run: "on_demand" (work queue) or "batch" (Bedrock jobs)
    execution_reason: str = ""


def ingest_prompt_file(
    deps: IngestDeps, bucket: str, key: str, *, etag: str | None = None, kind: JobKind = "batch"
) -> IngestReport:
    """One prompt file in, one job out (its items on the work queue).

    ``etag``: the version the S3 event announced. An object deleted or overwritten since is skipped,
    not retried: the overwrite sends its own event, and a deleted file has nothing to run.
    """
    if is_attachment_key(key):  # a file records attach, uploaded beside them: not a prompt file
        return IngestReport(
            skipped=f"s3://{bucket}/{key}: an attachment (by its extension), not a prompt file"
        )
    source = deps.source.head(bucket, key)
    if source is None:
        return IngestReport(skipped=f"s3://{bucket}/{key}: the object no longer exists")
    if etag and source.etag != etag.strip('"'):
        return IngestReport(skipped=f"s3://{bucket}/{key}: replaced since the event (its own event runs it)")
    parsed = resolve_profiles(deps.models, drop_unknown_models(deps.models, _parse(deps, source)))
    # Documents' tokens matter only to a budget: without one they are headed, not read.
    budgeted = parsed.job.budget_usd is not None
    parsed, media = check_attachments(deps.media, parsed, read_documents=budgeted)
    return _start_job(deps, source, parsed, kind, media)


def _parse(deps: IngestDeps, source: SourceObject) -> ParsedPromptFile:
    if source.size > settings.MAX_PROMPT_FILE_BYTES:
        return ParsedPromptFile.rejection(
            f"file is {source.size:,} bytes; the limit is {settings.MAX_PROMPT_FILE_BYTES:,}"
        )
    return read_prompt_file(
        deps.source.read(source),
        default_models=deps.default_models,
        source_uri=f"s3://{source.bucket}/{source.key}",  # attachments given by "path" are beside it
    )


def _start_job(
    deps: IngestDeps,
    source: SourceObject,
    parsed: ParsedPromptFile,
    kind: JobKind,
    media: Mapping[str, MediaFacts],
) -> IngestReport:
    job_id = job_id_for(source.key, source.etag)
    experiment_id = deps.recorder.ensure_experiment(experiment_for(source.key, parsed.job.experiment))
    plan = _plan(deps, parsed, runs=not parsed.rejected)
    # The budget is checked against what will run, at the price it will run at (batch: the batch rate).
    rejected_reason = parsed.rejected or _over_budget(deps, parsed, plan, media)
    if rejected_reason and not parsed.rejected:
        plan = _plan(deps, parsed, runs=False)
    parent_tags = {
        **user_tags(parsed.job.tags),
        TAG_KIND: kind,
        TAG_SOURCE: f"s3://{source.bucket}/{source.key}",
        TAG_SOURCE_ETAG: source.etag,
        TAG_EXECUTION: plan.execution,
        TAG_EXECUTION_REASON: plan.reason[:5000],
    }
    run_name = source.key.rsplit("/", 1)[-1]
    parent_run_id = deps.recorder.start_job_run(experiment_id, job_id, run_name, parent_tags)
    job = JobRef(
        job_id=job_id,
        kind=kind,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        source_bucket=source.bucket,
        source_key=source.key,
        source_etag=source.etag,
    )
    items = [] if rejected_reason else [_bound(item, job, plan) for item in plan.items]
    refused = [
        {"lineNumber": item.line_number, "reason": f"{item.model_id}: cannot run in batch: {why}"}
        for item, why in plan.refused
    ]
    _report_errors(deps, job, parsed, rejected_reason, has_items=bool(items), refused=refused)

    already_enqueued = deps.ledger.register(
        job,
        expected=len(items),
        rejected_lines=len(parsed.errors) + len(refused),
        rejected_reason=rejected_reason,
    )
    # Enqueue (or submit), then mark: a crash in between re-sends on redelivery (the runner skips ended
    # items; Bedrock's client token returns the same batch job) instead of losing items. A job already
    # marked was a redelivered event: nothing to do twice.
    if not already_enqueued:
        if plan.execution == "batch" and items and deps.batch is not None:
            submit_batch(deps.batch, job, items)
        else:
            deps.queue.send(items)
        deps.ledger.mark_enqueued(job_id)
    if not items:
        finalize_if_complete(deps.finalize, job_id)
    return IngestReport(
        job_id=job_id,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        items=len(items),
        rejected_lines=len(parsed.errors) + len(refused),
        rejected_reason=rejected_reason,
        duplicate=already_enqueued,
        execution=plan.execution,
        execution_reason=plan.reason,
    )


def _plan(deps: IngestDeps, parsed: ParsedPromptFile, *, runs: bool) -> ExecutionPlan:
    """How the job runs (README "Batch mode"): the header's mode, else the deployment's."""
    mode = parsed.job.mode or deps.default_mode
    if not runs:
        return ExecutionPlan("on_demand", "nothing runs: the file was rejected", ())
    if mode != "on_demand" and deps.batch is None:
        why = f"mode {mode}, but batch inference is not set up in this deployment (no service role)"
        return ExecutionPlan("on_demand", why, tuple(parsed.items))
    if deps.batch is None:
        return plan_execution(mode, parsed.items)
    return plan_execution(mode, parsed.items, min_records=deps.batch.min_records)


def _bound(item: WorkItem, job: JobRef, plan: ExecutionPlan) -> WorkItem:
    bound = item.bound_to(job)
    return bound.model_copy(update={"execution": "batch"}) if plan.execution == "batch" else bound


def _over_budget(
    deps: IngestDeps, parsed: ParsedPromptFile, plan: ExecutionPlan, media: Mapping[str, MediaFacts]
) -> str | None:
    if parsed.job.budget_usd is None or not plan.items:
        return None
    tier = "batch" if plan.execution == "batch" else None
    estimate = estimate_items(plan.items, deps.prices, media=media, tier=tier)
    return over_budget_reason(estimate, parsed.job.budget_usd)


def _report_errors(
    deps: IngestDeps,
    job: JobRef,
    parsed: ParsedPromptFile,
    rejected_reason: str | None,
    *,
    has_items: bool,
    refused: list[dict[str, Any]],
) -> None:
    errors: list[dict[str, Any]] = [
        {"lineNumber": e.line_number, "reason": e.reason, "excerpt": e.excerpt} for e in parsed.errors
    ] + refused
    if rejected_reason:
        errors.insert(0, {"lineNumber": None, "reason": f"file rejected: {rejected_reason}"})
        deps.recorder.note_job_error(job.parent_run_id, rejected_reason)
    elif has_items:  # warnings are about lines that run; a rejected file runs none
        warnings = [
            {"lineNumber": w.line_number, "level": "warning", "reason": w.reason, "excerpt": w.excerpt}
            for w in parsed.warnings
        ]
        errors = sorted(errors + warnings, key=lambda e: int(e["lineNumber"]))
    if errors:
        deps.results.put_errors(job.job_id, errors)
        deps.recorder.log_job_text(
            job.parent_run_id, "".join(json.dumps(e) + "\n" for e in errors), "errors.jsonl"
        )


def ingest_failed(deps: IngestDeps, *, body: str, reason: str, receive_count: int) -> None:
    """Why an ingest message failed, for `dlq inspect` (the message itself returns to the queue)."""
    deps.ledger.note_failure(body, reason, receive_count)
