"""The Converse features beside the answer itself: extended thinking, guardrails, service tiers.

``prepare`` checks a request (before faults and quotas, as validation is); ``finish`` turns the
model's reply into what Bedrock answers with them, plus the response members they add (``trace``,
``serviceTier``, ``performanceConfig``), which Converse returns at the top level and ConverseStream
in its metadata event.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from local_stack.bedrock_emulator import guardrails, reasoning, tiers
from local_stack.bedrock_emulator.catalog import ModelInfo
from local_stack.bedrock_emulator.model import Reply


@dataclass(frozen=True)
class Plan:
    thinking_budget: int | None
    guardrail: tuple[str, guardrails.Guardrail, bool] | None
    response_fields: dict[str, Any]


def prepare(body: dict[str, Any], model: ModelInfo) -> Plan:
    return Plan(
        reasoning.budget(body, model), guardrails.guardrail_of(body), tiers.response_fields(body, model)
    )


def _user_text(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    if last.get("role") != "user":
        return ""
    return " ".join(str(b["text"]) for b in last.get("content", []) if "text" in b)


def _blocked(message: str, output_tokens: int) -> Reply:
    return Reply([{"text": message}], "guardrail_intervened", output_tokens, [message])


def finish(
    plan: Plan, body: dict[str, Any], reply: Reply, rng: random.Random
) -> tuple[Reply, dict[str, Any]]:
    fields = dict(plan.response_fields)
    if plan.guardrail is not None:
        intervened, message, trace = guardrails.apply(plan.guardrail, _user_text(body), None)
        if intervened:  # the input is blocked: the model is not called
            if trace is not None:
                fields["trace"] = trace
            return _blocked(message, 0), fields
    if plan.thinking_budget is not None:
        thoughts, tokens = reasoning.blocks(rng, plan.thinking_budget, _user_text(body))
        reply = dataclasses.replace(
            reply, content=[*thoughts, *reply.content], output_tokens=reply.output_tokens + tokens
        )
    if plan.guardrail is not None:
        answer = " ".join(str(b["text"]) for b in reply.content if "text" in b)
        intervened, message, trace = guardrails.apply(plan.guardrail, _user_text(body), answer)
        if trace is not None:
            fields["trace"] = trace
        if intervened:
            reply = _blocked(message, reply.output_tokens)
    return reply, fields
