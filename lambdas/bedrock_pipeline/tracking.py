"""MLflow adapter (the run recorder): experiments, one parent run per job, one child run and trace per
(record, model).

Uses MlflowClient rather than the fluent API: it is thread-safe for concurrent items and costs three
tracking requests per call (create_run, log_batch, update_run) instead of the fluent API's six. The
call's trace is opened with the fluent tracing API (`mlflow.start_span`), linked to the call's run;
`mlflow.bedrock.autolog()` adds the model span with its token usage inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag, SpanType
from mlflow.entities.trace_location import MlflowExperimentLocation
from mlflow.exceptions import MlflowException
from mlflow.tracing.constant import SpanAttributeKey
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from bedrock_pipeline.call_facts import SPAN_ATTRIBUTE_REASONING, outcome_metrics, outcome_tags, reasoning_of
from bedrock_pipeline.domain import CallOutcome, WorkItem
from bedrock_pipeline.ports import CallRun
from bedrock_pipeline.run_names import (
    TAG_ERROR,
    TAG_EXECUTION,
    TAG_INFERENCE_PROFILE,
    TAG_ITEM_DIGEST,
    TAG_JOB_ID,
    TAG_KIND,
    TAG_RECORD_ID,
    TAG_RESOLVED_MODEL_ID,
    TAG_ROLE,
    TAG_SOURCE,
    TAG_SOURCE_ETAG,
    TAG_TRACE_ID,
    inference_profile_of,
    user_tags,
)


def call_tags(item: WorkItem) -> dict[str, str]:
    """A call run's (and its trace's) tags: the record's own, then the pipeline's."""
    job = item.bound_job
    return {
        **user_tags(item.tags),
        TAG_KIND: job.kind,
        TAG_JOB_ID: job.job_id,
        TAG_RECORD_ID: item.record_id,
        TAG_SOURCE: job.source_uri,
        TAG_SOURCE_ETAG: job.source_etag,
        TAG_ITEM_DIGEST: item.digest,
        **_profile_tags(item),
        TAG_EXECUTION: item.execution,
    }


def _profile_tags(item: WorkItem) -> dict[str, str]:
    tags = {}
    if profile := inference_profile_of(item.model_id):
        tags[TAG_INFERENCE_PROFILE] = profile
    if item.resolved_model_id:
        tags[TAG_RESOLVED_MODEL_ID] = item.resolved_model_id
    return tags


def call_params(item: WorkItem) -> dict[str, Any]:
    inference = item.request.get("inferenceConfig", {})
    return {
        "model_id": item.model_id,
        "temperature": inference.get("temperature"),
        "top_p": inference.get("topP"),
        "max_tokens": inference.get("maxTokens"),
        "stream": item.stream,
    }


def call_metrics(outcome: CallOutcome) -> dict[str, float]:
    """Tokens from Bedrock's usage, latency (and time to first token when streamed), and the cost priced
    once for the outcome (METRIC_NAMES, in that order)."""
    answer = outcome.answer
    if answer is None:
        return {}
    usage = answer.usage
    metrics: dict[str, float] = {
        "input_tokens": usage.get("inputTokens", 0),
        "output_tokens": usage.get("outputTokens", 0),
        "total_tokens": usage.get("totalTokens", 0),
        "cache_read_input_tokens": usage.get("cacheReadInputTokens", 0),
        "cache_write_input_tokens": usage.get("cacheWriteInputTokens", 0),
    }
    if answer.latency_ms is not None:  # a batch record has none (Bedrock measures the job, not records)
        metrics["latency_ms"] = answer.latency_ms
    if answer.time_to_first_token_ms is not None:  # streamed calls only: a whole answer has no "first"
        metrics["time_to_first_token_ms"] = answer.time_to_first_token_ms
    if outcome.cost is not None:  # unknown models record tokens but no cost, rather than a made-up one
        metrics.update(
            input_cost_usd=outcome.cost.input_usd,
            output_cost_usd=outcome.cost.output_usd,
            cost_usd=outcome.cost.total_usd,
        )
    metrics.update(outcome_metrics(outcome))  # reasoning_tokens, guardrail_cost_usd when known
    return metrics


class RunTracker:
    def __init__(self, client: MlflowClient | None = None) -> None:
        self.client = client or MlflowClient()

    def ensure_experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by a concurrent ingest
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def find_job_run(self, experiment_id: str, job_id: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_JOB_ID}` = '{job_id}' and tags.`{TAG_ROLE}` = 'job'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_job_run(self, experiment_id: str, job_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        """The job's parent run; the same job (a redelivered event) gets the same run back."""
        existing = self.find_job_run(experiment_id, job_id)
        if existing:
            return existing
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, TAG_JOB_ID: job_id, TAG_ROLE: "job"},
        )
        return run.info.run_id

    def note_job_error(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, TAG_ERROR, reason[:5000])

    def finish_job_run(self, run_id: str, metrics: Mapping[str, float], *, failed: bool = False) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_job_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    # --- one call: its run and its trace ----------------------------------------------------------
    def start_call_run(self, item: WorkItem) -> str:
        job = item.bound_job
        run_name = f"{item.record_id} · {item.model_id}"
        tags = {
            **call_tags(item),
            MLFLOW_PARENT_RUN_ID: job.parent_run_id,
            MLFLOW_RUN_NAME: run_name,
            TAG_ROLE: "call",
        }
        return str(self.client.create_run(job.experiment_id, run_name=run_name, tags=tags).info.run_id)

    def trace_call(
        self, item: WorkItem, run_id: str, call: Callable[[], CallOutcome], *, replayed: bool
    ) -> tuple[CallOutcome, str | None]:
        """``call`` inside the call's trace, linked to its run (the RunRecorder contract in ports.py)."""
        with mlflow.start_span(
            name=f"record {item.record_id}",
            span_type=SpanType.CHAIN,
            run_id=run_id,
            # Explicit: otherwise the trace lands in the process's active (default) experiment.
            trace_destination=MlflowExperimentLocation(experiment_id=item.bound_job.experiment_id),
        ) as span:
            mlflow.update_current_trace(tags=call_tags(item))
            span.set_inputs({"modelId": item.model_id, **item.request})
            outcome = call()
            if replayed:
                _replay_span(item, outcome)
            if outcome.answer is not None:
                if reasoning := reasoning_of(outcome):
                    span.set_attribute(SPAN_ATTRIBUTE_REASONING, reasoning)
                span.set_outputs(outcome.answer.as_converse_output())
            else:
                span.set_status("ERROR")
                span.set_outputs({"error": _error_text(outcome)})
            return outcome, span.trace_id

    def finish_call_run(
        self, run_id: str, item: WorkItem, outcome: CallOutcome, trace_id: str | None
    ) -> None:
        tags = {TAG_TRACE_ID: trace_id} if trace_id else {}
        tags.update(outcome_tags(item, outcome))  # stop reason, service tier, guardrail
        if outcome.error is not None:
            tags[TAG_ERROR] = _error_text(outcome)[:5000]
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in call_metrics(outcome).items()],
            params=[Param(k, str(v)) for k, v in call_params(item).items() if v is not None],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, "FINISHED" if outcome.succeeded else "FAILED")

    def discard_call_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def fail_call_run(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, TAG_ERROR, reason[:5000])
        self.client.set_terminated(run_id, "FAILED")

    def find_call_run(self, item: WorkItem) -> CallRun | None:
        """The (not deleted) call run an earlier attempt at this item created, if any."""
        job = item.bound_job
        runs = self.client.search_runs(
            [job.experiment_id],
            filter_string=(
                f"tags.`{TAG_JOB_ID}` = '{job.job_id}' and tags.`{TAG_ITEM_DIGEST}` = '{item.digest}' "
                f"and tags.`{TAG_ROLE}` = 'call'"
            ),
            max_results=10,
            order_by=["attributes.start_time ASC"],
        )
        for extra in runs[1:]:  # never expected; if it happens, keep one run per item
            self.client.delete_run(extra.info.run_id)
        if not runs:
            return None
        return CallRun(runs[0].info.run_id, runs[0].info.status, runs[0].data.tags.get(TAG_TRACE_ID))


def _error_text(outcome: CallOutcome) -> str:
    return f"{outcome.error.code}: {outcome.error.message}" if outcome.error is not None else ""


def _replay_span(item: WorkItem, outcome: CallOutcome) -> None:
    """A cached answer stands in for the model call in the retry's trace (marked as such)."""
    with mlflow.start_span(name="Converse (cached answer)", span_type=SpanType.CHAT_MODEL) as child:
        child.set_inputs({"modelId": item.model_id, **item.request})
        child.set_attribute("pipeline.cached_answer", True)
        if outcome.answer is not None:
            usage = outcome.answer.usage
            child.set_attribute(
                SpanAttributeKey.CHAT_USAGE,
                {
                    "input_tokens": usage.get("inputTokens", 0),
                    "output_tokens": usage.get("outputTokens", 0),
                    "total_tokens": usage.get("totalTokens", 0),
                },
            )
            child.set_outputs(outcome.answer.as_converse_output())
        else:
            child.set_status("ERROR")
            child.set_outputs({"error": _error_text(outcome)})
