"""Run one work item: call the model inside a trace linked to its own MLflow run, price it, record it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import SpanType
from mlflow.entities.trace_location import MlflowExperimentLocation
from mlflow.tracing.constant import SpanAttributeKey

from bedrock_pipeline.bedrock import BedrockCallError, ModelGateway, ModelResponse, ResponseCache
from bedrock_pipeline.jobs import WorkMessage
from bedrock_pipeline.ledger import item_digest
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.tracking import (
    TAG_ERROR,
    TAG_ITEM_DIGEST,
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
    # Optional: where model answers are kept so a retry after a failure *after* the call only re-logs.
    responses: ResponseCache | None = None


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


def execute(message: WorkMessage, deps: RunnerDeps, *, attempt: int = 1) -> dict[str, Any]:
    """Run one item and return its result line. Raises TransientItemError when a retry can help.

    ``attempt`` > 1 means an earlier attempt at this item may have left a run and a cached answer
    behind (see docs/RELIABILITY.md, "the crash window"): the run is found by its deterministic
    `pipeline.item_digest` tag and reused, and a cached answer is re-logged instead of calling again.
    Any other exception (MLflow unreachable, S3 down) propagates: the item returns to the queue.
    """
    job = message.job
    digest = item_digest(message.item_key)
    cached: ModelResponse | BedrockCallError | None = None
    existing: Any = None
    if attempt > 1:
        if deps.responses is not None:
            cached = deps.responses.get(job.job_id, digest)
        existing = deps.tracker.find_call_run(job.experiment_id, job.job_id, digest)
        logged = existing is not None and (
            (existing.info.status == "FINISHED" and isinstance(cached, ModelResponse))
            or (existing.info.status == "FAILED" and isinstance(cached, BedrockCallError))
        )
        if logged:
            # Everything was logged; only the ledger mark was missing. The run is the record.
            trace_id = existing.data.tags.get(TAG_TRACE_ID)
            return _line_for(message, existing.info.run_id, trace_id, cached, deps.prices)

    tags = {**user_tags(message.tags), **pipeline_tags(message), TAG_ITEM_DIGEST: digest}
    run_name = f"{message.record_id} · {message.model_id}"
    if existing is not None:
        run_id = existing.info.run_id
    else:
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
            outcome = cached if cached is not None else _call_model(message, deps, digest)
            if cached is not None:
                _replay_span(message, cached)
            if isinstance(outcome, ModelResponse):
                span.set_outputs(outcome.as_converse_output())
            else:
                span.set_status("ERROR")
                span.set_outputs({"error": str(outcome)})
    except BedrockCallError as exc:  # transient: _call_model keeps permanent errors as outcomes
        # The retry makes a fresh run; drop this one so the job keeps one run per item.
        deps.tracker.client.delete_run(run_id)
        raise TransientItemError(str(exc)) from exc

    if isinstance(outcome, BedrockCallError):
        deps.tracker.finish_call_run(
            run_id,
            CallRecord(
                params=call_params(message),
                metrics={},
                tags={TAG_ERROR: f"{outcome.code}: {outcome.message}"[:5000], **_trace_tag(trace_id)},
                failed=True,
            ),
        )
        return _line_for(message, run_id, trace_id, outcome, deps.prices)

    metrics = usage_metrics(outcome, deps.prices, message.model_id)
    deps.tracker.finish_call_run(
        run_id,
        CallRecord(params=call_params(message), metrics=metrics, tags=_trace_tag(trace_id), failed=False),
    )
    return _line_for(message, run_id, trace_id, outcome, deps.prices)


def _call_model(message: WorkMessage, deps: RunnerDeps, digest: str) -> ModelResponse | BedrockCallError:
    """One model call; its answer (or permanent error) is cached before anything else can fail."""
    try:
        outcome: ModelResponse | BedrockCallError = deps.gateway.invoke(
            message.model_id, message.request, stream=message.stream
        )
    except BedrockCallError as exc:
        if not exc.permanent:
            raise
        outcome = exc
    if deps.responses is not None:
        deps.responses.put(message.job.job_id, digest, outcome)
    return outcome


def _replay_span(message: WorkMessage, cached: ModelResponse | BedrockCallError) -> None:
    """A cached answer stands in for the model call in the retry's trace (marked as such)."""
    with mlflow.start_span(name="Converse (cached answer)", span_type=SpanType.CHAT_MODEL) as child:
        child.set_inputs({"modelId": message.model_id, **message.request})
        child.set_attribute("pipeline.cached_answer", True)
        if isinstance(cached, ModelResponse):
            usage = cached.usage
            child.set_attribute(
                SpanAttributeKey.CHAT_USAGE,
                {
                    "input_tokens": usage.get("inputTokens", 0),
                    "output_tokens": usage.get("outputTokens", 0),
                    "total_tokens": usage.get("totalTokens", 0),
                },
            )
            child.set_outputs(cached.as_converse_output())
        else:
            child.set_status("ERROR")
            child.set_outputs({"error": str(cached)})


def _line_for(
    message: WorkMessage,
    run_id: str,
    trace_id: str | None,
    outcome: ModelResponse | BedrockCallError,
    prices: PriceTable,
) -> dict[str, Any]:
    if isinstance(outcome, BedrockCallError):
        return _result_line(
            message, run_id, trace_id, error={"errorCode": outcome.code, "errorMessage": outcome.message}
        )
    cost = usage_metrics(outcome, prices, message.model_id).get("cost_usd")
    return _result_line(message, run_id, trace_id, response=outcome, cost_usd=cost)


def failure_line(message: WorkMessage, code: str, text: str) -> dict[str, Any]:
    """A result line for an item that ended without a model answer of its own (gave up retrying)."""
    return {
        "recordId": message.record_id,
        "modelId": message.model_id,
        "lineNumber": message.line_number,
        "modelInput": message.request,
        "error": {"errorCode": code, "errorMessage": text},
        "mlflow": {"runId": None, "traceId": None},
    }


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
