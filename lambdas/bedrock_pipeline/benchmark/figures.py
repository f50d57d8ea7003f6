"""The figures of one model on one suite run, computed from the pipeline's result lines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Final

from bedrock_pipeline.benchmark.suite import Expectation
from bedrock_pipeline.domain import ResultLine
from bedrock_pipeline.results import percentile

# The metrics a baseline compares and a trend chart shows; names are MLflow metric names.
SUCCESS_RATE: Final = "success_rate"
QUALITY_SCORE: Final = "quality_score"
P50_LATENCY: Final = "p50_latency_ms"
P95_LATENCY: Final = "p95_latency_ms"
COST_PER_100: Final = "cost_per_100_prompts_usd"
TOTAL_TOKENS: Final = "total_tokens"
TRACKED_METRICS: Final = (SUCCESS_RATE, QUALITY_SCORE, P50_LATENCY, P95_LATENCY, COST_PER_100, TOTAL_TOKENS)


@dataclass(frozen=True)
class ModelFigures:
    model_id: str
    prompts: int
    succeeded: int
    failed: int
    success_rate: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float | None  # None when the model has no price
    cost_per_100_prompts_usd: float | None
    graded: int  # prompts with an expectation
    passed: int
    quality_score: float | None  # passed / graded; a failed call counts as a wrong answer

    def metrics(self) -> dict[str, float]:
        """The numeric figures as MLflow metrics (missing ones are left out, never logged as 0)."""
        return {k: float(v) for k, v in asdict(self).items() if k != "model_id" and v is not None}


def compute_figures(
    model_id: str, lines: Iterable[ResultLine], expectations: Mapping[str, Expectation]
) -> ModelFigures:
    lines = list(lines)
    ok = [line for line in lines if line.succeeded]
    latencies = [line.latency_ms for line in ok if line.latency_ms is not None]
    input_tokens = sum(int(line.usage.get("inputTokens", 0)) for line in ok)
    output_tokens = sum(int(line.usage.get("outputTokens", 0)) for line in ok)
    costs = [line.cost_usd for line in ok]
    priced = bool(ok) and all(c is not None for c in costs)
    cost = round(sum(c or 0.0 for c in costs), 10) if priced else None
    graded = [line for line in lines if line.record_id in expectations]
    passed = sum(1 for line in graded if line.succeeded and expectations[line.record_id].passes(line.text))
    prompts = len(lines)
    return ModelFigures(
        model_id=model_id,
        prompts=prompts,
        succeeded=len(ok),
        failed=prompts - len(ok),
        success_rate=len(ok) / prompts if prompts else 0.0,
        p50_latency_ms=percentile(latencies, 50),
        p95_latency_ms=percentile(latencies, 95),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        cost_usd=cost,
        # Per 100 answered prompts: failed calls cost nothing, so dividing by all prompts would make a
        # flakier model look cheaper.
        cost_per_100_prompts_usd=None if cost is None else round(cost * 100 / len(ok), 10),
        graded=len(graded),
        passed=passed,
        quality_score=passed / len(graded) if graded else None,
    )
