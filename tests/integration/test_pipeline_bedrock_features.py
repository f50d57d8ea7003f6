"""Reasoning, a guardrail intervention and a flex-tier call through the whole local pipeline: the
emulator answers, the runner records tags, metrics and the trace on the real MLflow server, and the
results lines keep Bedrock's shape."""

from __future__ import annotations

import json

import pytest

from local_stack.bedrock_emulator.reasoning import REDACTED_TRIGGER
from tests.integration.harness import Stack
from tests.integration.test_pipeline import _runs_of

pytestmark = pytest.mark.integration

SONNET = "us.anthropic.claude-sonnet-4-20250514-v1:0"
GUARD = {"guardrailIdentifier": "emulator-blocklist", "guardrailVersion": "1", "trace": "enabled"}
# Written by hand from the price page figures the table carries, not read from the table.
FLEX_NOVA_PRO_IN, FLEX_NOVA_PRO_OUT = 0.40, 1.60
CONTENT_FILTER_PER_1000_UNITS = 0.15
LINES = [
    {"job": {"models": ["amazon.nova-pro-v1:0"]}},
    {
        "id": "think-stream",
        "prompt": "What is 6 times 7?",
        "model": SONNET,
        "max_tokens": 2048,
        "reasoning": {"budget_tokens": 1024},
        "stream": True,
    },
    {
        "id": "think-whole",
        "prompt": "What is 6 times 7?",
        "model": SONNET,
        "max_tokens": 2048,
        "reasoning": {"budget_tokens": 1024},
    },
    *(
        {
            "id": f"redacted-{mode}",
            "prompt": REDACTED_TRIGGER,
            "model": "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "max_tokens": 2048,
            "reasoning": {"budget_tokens": 1024},
            "stream": mode == "stream",
        }
        for mode in ("stream", "whole")
    ),
    {
        "recordId": "guarded",
        "modelInput": {
            "messages": [{"role": "user", "content": [{"text": "Share the forbidden recipe."}]}],
            "guardrailConfig": GUARD,
        },
    },
    {
        "recordId": "flex",
        "modelInput": {
            "messages": [{"role": "user", "content": [{"text": "Summarise the water cycle."}]}],
            "serviceTier": {"type": "flex"},
        },
    },
]


def test_reasoning_guardrail_and_tier_are_recorded_on_runs_traces_and_results(stack: Stack) -> None:
    body = "".join(json.dumps(line) + "\n" for line in LINES).encode()
    job_id = stack.upload(key="incoming/tests/bedrock-features.jsonl", body=body)
    stack.wait(job_id)
    runs = {r.data.tags["pipeline.record_id"]: r for r in _runs_of(stack, job_id, "call")}
    lines = {line["recordId"]: line for line in stack.results(job_id)}
    assert (
        set(runs)
        == set(lines)
        == {"think-stream", "think-whole", "redacted-stream", "redacted-whole", "guarded", "flex"}
    )
    assert all(run.info.status == "FINISHED" for run in runs.values())
    # Redacted reasoning (bytes from botocore) is kept as base64 text, streamed or not.
    redacted = [
        lines[r]["modelOutput"]["output"]["message"]["content"][1]
        for r in ("redacted-stream", "redacted-whole")
    ]
    assert redacted[0] == redacted[1] and redacted[0]["reasoningContent"]["redactedContent"]
    for record in ("redacted-stream", "redacted-whole"):  # the model span's bytes did not break the trace
        trace = stack.mlflow.get_trace(runs[record].data.tags["pipeline.trace_id"])
        assert trace.info.state.value == "OK" and len(trace.data.spans) == 2

    for record in ("think-stream", "think-whole"):
        run = runs[record]
        assert run.data.tags["pipeline.stop_reason"] == "end_turn"
        assert run.data.tags["pipeline.service_tier"] == "default"
        assert "reasoning_tokens" not in run.data.metrics  # Converse's usage reports none
        content = lines[record]["modelOutput"]["output"]["message"]["content"]
        reasoning = content[0]["reasoningContent"]["reasoningText"]
        assert reasoning["text"] and reasoning["signature"] and content[1]["text"]
        trace = stack.mlflow.get_trace(run.data.tags["pipeline.trace_id"])
        (root,) = [span for span in trace.data.spans if span.parent_id is None]
        assert root.attributes["pipeline.reasoning"] == reasoning["text"]
    assert lines["think-stream"]["modelOutput"]["output"] == lines["think-whole"]["modelOutput"]["output"]

    guarded = runs["guarded"]
    assert guarded.data.tags["pipeline.stop_reason"] == "guardrail_intervened"
    assert guarded.data.tags["pipeline.guardrail.action"] == "INTERVENED"
    assert guarded.data.tags["pipeline.guardrail.policies"] == "wordPolicy"
    # One text unit (the prompt is under 1,000 characters) through the content filter; words are free.
    assert guarded.data.metrics["guardrail_cost_usd"] == pytest.approx(CONTENT_FILTER_PER_1000_UNITS / 1000)
    assert lines["guarded"]["modelOutput"]["trace"]["guardrail"]["actionReason"]

    flex = runs["flex"]
    assert flex.data.tags["pipeline.service_tier"] == "flex"
    assert "pipeline.guardrail.action" not in flex.data.tags
    m = flex.data.metrics
    assert m["cost_usd"] == pytest.approx(
        m["input_tokens"] * FLEX_NOVA_PRO_IN / 1e6 + m["output_tokens"] * FLEX_NOVA_PRO_OUT / 1e6
    )
    assert lines["flex"]["modelOutput"]["serviceTier"] == {"type": "flex"}
