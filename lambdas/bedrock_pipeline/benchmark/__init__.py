"""Scheduled benchmarks: versioned suites, per-model figures, baselines, regressions, trend charts."""

from bedrock_pipeline.benchmark.figures import TRACKED_METRICS, ModelFigures, compute_figures
from bedrock_pipeline.benchmark.regression import Regression, Verdict, baseline_of, detect
from bedrock_pipeline.benchmark.service import (
    BenchmarkDeps,
    BenchmarkReport,
    ModelOutcome,
    SuiteSource,
    load_suite_from_bucket,
    run_benchmark,
    suite_key,
)
from bedrock_pipeline.benchmark.settings import RegressionThresholds, thresholds_from_env
from bedrock_pipeline.benchmark.suite import Expectation, Suite, SuiteError, load_suite

__all__ = [
    "TRACKED_METRICS",
    "BenchmarkDeps",
    "BenchmarkReport",
    "Expectation",
    "ModelFigures",
    "ModelOutcome",
    "Regression",
    "RegressionThresholds",
    "Suite",
    "SuiteError",
    "SuiteSource",
    "Verdict",
    "baseline_of",
    "compute_figures",
    "detect",
    "load_suite",
    "load_suite_from_bucket",
    "run_benchmark",
    "suite_key",
    "thresholds_from_env",
]
