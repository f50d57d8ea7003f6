"""Benchmark names and regression thresholds: one typed place, read by the handler, the CLI and tests.

Thresholds can be overridden per deployment through environment variables prefixed
``BENCHMARK_`` (``BENCHMARK_P95_LATENCY_INCREASE=0.3``), validated by pydantic at cold start.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

SUITES_PREFIX: Final = "benchmarks/"  # suites live in the prompt bucket under this prefix
RESULTS_PREFIX: Final = "results/benchmarks/"  # results/benchmarks/<benchmark run id>/summary.json
EXPERIMENT_PREFIX: Final = "benchmarks/"  # one MLflow experiment per suite: benchmarks/<suite id>
DEFAULT_SUITE: Final = "core-v1"  # what the schedule's "default" means
SUITE_ALIASES: Final = {"default": DEFAULT_SUITE}

# Tags on every (benchmark run, model) run, beside the pipeline.* tags.
TAG_SUITE: Final = "benchmark.suite"
TAG_SUITE_HASH: Final = "benchmark.suite_hash"
TAG_RUN_ID: Final = "benchmark.run_id"
TAG_MODEL: Final = "benchmark.model"
TAG_REGRESSION: Final = "benchmark.regression"  # "true" / "false" / "no-baseline"
TAG_REGRESSED_METRICS: Final = "benchmark.regressed_metrics"  # comma-separated metric names
TAG_BASELINE_RUNS: Final = "benchmark.baseline_runs"
TAG_CHARTS: Final = "benchmark.charts"  # "logged" or why not

# Powertools metric for the CloudWatch alarm (dimension "model").
METRIC_REGRESSIONS: Final = "BenchmarkRegressions"
METRIC_DIMENSION_MODEL: Final = "model"


class RegressionThresholds(BaseModel):
    """When a run counts as a regression against the median of its baseline runs.

    Relative increases are fractions (0.5 = 50 % slower); an increase must also exceed the absolute
    floor, so noise around near-zero values (1 ms -> 2 ms) is not a regression. Rates are fractions
    in [0, 1] and compared as absolute drops (0.1 = ten percentage points).
    """

    model_config = ConfigDict(frozen=True)

    baseline_runs: int = Field(default=5, ge=1, description="previous runs the baseline is built from")
    min_baseline_runs: int = Field(default=1, ge=1, description="fewer previous runs: no verdict")
    p50_latency_increase: float = Field(default=0.5, ge=0)
    p95_latency_increase: float = Field(default=0.5, ge=0)
    latency_floor_ms: float = Field(default=50.0, ge=0)
    cost_increase: float = Field(default=0.2, ge=0)
    cost_floor_usd: float = Field(default=1e-6, ge=0)
    success_rate_drop: float = Field(default=0.05, ge=0, le=1)
    quality_drop: float = Field(default=0.1, ge=0, le=1)
    chart_runs: int = Field(default=20, ge=2, description="runs shown on each trend chart")


def thresholds_from_env(environ: dict[str, str]) -> RegressionThresholds:
    """Thresholds with any ``BENCHMARK_<FIELD>`` overrides from the environment (validated)."""
    overrides = {
        name: environ[f"BENCHMARK_{name.upper()}"]
        for name in RegressionThresholds.model_fields
        if f"BENCHMARK_{name.upper()}" in environ
    }
    return RegressionThresholds.model_validate(overrides)


def resolve_suite_id(name: str) -> str:
    """The schedule may say "default"; everything else is a suite id (a file stem in batch_prompts/benchmarks)."""
    return SUITE_ALIASES.get(name, name)
