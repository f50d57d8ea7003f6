"""The evaluation use case: validate, estimate, answer, score with `mlflow.genai.evaluate`, compare.

MLflow layout of a job (experiment `bedrock-eval/<dataset>` unless the job names one):
- parent run (`pipeline.role = job`, `pipeline.kind = evaluation`): comparison.csv/.md/.png,
  comparison.json, tags `pipeline.eval.best_model`, metrics (rows, answered, cost, margin);
- one child run per (row, model) made by the runner's core, its trace carrying the row's assessments;
- one evaluation run per model (`pipeline.role = evaluation`), child of the parent, with the
  aggregate metrics `mlflow.genai.evaluate` logs (`<scorer>/mean`) plus cost and latency.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.entities import Metric, Trace
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from bedrock_pipeline import settings
from bedrock_pipeline.domain import JobRef, WorkItem
from bedrock_pipeline.evaluation.answering import Answer, answer_all, work_items
from bedrock_pipeline.evaluation.comparison import Comparison, ModelScore, compare, scores_from_metrics
from bedrock_pipeline.evaluation.cost_estimate import EvaluationEstimate, estimate_evaluation
from bedrock_pipeline.evaluation.job import (
    Dataset,
    DatasetRow,
    EvaluationJob,
    JobRejected,
    parse_dataset,
)
from bedrock_pipeline.evaluation.scorers import JudgeSpend, build_scorers
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.results import percentile
from bedrock_pipeline.run_names import (
    TAG_ERROR,
    TAG_JOB_ID,
    TAG_KIND,
    TAG_ROLE,
    TAG_SOURCE,
    TAG_SOURCE_ETAG,
    user_tags,
)
from bedrock_pipeline.storage import S3ResultStore
from bedrock_pipeline.tracking import RunTracker
from bedrock_pipeline.use_cases.run_item import CallDeps

logger = logging.getLogger(__name__)
# MLflow's fluent API keeps the active experiment and run per process. On Lambda one invocation runs
# at a time; the local event pump runs the evaluator's pollers (function_catalogue) as threads of one
# process, so two jobs' evaluations take turns here instead of switching each other's experiment.
_FLUENT_STATE = threading.Lock()

KIND = "evaluation"
ROLE_EVALUATION = "evaluation"
TAG_MODEL_ID = "pipeline.model_id"
TAG_BEST_MODEL = "pipeline.eval.best_model"
TAG_PRIMARY_METRIC = "pipeline.eval.primary_metric"
TAG_BUDGET_EXCEEDED = "pipeline.budget_exceeded"
COMPARISON_FILE = "comparison.json"


@dataclass(frozen=True)
class EvaluationReport:
    job_id: str
    experiment_id: str
    parent_run_id: str
    estimated_cost_usd: float
    budget_stopped: bool = False
    eval_run_ids: dict[str, str] = field(default_factory=dict)  # model id -> evaluation run id
    comparison: Comparison | None = None
    rejected_rows: int = 0


@dataclass
class Evaluator:
    s3: Any
    tracker: RunTracker
    prices: PriceTable
    gateway: Any  # ModelGateway: answers and judge calls go through the same Bedrock client
    bucket: str

    @property
    def store(self) -> S3ResultStore:
        return S3ResultStore(self.s3, self.bucket)

    # --- the use case -------------------------------------------------------------------------
    def run(self, job: EvaluationJob) -> EvaluationReport:
        assert job.job_id is not None and job.dataset.bucket is not None
        dataset, etag = self._load_dataset(job)
        experiment_id = self.tracker.ensure_experiment(job.experiment_name())
        parent_run_id = self.tracker.start_job_run(
            experiment_id,
            job.job_id,
            f"eval {job.dataset.key.rsplit('/', 1)[-1]}",
            {
                **user_tags(job.tags),
                TAG_KIND: KIND,
                TAG_SOURCE: job.dataset.uri,
                TAG_SOURCE_ETAG: etag,
                "pipeline.eval.models": ",".join(job.models),
                "pipeline.eval.scorers": ",".join(job.scorers),
            },
        )
        job_ref = JobRef(
            job_id=job.job_id,
            kind=KIND,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            source_bucket=job.dataset.bucket,
            source_key=job.dataset.key,
            source_etag=etag,
        )
        messages = work_items(job, job_ref, dataset.rows)
        estimate = self.estimate(job, dataset.rows, messages)
        report = EvaluationReport(
            job.job_id, experiment_id, parent_run_id, estimate.cost_usd, rejected_rows=len(dataset.errors)
        )
        if dataset.errors:
            self._record_errors(job.job_id, parent_run_id, dataset.errors)
        if estimate.unpriced:  # no price: the estimate (and the budget check) leaves them out
            self.tracker.client.set_tag(
                parent_run_id, "pipeline.eval.unpriced_models", ",".join(estimate.unpriced)
            )
        if job.budget_usd is not None and estimate.cost_usd > job.budget_usd:
            return self._stop_for_budget(job, report, estimate, dataset)

        answers = answer_all(messages, dataset.rows, CallDeps(self.gateway, self.tracker, self.prices))
        # The traces must be stored before evaluate reads them back. Each went out as its root span ended
        # (async trace logging is off, handlers/runtime.py); the flush covers it being turned back on.
        mlflow.flush_trace_async_logging()
        traces = self._fetch_traces(answers)
        scores: list[ModelScore] = []
        eval_run_ids: dict[str, str] = {}
        judge_spend = JudgeSpend()
        for model_id in job.models:
            model_answers = [a for a in answers if a.model_id == model_id]
            score = self._evaluate_model(job, job_ref, model_id, model_answers, traces, judge_spend)
            scores.append(score)
            eval_run_ids[model_id] = score.eval_run_id
        comparison = compare(scores, job.scorers)
        self._publish(job, report, answers, comparison, judge_spend, dataset)
        return EvaluationReport(
            job.job_id,
            experiment_id,
            parent_run_id,
            estimate.cost_usd,
            eval_run_ids=eval_run_ids,
            comparison=comparison,
            rejected_rows=len(dataset.errors),
        )

    # --- steps ---------------------------------------------------------------------------------
    def _load_dataset(self, job: EvaluationJob) -> tuple[Dataset, str]:
        try:
            response = self.s3.get_object(Bucket=job.dataset.bucket, Key=job.dataset.key)
        except self.s3.exceptions.NoSuchKey as exc:
            raise JobRejected(f"dataset {job.dataset.uri} does not exist", job.job_id) from exc
        except self.s3.exceptions.NoSuchBucket as exc:
            raise JobRejected(f"dataset bucket {job.dataset.bucket} does not exist", job.job_id) from exc
        try:
            dataset = parse_dataset(response["Body"].read())
        except JobRejected as exc:
            raise JobRejected(exc.reason, job.job_id) from exc
        if not dataset.rows:
            first = (
                dataset.errors[0] if dataset.errors else {"lineNumber": None, "reason": "the file is empty"}
            )
            raise JobRejected(
                f"dataset {job.dataset.uri} has no usable rows (line {first['lineNumber']}: {first['reason']})",
                job.job_id,
            )
        return dataset, response["ETag"].strip('"')

    def estimate(
        self, job: EvaluationJob, rows: Sequence[DatasetRow], messages: Sequence[WorkItem]
    ) -> EvaluationEstimate:
        """The pre-flight estimate the budget check uses, with this evaluator's price table."""
        return estimate_evaluation(job, rows, messages, self.prices)

    def _stop_for_budget(
        self, job: EvaluationJob, report: EvaluationReport, estimate: EvaluationEstimate, dataset: Dataset
    ) -> EvaluationReport:
        reason = (
            f"estimated cost {estimate.cost_usd:.6f} USD (answers {estimate.answers.cost_usd:.6f}, judge "
            f"{estimate.judge.cost_usd:.6f}) exceeds the job budget {job.budget_usd:.6f} USD; no model was called"
        )
        logger.warning("evaluation %s stopped: %s", job.job_id, reason)
        client = self.tracker.client
        client.set_tag(report.parent_run_id, TAG_ERROR, reason)
        client.set_tag(report.parent_run_id, TAG_BUDGET_EXCEEDED, "true")
        errors = [{"lineNumber": None, "reason": f"job stopped: {reason}"}, *dataset.errors]
        self._record_errors(str(job.job_id), report.parent_run_id, errors)
        self.tracker.finish_job_run(
            report.parent_run_id,
            {
                "estimated_cost_usd": estimate.cost_usd,
                "budget_usd": float(job.budget_usd or 0),
                "rows": len(dataset.rows),
                "answered": 0,
            },
            failed=True,
        )
        return EvaluationReport(
            report.job_id,
            report.experiment_id,
            report.parent_run_id,
            estimate.cost_usd,
            budget_stopped=True,
            rejected_rows=len(dataset.errors),
        )

    def _record_errors(self, job_id: str, parent_run_id: str, errors: list[dict[str, Any]]) -> None:
        self.store.put_errors(job_id, errors)
        self.tracker.log_job_text(
            parent_run_id, "".join(json.dumps(e) + "\n" for e in errors), "errors.jsonl"
        )

    def _fetch_traces(self, answers: Sequence[Answer]) -> dict[str, Trace]:
        ids = [a.trace_id for a in answers if a.trace_id]

        def fetch(trace_id: str) -> tuple[str, Trace | None]:
            for attempt in range(5):  # exported; a short retry covers the server's commit
                trace = _get_trace_or_none(self.tracker, trace_id)
                if trace is not None and trace.data.spans:
                    return trace_id, trace
                time.sleep(0.2 * (attempt + 1))
            return trace_id, None

        with ThreadPoolExecutor(max_workers=settings.RUNNER_ITEM_CONCURRENCY) as pool:
            return {tid: trace for tid, trace in pool.map(fetch, ids) if trace is not None}

    def _evaluate_model(
        self,
        job: EvaluationJob,
        job_ref: JobRef,
        model_id: str,
        answers: Sequence[Answer],
        traces: dict[str, Trace],
        judge_spend: JudgeSpend,
    ) -> ModelScore:
        run_name = f"evaluation · {model_id}"
        run = self.tracker.client.create_run(
            job_ref.experiment_id,
            run_name=run_name,
            tags={
                TAG_KIND: KIND,
                TAG_JOB_ID: job_ref.job_id,
                TAG_ROLE: ROLE_EVALUATION,
                TAG_MODEL_ID: model_id,
                TAG_SOURCE: job_ref.source_uri,
                MLFLOW_PARENT_RUN_ID: job_ref.parent_run_id,
                MLFLOW_RUN_NAME: run_name,
            },
        )
        run_id = run.info.run_id
        model_spend = JudgeSpend()
        scorers = build_scorers(job, gateway=self.gateway, prices=self.prices, spend=model_spend)
        # Rows whose answer left no trace (a call that never got through) cannot carry assessments;
        # they count as unanswered below rather than as scored.
        data = [
            {
                "inputs": a.row.inputs,
                "outputs": a.text,
                "expectations": a.row.expectations,
                "trace": traces[a.trace_id],
            }
            for a in answers
            if a.trace_id in traces
        ]
        metrics: dict[str, float] = {}
        # Fluent API on purpose: mlflow.genai.evaluate logs into the active run (it is not thread-safe;
        # models are evaluated one after the other). A warm process may hold another job's active
        # experiment, and start_run refuses a run outside it: point it at this job's first.
        with _FLUENT_STATE:
            mlflow.set_experiment(experiment_id=job_ref.experiment_id)
            with mlflow.start_run(run_id=run_id):
                if data:
                    result = mlflow.genai.evaluate(data=data, scorers=scorers)
                    metrics = dict(result.metrics)
        latencies = [a.line.latency_ms for a in answers if a.line.latency_ms is not None]
        cost = sum(a.line.cost_usd or 0.0 for a in answers if a.ok)
        extra = {
            "rows": len(answers),
            "answered": sum(a.ok for a in answers),
            "failed": sum(not a.ok for a in answers),
            "scored": len(data),
            "cost_usd": round(cost, 10),
            "mean_latency_ms": sum(latencies) / len(latencies) if latencies else 0.0,
            "p95_latency_ms": percentile(latencies, 95) or 0.0,
            "input_tokens": sum(int(a.line.usage.get("inputTokens", 0)) for a in answers),
            "output_tokens": sum(int(a.line.usage.get("outputTokens", 0)) for a in answers),
            "judge_calls": model_spend.calls,
            "judge_cost_usd": round(model_spend.cost_usd, 10),
        }
        now = int(time.time() * 1000)
        self.tracker.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in extra.items()])
        judge_spend.merge(model_spend)
        return ModelScore(
            model_id=model_id,
            rows=len(answers),
            answered=int(extra["answered"]),
            scores=scores_from_metrics(metrics),
            cost_usd=cost,
            mean_latency_ms=float(extra["mean_latency_ms"]),
            p95_latency_ms=float(extra["p95_latency_ms"]),
            eval_run_id=run_id,
        )

    def _publish(
        self,
        job: EvaluationJob,
        report: EvaluationReport,
        answers: Sequence[Answer],
        comparison: Comparison,
        judge_spend: JudgeSpend,
        dataset: Dataset,
    ) -> None:
        job_id = str(job.job_id)
        client = self.tracker.client
        parent = report.parent_run_id
        self.store.put_results(job_id, [a.line for a in answers])
        document = {
            "jobId": job_id,
            "primaryMetric": comparison.primary_metric,
            "bestModel": comparison.best.model_id,
            "marginPoints": comparison.margin_points(),
            "models": comparison.rows(),
            "evaluationRuns": {m.model_id: m.eval_run_id for m in comparison.ranked},
            "judge": {"calls": judge_spend.calls, "costUsd": round(judge_spend.cost_usd, 10)},
        }
        self.store.put_summary(job_id, document)
        client.log_text(parent, comparison.to_csv(), "comparison.csv")
        client.log_text(parent, comparison.to_markdown(), "comparison.md")
        client.log_text(parent, json.dumps(document, indent=2), COMPARISON_FILE)
        png = comparison.to_png()
        if png is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "comparison.png")
                with open(path, "wb") as handle:
                    handle.write(png)
                client.log_artifact(parent, path)
        client.set_tag(parent, TAG_BEST_MODEL, comparison.best.model_id)
        client.set_tag(parent, TAG_PRIMARY_METRIC, comparison.primary_metric)
        answered = sum(a.ok for a in answers)
        self.tracker.finish_job_run(
            parent,
            {
                "rows": len(dataset.rows),
                "records": len(answers),
                "answered": answered,
                "succeeded": answered,
                "failed": len(answers) - answered,
                "rejected_lines": len(dataset.errors),
                "estimated_cost_usd": report.estimated_cost_usd,
                "cost_usd": round(sum(a.line.cost_usd or 0.0 for a in answers), 10),
                "judge_cost_usd": round(judge_spend.cost_usd, 10),
                "best_margin_points": comparison.margin_points(),
            },
        )
        # Last, so its presence means the job is complete (the CLI and tests wait for it).
        self.s3.put_object(
            Bucket=self.bucket,
            Key=f"{settings.RESULTS_PREFIX}{job_id}/{COMPARISON_FILE}",
            Body=json.dumps(document, indent=2).encode(),
            ContentType="application/json",
        )


def _get_trace_or_none(tracker: RunTracker, trace_id: str) -> Trace | None:
    try:
        return tracker.client.get_trace(trace_id)
    except Exception:  # not committed yet: the caller retries
        return None
