"""The names a call run records are the documented ones (README "MLflow names", run_names.py)."""

from __future__ import annotations

import re
from pathlib import Path

from bedrock_pipeline.domain import CallError, CallOutcome, JobRef, ModelResponse, WorkItem
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.run_names import METRIC_NAMES, PARAM_NAMES
from bedrock_pipeline.tracking import call_metrics, call_params, call_tags

JOB = JobRef(
    job_id="j",
    experiment_id="1",
    parent_run_id="p",
    source_bucket="b",
    source_key="incoming/x",
    source_etag="e",
)
ITEM = WorkItem(
    job=JOB,
    record_id="r",
    line_number=1,
    model_id="amazon.nova-lite-v1:0",
    request={"messages": [], "inferenceConfig": {"maxTokens": 5, "temperature": 0.1, "topP": 0.9}},
    tags={"team": "a", "pipeline.kind": "spoofed", "mlflow.user": "spoofed"},
)


USAGE = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}
README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_priced_streamed_answer_records_every_documented_metric_and_param() -> None:
    usage = {**USAGE, "reasoningTokens": 3}  # when a model reports them
    answer = ModelResponse({"content": []}, "end_turn", usage, 10.0, 11.0, time_to_first_token_ms=4.0)
    cost = PriceTable.load().cost(ITEM.model_id, USAGE)
    outcome = CallOutcome(answer=answer, cost=cost, guardrail_cost_usd=0.001)
    metrics = call_metrics(outcome)
    assert tuple(metrics) == METRIC_NAMES
    assert metrics["time_to_first_token_ms"] == 4.0
    assert tuple(call_params(ITEM)) == PARAM_NAMES


def test_a_whole_answer_records_no_time_to_first_token() -> None:
    answer = ModelResponse({"content": []}, "end_turn", USAGE, 10.0, 11.0)
    outcome = CallOutcome(answer=answer, cost=PriceTable.load().cost(ITEM.model_id, USAGE))
    optional = ("time_to_first_token_ms", "reasoning_tokens", "guardrail_cost_usd")
    assert tuple(call_metrics(outcome)) == tuple(n for n in METRIC_NAMES if n not in optional)


def test_the_readme_lists_the_metric_and_param_names_in_order() -> None:
    rows = {
        line.split("|")[1].strip(): line.split("|")[2]
        for line in README.read_text().splitlines()
        if line.startswith("| params |") or line.startswith("| metrics |")
    }
    assert tuple(re.findall(r"`([a-z_]+)`", rows["metrics"])) == METRIC_NAMES
    assert tuple(re.findall(r"`([a-z_]+)`", rows["params"])) == PARAM_NAMES


def test_a_failed_call_records_no_metrics_and_a_record_cannot_spoof_pipeline_tags() -> None:
    assert call_metrics(CallOutcome(error=CallError("ValidationException", "no"))) == {}
    tags = call_tags(ITEM)
    assert tags["team"] == "a" and tags["pipeline.kind"] == "batch" and "mlflow.user" not in tags
