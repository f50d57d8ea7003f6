"""Use case: when a job's last item has ended, merge its results, write its summary, close its run. Once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline.ports import BatchRegistry, JobLedger, JobState, ResultStore, RunRecorder
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.results import format_table, job_verdict, summarize, summary_document


@dataclass(frozen=True)
class FinalizeDeps:
    ledger: JobLedger
    results: ResultStore
    recorder: RunRecorder
    prices: PriceTable | None = None  # for the on-demand cost of a batch job's tokens (summary.json)
    batch: BatchRegistry | None = None  # for the duration of a job's Bedrock batch jobs (parent run)


def finalize_if_complete(deps: FinalizeDeps, job_id: str) -> dict[str, Any] | None:
    """The job's summary if this call finalized it; None if the job is not complete or someone else has it."""
    state = deps.ledger.claim_finalization(job_id)
    if state is None:
        return None
    try:
        return _finalize(deps, state)
    except Exception:
        # Let the next runner (or this batch's redelivery) finalize instead of leaving it claimed.
        deps.ledger.release_finalization(job_id)
        raise


def _finalize(deps: FinalizeDeps, state: JobState) -> dict[str, Any]:
    job, counts = state.job, state.counts
    lines = deps.results.item_results(job.job_id)
    deps.results.put_results(job.job_id, lines)
    rows = summarize(lines, deps.prices)
    verdict = job_verdict(lines, state.rejected_reason)
    summary = summary_document(
        job.job_id, rows, counts.rejected_lines, verdict=verdict, retries=counts.retries
    )
    deps.results.put_summary(job.job_id, summary)
    totals = summary["totals"]
    if verdict.status == "failed" and verdict.reason:  # a rejection's reason is on the run since ingest
        deps.recorder.note_job_error(job.parent_run_id, verdict.reason)
    deps.recorder.log_job_text(job.parent_run_id, format_table(rows) + "\n", "summary.txt")
    deps.recorder.log_job_text(job.parent_run_id, json.dumps(summary, indent=2), "summary.json")
    deps.recorder.finish_job_run(
        job.parent_run_id,
        {
            "records": totals["records"],
            "succeeded": totals["succeeded"],
            "failed": totals["failed"],
            "rejected_lines": counts.rejected_lines,
            "input_tokens": sum(r.input_tokens for r in rows),
            "output_tokens": sum(r.output_tokens for r in rows),
            "cost_usd": totals["cost_usd"],
            **{k: totals[k] for k in ("on_demand_cost_usd", "saving_usd") if k in totals},
            "retries": counts.retries,
            **_batch_seconds(deps, job.job_id),
        },
        failed=not verdict.ok,
    )
    deps.ledger.mark_finalized(job.job_id)
    return summary


def _batch_seconds(deps: FinalizeDeps, job_id: str) -> dict[str, float]:
    """``batch_job_seconds``: how long the job's Bedrock batch jobs took, submitted to ended (the longest
    of them); nothing for a job that ran on demand."""
    if deps.batch is None:
        return {}
    durations = [deps.batch.duration_seconds(part.arn) for part in deps.batch.parts(job_id)]
    known = [d for d in durations if d is not None]
    return {"batch_job_seconds": round(max(known), 3)} if known else {}
