"""Run one work item: call the model inside a trace linked to its own MLflow run, price it, record it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import SpanType
from mlflow.entities.trace_location import MlflowExperimentLocation

from bedrock_pipeline.bedrock import BedrockCallError, ModelGateway, ModelResponse
from bedrock_pipeline.jobs import WorkMessage
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.tracking import (
    TAG_ERROR,
    TAG_JOB_ID,
    TAG_KIND,
    TAG_RECORD_ID,
    TAG_SOURCE,
    TAG_SOURCE_ETAG,
    TAG_TRACE_ID,
    CallRecord,
    RunTracker,
    user_tags,
)


class TransientItemError(Exception):
    """The item could not finish now (throttled past retries, service down); the queue retries it."""


@dataclass(frozen=True)
class RunnerDeps:
    gateway: ModelGateway
    tracker: RunTracker
    prices: PriceTable


def pipeline_tags(message: WorkMessage) -> dict[str, str]:
    job = message.job
    return {
        TAG_KIND: job.kind,
        TAG_JOB_ID: job.job_id,
        TAG_RECORD_ID: message.record_id,
        TAG_SOURCE: job.source_uri,
        TAG_SOURCE_ETAG: job.source_etag,
    }


def call_params(message: WorkMessage) -> dict[str, Any]:
    inference = message.request.get("inferenceConfig", {})
    return {
        "model_id": message.model_id,
        "temperature": inference.get("temperature"),
        "top_p": inference.get("topP"),
        "max_tokens": inference.get("maxTokens"),
        "stream": message.stream,
    }


def usage_metrics(response: ModelResponse, prices: PriceTable, model_id: str) -> dict[str, float]:
    usage = response.usage
    metrics: dict[str, float] = {
        "input_tokens": usage.get("inputTokens", 0),
        "output_tokens": usage.get("outputTokens", 0),
        "total_tokens": usage.get("totalTokens", 0),
        "cache_read_input_tokens": usage.get("cacheReadInputTokens", 0),
        "cache_write_input_tokens": usage.get("cacheWriteInputTokens", 0),
        "latency_ms": response.latency_ms,
    }
    cost = prices.cost(model_id, usage)
    if cost is not None:  # unknown models record tokens but no cost, rather than a made-up one
        metrics.update(
            input_cost_usd=cost.input_usd, output_cost_usd=cost.output_usd, cost_usd=cost.total_usd
        )
    return metrics


def execute(message: WorkMessage, deps: RunnerDeps) -> dict[str, Any]:
    """Run one item and return its result line. Raises TransientItemError when a retry can help."""
    job = message.job
    tags = {**user_tags(message.tags), **pipeline_tags(message)}
    run_name = f"{message.record_id} · {message.model_id}"
    run_id = deps.tracker.create_call_run(job.experiment_id, job.parent_run_id, run_name, tags)
    trace_id: str | None = None
    try:
        with mlflow.start_span(
            name=f"record {message.record_id}",
            span_type=SpanType.CHAIN,
            run_id=run_id,
            # Explicit: otherwise the trace lands in the process's active (default) experiment.
            trace_destination=MlflowExperimentLocation(experiment_id=job.experiment_id),
        ) as span:
            trace_id = span.trace_id
            mlflow.update_current_trace(tags=tags)
            span.set_inputs({"modelId": message.model_id, **message.request})
            response = deps.gateway.invoke(message.model_id, message.request, stream=message.stream)
            span.set_outputs(response.as_converse_output())
    except BedrockCallError as exc:
        if not exc.permanent:
            # The retry makes a fresh run; drop this one so the job keeps one run per item.
            deps.tracker.client.delete_run(run_id)
            raise TransientItemError(str(exc)) from exc
        error = {"errorCode": exc.code, "errorMessage": exc.message}
        deps.tracker.finish_call_run(
            run_id,
            CallRecord(
                params=call_params(message),
                metrics={},
                tags={TAG_ERROR: f"{exc.code}: {exc.message}"[:5000], **_trace_tag(trace_id)},
                failed=True,
            ),
        )
        return _result_line(message, run_id, trace_id, error=error)

    metrics = usage_metrics(response, deps.prices, message.model_id)
    deps.tracker.finish_call_run(
        run_id,
        CallRecord(params=call_params(message), metrics=metrics, tags=_trace_tag(trace_id), failed=False),
    )
    return _result_line(message, run_id, trace_id, response=response, cost_usd=metrics.get("cost_usd"))


def _trace_tag(trace_id: str | None) -> dict[str, str]:
    return {TAG_TRACE_ID: trace_id} if trace_id else {}


def _result_line(
    message: WorkMessage,
    run_id: str,
    trace_id: str | None,
    *,
    response: ModelResponse | None = None,
    error: dict[str, str] | None = None,
    cost_usd: float | None = None,
) -> dict[str, Any]:
    """One line of results/<job>/: Bedrock batch-inference output shape, extended."""
    line: dict[str, Any] = {
        "recordId": message.record_id,
        "modelId": message.model_id,
        "lineNumber": message.line_number,
        "modelInput": message.request,
    }
    if response is not None:
        line.update(
            modelOutput=response.as_converse_output(),
            usage=response.usage,
            latencyMs=response.latency_ms,
            costUsd=cost_usd,
        )
    else:
        line["error"] = error
    line["mlflow"] = {"runId": run_id, "traceId": trace_id}
    return line
