"""`status <job id>`: one answer for batch, evaluation and benchmark jobs alike.

A batch job is in the job ledger; an evaluation job is known by what the evaluator writes under
results/<job>/ (comparison.json last, or an errors.jsonl saying it was rejected or stopped); a
benchmark run by results/benchmarks/<run id>/summary.json. Exit 0: finished or still running;
1: rejected, failed, regressed, or not known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline import settings
from bedrock_pipeline.benchmark import settings as bench
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.ports import JobCounts
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.results import format_table, summarize
from bedrock_pipeline.storage import S3ResultStore
from pipeline_cli.batch_status import batch_job_lines
from pipeline_cli.errors import EXIT_FAILURE
from pipeline_cli.target import Target

COMPARISON_FILE = "comparison.json"  # evaluation.evaluate.COMPARISON_FILE, without importing MLflow
# errors.jsonl first lines that mean an evaluation job never ran (evaluation/dead_letter.py, evaluate.py).
EVALUATION_REFUSALS = ("job rejected: ", "job stopped: ")


def get_json(target: Target, key: str) -> Any | None:
    """An object of the bucket as JSON (None if it is not there)."""
    try:
        body = target.client("s3").get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return json.loads(body)


def get_jsonl(target: Target, key: str) -> list[dict[str, Any]]:
    try:
        body = target.client("s3").get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return []
        raise
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def print_status(target: Target, job_id: str) -> int:
    state = JobLedger(target.client("dynamodb"), target.jobs_table).state(job_id)
    if state is not None:
        return _batch_status(target, job_id, state.counts)
    evaluation = evaluation_outcome(target, job_id)
    if evaluation is not None:
        return evaluation.print()
    benchmark = get_json(target, f"{bench.RESULTS_PREFIX}{job_id}/summary.json")
    if benchmark is not None:
        return _benchmark_status(job_id, benchmark)
    print(
        f"job {job_id}: not known (yet): a prompt file may still be waiting for the ingest handler, "
        "an evaluation may still be running"
    )
    return EXIT_FAILURE


def _batch_status(target: Target, job_id: str, counts: JobCounts) -> int:
    errors_uri = f"s3://{target.bucket}/{settings.RESULTS_PREFIX}{job_id}/errors.jsonl"
    progress = (
        f"{counts.ended}/{counts.expected} items ended ({counts.succeeded} succeeded, {counts.failed} "
        f"failed); {counts.retries} retries; {counts.rejected_lines} rejected lines"
    )
    batch_jobs = batch_job_lines(target, job_id)
    if not counts.finalized:
        print(f"job {job_id}: running; {progress}")
        for line in batch_jobs:
            print(line)
        return 0
    store = S3ResultStore(target.client("s3"), target.bucket)
    summary = store.get_summary(job_id) or {}
    status = str(summary.get("status", "finished"))  # summaries written before status existed
    if status == "rejected":
        print(f"job {job_id}: rejected: {summary.get('reason')}")
        print(f"details: {errors_uri}")
        return EXIT_FAILURE
    headline = f"job {job_id}: {status}; {progress}"
    print(headline + (f"\nreason: {summary['reason']}" if summary.get("reason") else ""))
    for line in batch_jobs:
        print(line)
    print(format_table(summarize(store.item_results(job_id), PriceTable.load())))
    print(f"results: s3://{target.bucket}/{settings.RESULTS_PREFIX}{job_id}/results.jsonl")
    if counts.rejected_lines:
        print(f"bad lines: {errors_uri}")
    return 0 if status == "finished" else EXIT_FAILURE


@dataclass(frozen=True)
class EvaluationOutcome:
    """A finished evaluation job: its comparison document, or why it never ran."""

    job_id: str
    comparison: dict[str, Any] | None = None
    refusal: str | None = None

    def print(self, gates: dict[str, float] | None = None) -> int:
        if self.comparison is None:
            print(f"job {self.job_id}: failed: {self.refusal}")
            return EXIT_FAILURE
        print(f"job {self.job_id}: finished (evaluation)")
        print(format_comparison(self.comparison))
        unmet = unmet_gates(self.comparison, gates or {})
        for line in unmet:
            print(f"gate not met: {line}")
        return EXIT_FAILURE if unmet else 0


def evaluation_outcome(target: Target, job_id: str) -> EvaluationOutcome | None:
    """None while the job has not ended (or is no evaluation job)."""
    comparison = get_json(target, f"{settings.RESULTS_PREFIX}{job_id}/{COMPARISON_FILE}")
    if comparison is not None:
        return EvaluationOutcome(job_id, comparison=comparison)
    errors = get_jsonl(target, f"{settings.RESULTS_PREFIX}{job_id}/errors.jsonl")
    if errors and str(errors[0].get("reason", "")).startswith(EVALUATION_REFUSALS):
        return EvaluationOutcome(job_id, refusal=str(errors[0]["reason"]))
    return None


def format_comparison(document: dict[str, Any]) -> str:
    """Models x scorers, then the best model and what the job cost."""
    rows: list[dict[str, Any]] = document.get("models", [])
    fixed = {"rank", "model", "answered", "cost_usd", "cost_per_correct_usd", "mean_latency_ms"}
    fixed |= {"p95_latency_ms", "gap_points"}
    scorers = sorted({k for row in rows for k in row if k not in fixed})
    columns = ["rank", "model", *scorers, "answered", "cost_usd", "p95_latency_ms"]
    table = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    out = [
        "  ".join(
            cell.ljust(w) if i == 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    models_cost = sum(float(row.get("cost_usd") or 0) for row in rows)
    judge_cost = float(document.get("judge", {}).get("costUsd") or 0)
    out.append(
        f"best model: {document.get('bestModel')} on {document.get('primaryMetric')} "
        f"({document.get('marginPoints', 0)} points ahead of the next)"
    )
    out.append(
        f"cost: {models_cost + judge_cost:.6f} USD (answers {models_cost:.6f}, judge {judge_cost:.6f})"
    )
    return "\n".join(out)


def unmet_gates(document: dict[str, Any], gates: dict[str, float]) -> list[str]:
    """`--fail-under SCORER=VALUE`: the best model's mean score must reach each value."""
    best = next(
        (row for row in document.get("models", []) if row.get("model") == document.get("bestModel")), {}
    )
    unmet = []
    for scorer, minimum in gates.items():
        value = best.get(scorer)
        if not isinstance(value, int | float):
            unmet.append(f"{scorer}: the job has no such score (its scores: {_score_names(best)})")
        elif value < minimum:
            unmet.append(f"{scorer} of the best model {best.get('model')} is {value}, under {minimum}")
    return unmet


def _score_names(row: dict[str, Any]) -> str:
    names = [k for k, v in row.items() if isinstance(v, int | float) and k not in ("rank",)]
    return ", ".join(names) or "none"


def _benchmark_status(run_id: str, summary: dict[str, Any]) -> int:
    regressions = int(summary.get("regressions", 0))
    suite = summary.get("suite", {})
    print(f"benchmark run {run_id}: finished; suite {suite.get('id')}; {regressions} regression(s)")
    for model in summary.get("models", []):
        figures = model.get("figures", {})
        regressed = [r.get("metric") for r in model.get("regression", {}).get("regressions", [])]
        print(
            f"  {model.get('modelId')}: success rate {figures.get('success_rate')}, quality "
            f"{figures.get('quality_score')}, p95 {figures.get('p95_latency_ms')} ms; "
            f"regressed: {', '.join(map(str, regressed)) or 'no'}"
        )
    return EXIT_FAILURE if regressions else 0
