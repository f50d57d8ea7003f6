"""Baseline and regression rules: a run against the median of the previous runs of the same suite
(same content hash) and model. Pure functions, so the rules are unit- and property-tested alone."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bedrock_pipeline.benchmark.figures import (
    COST_PER_100,
    P50_LATENCY,
    P95_LATENCY,
    QUALITY_SCORE,
    SUCCESS_RATE,
)
from bedrock_pipeline.benchmark.settings import RegressionThresholds

Direction = Literal["higher_is_worse", "lower_is_worse"]
DIRECTIONS: dict[str, Direction] = {
    P50_LATENCY: "higher_is_worse",
    P95_LATENCY: "higher_is_worse",
    COST_PER_100: "higher_is_worse",
    SUCCESS_RATE: "lower_is_worse",
    QUALITY_SCORE: "lower_is_worse",
}
_EPSILON = 1e-9


@dataclass(frozen=True)
class Regression:
    metric: str
    current: float
    baseline: float
    limit: float  # the value past which the current figure counts as a regression
    reason: str


@dataclass(frozen=True)
class Verdict:
    baseline_runs: int
    baseline: dict[str, float]
    regressions: tuple[Regression, ...]

    @property
    def has_baseline(self) -> bool:
        return bool(self.baseline)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def status(self) -> str:
        if not self.has_baseline:
            return "no-baseline"
        return "true" if self.regressed else "false"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "baselineRuns": self.baseline_runs,
            "baseline": self.baseline,
            "regressions": [asdict(r) for r in self.regressions],
        }


def baseline_of(history: Sequence[Mapping[str, float]], thresholds: RegressionThresholds) -> dict[str, float]:
    """Median per metric over the most recent `baseline_runs` runs (newest first); the median so one
    odd run neither hides nor fakes a regression. Empty when there are too few runs."""
    recent = list(history)[: thresholds.baseline_runs]
    if len(recent) < thresholds.min_baseline_runs:
        return {}
    baseline: dict[str, float] = {}
    for metric in DIRECTIONS:
        values = [float(run[metric]) for run in recent if run.get(metric) is not None]
        if values:
            baseline[metric] = float(statistics.median(values))
    return baseline


def limit_for(metric: str, baseline: float, thresholds: RegressionThresholds) -> float:
    """The worst value still accepted for a metric, given its baseline."""
    if metric in (P50_LATENCY, P95_LATENCY):
        relative = (
            thresholds.p50_latency_increase if metric == P50_LATENCY else thresholds.p95_latency_increase
        )
        return baseline + max(baseline * relative, thresholds.latency_floor_ms)
    if metric == COST_PER_100:
        return baseline + max(baseline * thresholds.cost_increase, thresholds.cost_floor_usd)
    if metric == SUCCESS_RATE:
        return baseline - thresholds.success_rate_drop
    if metric == QUALITY_SCORE:
        return baseline - thresholds.quality_drop
    raise KeyError(metric)


def detect(
    current: Mapping[str, float | None],
    history: Sequence[Mapping[str, float]],
    thresholds: RegressionThresholds,
) -> Verdict:
    """Compare a run's figures with the baseline of its previous runs (newest first)."""
    recent = list(history)[: thresholds.baseline_runs]
    baseline = baseline_of(recent, thresholds)
    regressions = []
    for metric, base in baseline.items():
        value = current.get(metric)
        if value is None:
            continue
        limit = limit_for(metric, base, thresholds)
        # A hair of tolerance: a value exactly at the limit (up to float rounding) is accepted.
        if DIRECTIONS[metric] == "higher_is_worse" and value > limit + _EPSILON:
            reason = f"{metric} {value:.6g} > {limit:.6g} (baseline {base:.6g})"
        elif DIRECTIONS[metric] == "lower_is_worse" and value < limit - _EPSILON:
            reason = f"{metric} {value:.6g} < {limit:.6g} (baseline {base:.6g})"
        else:
            continue
        regressions.append(Regression(metric, float(value), base, limit, reason))
    return Verdict(
        baseline_runs=len(recent) if baseline else 0, baseline=baseline, regressions=tuple(regressions)
    )
