"""Reasoning (extended thinking): the prompt file's ``reasoning`` setting as each family's request
field, and the answer's reasoning blocks in a form JSON can keep.

Only Anthropic's manual extended thinking takes a token budget: ``additionalModelRequestFields``
``{"thinking": {"type": "enabled", "budget_tokens": N}}`` (Bedrock user guide, "Extended thinking",
claude-messages-extended-thinking.html: Claude 3.7 Sonnet and the Claude 4 / 4.5 models). Its rules,
checked here so a bad line costs no call: the budget is at least 1,024 tokens, ``max_tokens`` must
be greater than it (thinking counts within max_tokens), and thinking is not compatible with
temperature, top_p or forced tool use (same page, "Feature compatibility"). Amazon Nova 2 reasons
by effort level (``reasoningConfig.maxReasoningEffort``), not by a budget, so a budget cannot be
mapped onto it without inventing a rule: such models get a line error naming the way to send their
own field (``additionalModelRequestFields`` in the Bedrock shape).
"""

from __future__ import annotations

import base64
from typing import Any

from bedrock_pipeline.pricing import PriceTable

MIN_BUDGET_TOKENS = 1024
# Base model ids (after any cross-region profile prefix) that take Anthropic's thinking budget.
_ANTHROPIC_THINKING = (
    "anthropic.claude-3-7-sonnet",
    "anthropic.claude-sonnet-4",
    "anthropic.claude-opus-4",
    "anthropic.claude-haiku-4-5",
)


class ReasoningRejected(ValueError):
    """Why a reasoning setting cannot be sent to a model (the parser's line error)."""


def supports_budget(model_id: str) -> bool:
    return PriceTable.base_model_id(model_id).lower().startswith(_ANTHROPIC_THINKING)


def with_reasoning(request: dict[str, Any], model_id: str, budget_tokens: int) -> dict[str, Any]:
    """``request`` with the model family's reasoning field for ``budget_tokens``; raises
    ReasoningRejected where the model has none or the request breaks the family's rules."""
    if not supports_budget(model_id):
        raise ReasoningRejected(
            f'"reasoning" (a thinking budget) is not supported for {model_id}: only Anthropic Claude '
            "3.7 Sonnet and Claude 4 models take one; for other models put the model's own field in "
            "modelInput.additionalModelRequestFields (Bedrock shape)"
        )
    if budget_tokens < MIN_BUDGET_TOKENS:
        raise ReasoningRejected(f"reasoning.budget_tokens must be at least {MIN_BUDGET_TOKENS}")
    inference = request.get("inferenceConfig") or {}
    max_tokens = inference.get("maxTokens")
    if max_tokens is None or max_tokens <= budget_tokens:
        raise ReasoningRejected(
            f"reasoning.budget_tokens {budget_tokens} needs max_tokens greater than it (thinking counts "
            f"within max_tokens); max_tokens is {max_tokens}"
        )
    # Anthropic: only temperature 1 is allowed with thinking; top_p must be left alone.
    if inference.get("temperature") not in (None, 1) or "topP" in inference:
        raise ReasoningRejected("reasoning cannot be combined with temperature or top_p")
    choice = (request.get("toolConfig") or {}).get("toolChoice") or {}
    if "any" in choice or "tool" in choice:
        raise ReasoningRejected('reasoning cannot be combined with a forced tool_choice ("any" or a tool)')
    fields = dict(request.get("additionalModelRequestFields") or {})
    fields["thinking"] = {"type": "enabled", "budget_tokens": budget_tokens}
    return {**request, "additionalModelRequestFields": fields}


def thinking_budget(request: dict[str, Any]) -> int | None:
    """The thinking budget a request asks for (Anthropic's field), None without one."""
    thinking = (request.get("additionalModelRequestFields") or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            return budget
    return None


def json_safe_content(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Converse content blocks with ``redactedContent`` (bytes from botocore) as base64 text, the way
    Bedrock's JSON wire format and batch-inference output carry a blob; other blocks unchanged."""
    safe = []
    for block in content:
        reasoning = block.get("reasoningContent")
        redacted = reasoning.get("redactedContent") if isinstance(reasoning, dict) else None
        if isinstance(redacted, bytes | bytearray):
            block = {
                "reasoningContent": {**reasoning, "redactedContent": base64.b64encode(redacted).decode()}
            }
        safe.append(block)
    return safe


def reasoning_text(content: list[dict[str, Any]]) -> str:
    """The readable reasoning of an answer (redacted reasoning has none)."""
    parts = [
        str(block["reasoningContent"]["reasoningText"].get("text", ""))
        for block in content
        if isinstance(block.get("reasoningContent"), dict) and "reasoningText" in block["reasoningContent"]
    ]
    return "\n\n".join(p for p in parts if p)
