"""Reasoning, guardrails, service tiers and stop reason (issue 18 items 1, 3, 5): the stream collector,
the prompt-file setting, pricing and what a call run records, on scripted clients and in-memory fakes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bedrock_pipeline.call_facts import outcome_metrics, outcome_tags
from bedrock_pipeline.domain import JobRef, ModelResponse, ResultLine, WorkItem
from bedrock_pipeline.estimate import DEFAULT_OUTPUT_TOKENS, estimate_items
from bedrock_pipeline.guardrails import GuardrailPrices, fired_policies, text_units
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import parse_prompt_file
from bedrock_pipeline.tracking import call_metrics
from bedrock_pipeline.use_cases.run_item import CallDeps, RunnerDeps, priced, record_call, run_item
from tests.unit.fakes import MemoryLedger, MemoryRecorder, MemoryResults
from tests.unit.test_bedrock_adapter import METADATA, START, STOP, ScriptedClient, _invoke

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
NOVA_PRO = "amazon.nova-pro-v1:0"
JOB = JobRef(
    job_id="j", experiment_id="1", parent_run_id="p", source_bucket="b", source_key="k", source_etag="e"
)
PROMPT = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def _at(index: int, **delta: Any) -> dict[str, Any]:
    return {"contentBlockDelta": {"contentBlockIndex": index, "delta": delta}}


# --- the stream collector -------------------------------------------------------------------------
def test_streamed_reasoning_text_signature_and_redacted_blocks_are_kept_in_order_with_text() -> None:
    trace = {"guardrail": {"actionReason": "No action."}}
    script = [
        (0, START),
        (0, _at(0, reasoningContent={"text": "Let me "})),
        (0, _at(0, reasoningContent={"text": "think."})),
        (0, _at(0, reasoningContent={"signature": "sig-abc"})),
        (0, {"contentBlockStop": {"contentBlockIndex": 0}}),
        (0, _at(1, reasoningContent={"redactedContent": b"\x00\x01"})),
        (0, _at(1, reasoningContent={"redactedContent": b"\x02"})),
        (0, _at(2, text="The answer.")),
        (0, STOP),
        (0, {"metadata": {**METADATA["metadata"], "trace": trace, "serviceTier": {"type": "flex"}}}),
    ]
    answer = _invoke(ScriptedClient(script))
    assert answer.output_message["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "sig-abc"}}},
        {"reasoningContent": {"redactedContent": base64.b64encode(b"\x00\x01\x02").decode()}},
        {"text": "The answer."},
    ]
    assert answer.text == "The answer."
    output = answer.as_converse_output()
    assert output["trace"] == trace and output["serviceTier"] == {"type": "flex"}
    json.dumps(output)  # a results line can hold it


def test_a_whole_answer_keeps_reasoning_blocks_and_its_redacted_bytes_become_base64() -> None:
    class Client(ScriptedClient):
        def converse(self, **kwargs: Any) -> dict[str, Any]:
            content = [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                {"reasoningContent": {"redactedContent": b"\xff"}},
                {"text": "ok"},
            ]
            return {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
                "metrics": {"latencyMs": 5},
                "performanceConfig": {"latency": "optimized"},
            }

    answer = _invoke(Client([]), stream=False)
    assert answer.output_message["content"][1] == {"reasoningContent": {"redactedContent": "/w=="}}
    assert answer.response_fields == {"performanceConfig": {"latency": "optimized"}}
    again = ModelResponse.from_dict(json.loads(json.dumps(answer.to_dict())))  # the answer cache
    assert again == answer


# --- the prompt file -------------------------------------------------------------------------------
def _parse(*lines: dict[str, Any]) -> Any:
    return parse_prompt_file("".join(json.dumps(line) + "\n" for line in lines).encode())


def test_reasoning_on_a_record_or_the_header_becomes_anthropic_thinking_per_model() -> None:
    parsed = _parse(
        {"job": {"models": [CLAUDE], "reasoning": {"budget_tokens": 2048}}},
        {"id": "a", "prompt": "why?", "max_tokens": 4096},
        {"id": "b", "prompt": "how?", "max_tokens": 8000, "reasoning": {"budget_tokens": 4000}},
    )
    assert not parsed.errors
    budgets = [i.request["additionalModelRequestFields"]["thinking"] for i in parsed.items]
    assert budgets == [{"type": "enabled", "budget_tokens": 2048}, {"type": "enabled", "budget_tokens": 4000}]


def test_header_reasoning_reaches_bedrock_shape_records_unless_they_set_their_own_thinking() -> None:
    own = {"thinking": {"type": "enabled", "budget_tokens": 1500}}
    body = {**PROMPT, "inferenceConfig": {"maxTokens": 4096}}
    parsed = _parse(
        {"job": {"models": [CLAUDE], "reasoning": {"budget_tokens": 2048}}},
        {"recordId": "a", "modelInput": body},
        {"recordId": "b", "modelInput": {**body, "additionalModelRequestFields": own}},
    )
    assert [i.request["additionalModelRequestFields"] for i in parsed.items] == [
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        own,
    ]


def test_a_job_reasoning_setting_fails_only_the_models_that_cannot_take_it_line_by_line() -> None:
    parsed = _parse(
        {"job": {"models": [CLAUDE, NOVA_PRO], "reasoning": {"budget_tokens": 2048}}},
        {"id": "a", "prompt": "q", "max_tokens": 4096},
        {"id": "b", "prompt": "q", "max_tokens": 4096, "model": CLAUDE},
    )
    assert [(e.line_number, "amazon.nova-pro-v1:0" in e.reason) for e in parsed.errors] == [(2, True)]
    assert [(i.record_id, i.model_id) for i in parsed.items] == [("b", CLAUDE)]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"model": NOVA_PRO, "max_tokens": 4096}, "not supported for amazon.nova-pro-v1:0"),
        ({"max_tokens": 4096, "reasoning": {"budget_tokens": 1000}}, "at least 1024"),
        ({"max_tokens": 2048}, "needs max_tokens greater than it"),
        ({}, "max_tokens is None"),
        ({"max_tokens": 4096, "temperature": 0.2}, "temperature or top_p"),
    ],
)
def test_a_reasoning_setting_a_model_cannot_take_is_a_line_error(record: dict[str, Any], reason: str) -> None:
    line = {"id": "x", "prompt": "q", "model": CLAUDE, "reasoning": {"budget_tokens": 2048}, **record}
    parsed = _parse(line)
    assert not parsed.items and reason in parsed.errors[0].reason


# --- pricing and the estimate ---------------------------------------------------------------------
def _item(model: str, request: dict[str, Any]) -> WorkItem:
    return WorkItem(job=JOB, record_id="r", line_number=1, model_id=model, request=request)


def _answer(**fields: Any) -> ModelResponse:
    usage = {"inputTokens": 1000, "outputTokens": 1000, "totalTokens": 2000}
    message = {"role": "assistant", "content": [{"text": "x"}]}
    return ModelResponse(
        message, fields.pop("stop_reason", "end_turn"), usage, 1.0, 1.0, response_fields=fields
    )


def test_a_flex_call_is_priced_at_the_flex_price_and_tagged_with_its_tier() -> None:
    prices = PriceTable.load()
    item = _item(NOVA_PRO, {**PROMPT, "serviceTier": {"type": "flex"}})
    outcome = priced(prices, item, _answer(serviceTier={"type": "flex"}))
    flex = prices.cost(NOVA_PRO, _answer().usage, tier="flex")
    assert outcome.cost == flex and flex is not None
    assert flex.total_usd < prices.cost(NOVA_PRO, _answer().usage).total_usd  # type: ignore[union-attr]
    assert outcome_tags(item, outcome) == {
        "pipeline.stop_reason": "end_turn",
        "pipeline.service_tier": "flex",
    }


def test_a_tier_without_a_published_price_gets_no_cost_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = _item("amazon.nova-lite-v1:0", {**PROMPT, "serviceTier": {"type": "priority"}})
    outcome = priced(PriceTable.load(), item, _answer())
    assert outcome.cost is None and "no priority-tier price" in caplog.text
    assert "cost_usd" not in call_metrics(outcome)


def test_latency_optimized_is_its_own_tier() -> None:
    item = _item(NOVA_PRO, {**PROMPT, "performanceConfig": {"latency": "optimized"}})
    outcome = priced(PriceTable.load(), item, _answer())
    assert outcome.cost == PriceTable.load().cost(NOVA_PRO, _answer().usage, tier="latency_optimized")
    assert outcome_tags(item, outcome)["pipeline.service_tier"] == "latency_optimized"


def test_an_optimized_request_bedrock_served_at_standard_latency_is_priced_standard() -> None:
    item = _item(NOVA_PRO, {**PROMPT, "performanceConfig": {"latency": "optimized"}})
    outcome = priced(PriceTable.load(), item, _answer(performanceConfig={"latency": "standard"}))
    assert outcome.cost == PriceTable.load().cost(NOVA_PRO, _answer().usage)
    assert outcome_tags(item, outcome)["pipeline.service_tier"] == "default"


def test_the_estimate_bounds_output_by_the_thinking_budget_and_prices_the_tier() -> None:
    thinking = {
        **PROMPT,
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 3000}},
    }
    estimate = estimate_items([_item(CLAUDE, thinking)], PriceTable.load())
    assert estimate.max_output_tokens == 3000 + DEFAULT_OUTPUT_TOKENS
    flex = estimate_items([_item(NOVA_PRO, {**PROMPT, "serviceTier": {"type": "flex"}})], PriceTable.load())
    standard = estimate_items([_item(NOVA_PRO, PROMPT)], PriceTable.load())
    assert 0 < flex.cost_usd < standard.cost_usd


# --- guardrails -----------------------------------------------------------------------------------
def _assessment(**policies: Any) -> dict[str, Any]:
    usage = {"contentPolicyUnits": 2, "wordPolicyUnits": 2, "topicPolicyUnits": 0}
    return {**policies, "invocationMetrics": {"guardrailProcessingLatency": 3, "usage": usage}}


TRACE = {
    "guardrail": {
        "inputAssessment": {
            "gr1": _assessment(
                wordPolicy={"customWords": [{"match": "secret", "action": "BLOCKED", "detected": True}]},
                contentPolicy={"filters": [{"type": "HATE", "confidence": "NONE", "action": "NONE"}]},
            )
        },
        "outputAssessments": {
            "gr1": [
                _assessment(
                    sensitiveInformationPolicy={
                        "piiEntities": [{"match": "a@b.c", "type": "EMAIL", "action": "ANONYMIZED"}]
                    }
                )
            ]
        },
    }
}


def test_the_policies_that_acted_and_the_text_units_come_from_the_guardrail_trace() -> None:
    assert fired_policies(TRACE) == ["wordPolicy", "sensitiveInformationPolicy"]
    assert text_units(TRACE) == {"contentPolicyUnits": 4, "wordPolicyUnits": 4, "topicPolicyUnits": 0}
    # 4 content-filter units at 0.15 USD per 1,000; word filters are free.
    assert GuardrailPrices.load().cost(text_units(TRACE)) == pytest.approx(0.0006)
    assert GuardrailPrices.load().cost({"automatedReasoningPolicyUnits": 3}) is None  # no made-up price


def test_an_intervened_guardrail_call_records_action_policies_stop_reason_and_its_cost() -> None:
    item = _item(
        NOVA_PRO, {**PROMPT, "guardrailConfig": {"guardrailIdentifier": "gr1", "guardrailVersion": "1"}}
    )
    outcome = priced(PriceTable.load(), item, _answer(stop_reason="guardrail_intervened", trace=TRACE))
    assert outcome_tags(item, outcome) == {
        "pipeline.stop_reason": "guardrail_intervened",
        "pipeline.service_tier": "default",
        "pipeline.guardrail.action": "INTERVENED",
        "pipeline.guardrail.policies": "wordPolicy,sensitiveInformationPolicy",
    }
    assert outcome_metrics(outcome) == {"guardrail_cost_usd": pytest.approx(0.0006)}
    untraced = priced(PriceTable.load(), item, _answer())  # guardrail trace disabled: nothing made up
    assert outcome_tags(item, untraced)["pipeline.guardrail.action"] == "NONE"
    assert outcome_tags(item, untraced)["pipeline.guardrail.policies"] == ""
    assert "guardrail_cost_usd" not in outcome_metrics(untraced)


# --- the use case ---------------------------------------------------------------------------------
class AnsweringGateway:
    def __init__(self, answer: ModelResponse) -> None:
        self.answer = answer

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse:
        return self.answer


def test_a_reasoning_answer_lands_in_the_results_line_in_bedrocks_shape() -> None:
    content = [
        {"reasoningContent": {"reasoningText": {"text": "step 1", "signature": "s"}}},
        {"text": "42"},
    ]
    usage = {"inputTokens": 3, "outputTokens": 9, "totalTokens": 12}
    answer = ModelResponse({"role": "assistant", "content": content}, "end_turn", usage, 1.0, 1.0)
    item = _item(CLAUDE, PROMPT)
    line = record_call(item, CallDeps(AnsweringGateway(answer), MemoryRecorder(), PriceTable.load()))
    stored = json.loads(json.dumps(line.to_dict()))
    assert stored["modelOutput"]["output"]["message"]["content"] == content
    assert ResultLine.from_dict(stored).outcome.answer.output_message["content"] == content  # type: ignore[union-attr]
    assert "reasoning_tokens" not in call_metrics(line.outcome)  # Converse's usage reports none


def test_run_item_records_the_guardrail_verdict_and_cost_on_the_items_run() -> None:
    recorder, ledger, results = MemoryRecorder(), MemoryLedger(), MemoryResults()
    request = {**PROMPT, "guardrailConfig": {"guardrailIdentifier": "gr1", "guardrailVersion": "1"}}
    item = _item(NOVA_PRO, request)
    ledger.register(JOB, expected=1, rejected_lines=0)
    gateway = AnsweringGateway(_answer(stop_reason="guardrail_intervened", trace=TRACE))
    deps = RunnerDeps(call=CallDeps(gateway, recorder, PriceTable.load()), ledger=ledger, results=results)
    assert run_item(deps, item).succeeded
    (run,) = recorder.call_runs()
    assert run.tags["pipeline.guardrail.action"] == "INTERVENED"
    assert run.tags["pipeline.guardrail.policies"] == "wordPolicy,sensitiveInformationPolicy"
    assert run.tags["pipeline.stop_reason"] == "guardrail_intervened"
    assert run.metrics["guardrail_cost_usd"] == pytest.approx(0.0006)
    assert ledger.counts(JOB.job_id).succeeded == 1
