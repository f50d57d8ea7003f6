"""Per-model summary of result lines."""

import json

import pytest

from bedrock_pipeline.domain import CallError, CallOutcome, ModelResponse, ResultLine, RunRef
from bedrock_pipeline.pricing import Cost
from bedrock_pipeline.results import format_table, percentile, summarize


def _ok(model: str, latency: float, cost: float, tokens_in: int = 10, tokens_out: int = 5) -> ResultLine:
    usage = {"inputTokens": tokens_in, "outputTokens": tokens_out}
    answer = ModelResponse({"role": "assistant", "content": []}, "end_turn", usage, latency, latency)
    return ResultLine("r", model, 1, {}, CallOutcome(answer=answer, cost=Cost.of_total(cost)))


def _failed(model: str) -> ResultLine:
    return ResultLine("r", model, 1, {}, CallOutcome(error=CallError("ValidationException", "bad")))


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_given_successes_and_failures_when_summarized_then_each_model_gets_its_own_row():
    lines = [
        _ok("a", 100, 0.001),
        _ok("a", 300, 0.002),
        _failed("a"),
        _ok("b", 50, 0.0005, tokens_in=7, tokens_out=3),
    ]
    rows = {r.model_id: r for r in summarize(lines)}
    assert (rows["a"].records, rows["a"].succeeded, rows["a"].failed) == (3, 2, 1)
    assert (rows["a"].input_tokens, rows["a"].output_tokens) == (20, 10)
    assert abs(rows["a"].cost_usd - 0.003) < 1e-12
    assert rows["a"].p50_latency_ms == 100 and rows["a"].p95_latency_ms == 300
    assert (rows["b"].records, rows["b"].failed, rows["b"].input_tokens) == (1, 0, 7)


def test_table_lists_every_model_with_its_cost():
    table = format_table(summarize([_ok("model-x", 10, 0.25)]))
    assert "model-x" in table and "0.250000" in table and "p95 ms" in table.splitlines()[0]


# --- the results.jsonl line: its shape is a contract (README "Results") -----------------------------------
def test_a_fresh_line_has_bedrock_batch_output_keys_and_reads_back_as_itself() -> None:
    usage = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}
    answer = ModelResponse({"role": "assistant", "content": [{"text": "4"}]}, "end_turn", usage, 120.0, 125.0)
    line = ResultLine(
        "q1",
        "m",
        3,
        {"messages": []},
        CallOutcome(answer=answer, cost=Cost(1e-5, 2e-5, 0.0, 0.0, 3e-5)),
        RunRef("r", "t"),
    )
    written = line.to_dict()
    assert list(written) == [
        "recordId",
        "modelId",
        "lineNumber",
        "modelInput",
        "modelOutput",
        "usage",
        "latencyMs",
        "costUsd",
        "mlflow",
    ]
    assert written["modelOutput"] == {
        "output": {"message": {"role": "assistant", "content": [{"text": "4"}]}},
        "stopReason": "end_turn",
        "usage": usage,
        "metrics": {"latencyMs": 120.0},
    }
    assert written["costUsd"] == 3e-5 and written["mlflow"] == {"runId": "r", "traceId": "t"}
    read = ResultLine.from_dict(json.loads(json.dumps(written)))
    assert (read.text, read.usage, read.latency_ms, read.cost_usd) == ("4", usage, 120.0, 3e-5)
    assert read.to_dict() == written


@pytest.mark.parametrize(
    "stored",
    [
        {
            "recordId": "q2",
            "modelId": "m",
            "lineNumber": 4,
            "modelInput": {"messages": []},
            "error": {"errorCode": "ValidationException", "errorMessage": "bad"},
            "mlflow": {"runId": "r", "traceId": "t"},
        },
        {
            "recordId": "q3",
            "modelId": "m",
            "lineNumber": 5,
            "modelInput": {},
            "error": {"errorCode": "RetriesExhausted", "errorMessage": "gave up after 5 attempts: boom"},
            "mlflow": {"runId": None, "traceId": None},
        },
        {  # a key a later version may add survives the merge
            "recordId": "q4",
            "modelId": "m",
            "lineNumber": 6,
            "modelInput": {},
            "modelOutput": {"output": {"message": {"content": []}}, "stopReason": "end_turn"},
            "usage": {"inputTokens": 1, "outputTokens": 1},
            "latencyMs": 5.0,
            "costUsd": None,
            "mlflow": {"runId": "r", "traceId": None},
            "reasoning": {"text": "..."},
        },
    ],
)
def test_a_stored_line_is_merged_into_results_exactly_as_it_was_written(stored: dict) -> None:
    read = ResultLine.from_dict(stored)
    assert read.to_dict() == stored
    assert read.succeeded == ("error" not in stored)


def test_a_profile_line_is_priced_on_demand_as_its_resolved_model_and_keeps_that_model() -> None:
    from bedrock_pipeline.domain import CallOutcome, ModelResponse, ResultLine
    from bedrock_pipeline.pricing import PriceTable

    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    usage = {"inputTokens": 1_000_000, "outputTokens": 0}
    answer = ModelResponse({"role": "assistant", "content": []}, "end_turn", usage, 1.0, 1.0)
    line = ResultLine(
        "r1", profile, 1, {}, CallOutcome(answer=answer), resolved_model_id="amazon.nova-lite-v1:0"
    )
    stored = line.to_dict()
    assert stored["resolvedModelId"] == "amazon.nova-lite-v1:0"
    (row,) = summarize([ResultLine.from_dict(stored)], PriceTable.load())
    assert row.on_demand_cost_usd == PriceTable.load().cost("amazon.nova-lite-v1:0", usage).total_usd
