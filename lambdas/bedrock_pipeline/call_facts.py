"""What a call's answer adds to its run beyond tokens, latency and cost (README "MLflow names"):
stop reason, guardrail action and policies, service tier as tags; reasoning tokens and guardrail cost
as metrics. Plain Python over the outcome, so the MLflow adapter only logs what this returns.
"""

from __future__ import annotations

from bedrock_pipeline import guardrails
from bedrock_pipeline.domain import CallOutcome, WorkItem
from bedrock_pipeline.reasoning import reasoning_text
from bedrock_pipeline.service_tiers import service_tier

TAG_STOP_REASON = "pipeline.stop_reason"
TAG_GUARDRAIL_ACTION = "pipeline.guardrail.action"
TAG_GUARDRAIL_POLICIES = "pipeline.guardrail.policies"
TAG_SERVICE_TIER = "pipeline.service_tier"
# The answer's readable reasoning on the call's trace span (MLflow's trace view, Attributes).
SPAN_ATTRIBUTE_REASONING = "pipeline.reasoning"


def outcome_tags(item: WorkItem, outcome: CallOutcome) -> dict[str, str]:
    answer = outcome.answer
    if answer is None:
        return {}
    tags = {
        TAG_STOP_REASON: answer.stop_reason,
        TAG_SERVICE_TIER: service_tier(item.request, answer.response_fields),
    }
    if "guardrailConfig" in item.request:
        trace = answer.response_fields.get("trace") or {}
        tags[TAG_GUARDRAIL_ACTION] = guardrails.action(answer.stop_reason)
        tags[TAG_GUARDRAIL_POLICIES] = ",".join(guardrails.fired_policies(trace))
    return tags


def outcome_metrics(outcome: CallOutcome) -> dict[str, float]:
    """``reasoning_tokens`` when the usage reports them (Converse's TokenUsage has no such member in
    botocore's model: Bedrock counts reasoning within outputTokens, so it is absent), and
    ``guardrail_cost_usd`` when the guardrail's text units were priced."""
    metrics: dict[str, float] = {}
    answer = outcome.answer
    if answer is not None and "reasoningTokens" in answer.usage:
        metrics["reasoning_tokens"] = answer.usage["reasoningTokens"]
    if outcome.guardrail_cost_usd is not None:
        metrics["guardrail_cost_usd"] = outcome.guardrail_cost_usd
    return metrics


def reasoning_of(outcome: CallOutcome) -> str:
    answer = outcome.answer
    return reasoning_text(answer.output_message.get("content", [])) if answer is not None else ""
