"""Benchmark Lambda: invoked by the EventBridge Scheduler schedule with ``{"suite": "<id or default>"}``
(stacks/pipeline.py). Runs the suite across the configured models, records the figures in MLflow,
flags regressions against the baseline, and emits ``BenchmarkRegressions`` for the CloudWatch alarm.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import mlflow
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings
from bedrock_pipeline.benchmark import (
    BenchmarkDeps,
    BenchmarkReport,
    RegressionThresholds,
    load_suite_from_bucket,
    run_benchmark,
    thresholds_from_env,
)
from bedrock_pipeline.benchmark import settings as bench
from handlers.runtime import SERVICE, environment, logger, metrics, model_core


class BenchmarkEvent(BaseModel):
    """The schedule's input. `suite` falls back to BENCHMARK_SUITE; `models` to DEFAULT_MODELS."""

    model_config = ConfigDict(extra="ignore")  # Scheduler may add fields; only these matter here

    suite: str | None = Field(default=None, min_length=1)
    models: list[str] | None = Field(default=None, min_length=1)


class BenchmarkEnvironment(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    benchmark_suite: str = Field(default="default", alias=settings.ENV_BENCHMARK_SUITE, min_length=1)


@functools.cache
def benchmark_settings() -> tuple[BenchmarkEnvironment, RegressionThresholds]:
    """Validated once per cold start: a bad suite name or threshold fails with its name, not later."""
    environment()  # the shared contract (bucket, tables, MLflow URI)
    return BenchmarkEnvironment.model_validate(dict(os.environ)), thresholds_from_env(dict(os.environ))


def emit_regression_metrics(report: BenchmarkReport) -> None:
    """One `BenchmarkRegressions` datum per model (dimension `model`) and one across all models.

    EphemeralMetrics: its own metric set, so the per-model dimension never leaks into the handler's
    shared metrics; it honours POWERTOOLS_METRICS_DISABLED like the rest.
    """
    emf = EphemeralMetrics(namespace=metrics.namespace, service=SERVICE)
    for outcome in report.models:
        emf.add_dimension(name=bench.METRIC_DIMENSION_MODEL, value=outcome.model_id)
        emf.add_metric(
            name=bench.METRIC_REGRESSIONS, unit=MetricUnit.Count, value=len(outcome.verdict.regressions)
        )
        emf.flush_metrics()
    emf.add_metric(name=bench.METRIC_REGRESSIONS, unit=MetricUnit.Count, value=report.regressions)
    emf.flush_metrics()


@logger.inject_lambda_context
def handler(event: dict[str, Any] | None, context: LambdaContext) -> dict[str, Any]:
    env, thresholds = benchmark_settings()
    request = BenchmarkEvent.model_validate(event or {})
    core = model_core()
    suite, source = load_suite_from_bucket(
        core.s3,
        core.bucket,
        request.suite or env.benchmark_suite,
        default_models=request.models or core.default_models,
    )
    deps = BenchmarkDeps(
        gateway=core.gateway, tracker=core.recorder, prices=core.prices, s3=core.s3, bucket=core.bucket
    )
    try:
        report = run_benchmark(suite, source, deps, thresholds)
    finally:
        # Each trace went out as its root span ended (runtime.py turns MLflow's async trace queue off),
        # so this returns at once; it matters only if MLFLOW_ENABLE_ASYNC_TRACE_LOGGING is turned back
        # on: nothing may wait in a frozen process.
        mlflow.flush_trace_async_logging()
    emit_regression_metrics(report)
    models = [
        {
            "modelId": o.model_id,
            "mlflowRunId": o.mlflow_run_id,
            "regression": o.verdict.status,
            "regressedMetrics": sorted(r.metric for r in o.verdict.regressions),
        }
        for o in report.models
    ]
    logger.info(
        "benchmark finished",
        extra={
            "benchmark_run_id": report.benchmark_run_id,
            "suite": suite.suite_id,
            "suite_hash": suite.content_hash,
            "regressions": report.regressions,
            "models": models,
        },
    )
    return {
        "benchmarkRunId": report.benchmark_run_id,
        "suite": suite.suite_id,
        "suiteHash": suite.content_hash,
        "experimentId": report.experiment_id,
        "summary": f"s3://{core.bucket}/{report.summary_key}",
        "regressions": report.regressions,
        "models": models,
    }
