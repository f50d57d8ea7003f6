"""Guardrails as Converse applies them, for the guardrails the emulator knows (GUARDRAILS).

A request's ``guardrailConfig`` names a guardrail and version; an unknown one is refused. The
emulator's guardrail ``emulator-blocklist`` has a word policy (BLOCKED_WORDS) and a content-filter
policy (never triggered here). A blocked word in the user's text stops the call before the model:
stopReason ``guardrail_intervened`` and the guardrail's blocked message as the answer (user guide,
"How Amazon Bedrock Guardrails works"); in the answer, the message is replaced the same way. With
``"trace": "enabled"`` (or ``enabled_full``) the response carries ``trace.guardrail`` in botocore's
GuardrailTraceAssessment shape with the text units each configured policy processed (a text unit is
up to 1,000 characters, as Bedrock bills them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from local_stack.bedrock_emulator.errors import BedrockError


@dataclass(frozen=True)
class Guardrail:
    blocked_words: tuple[str, ...]
    blocked_messaging: str
    versions: tuple[str, ...] = ("DRAFT", "1")


GUARDRAILS = {
    "emulator-blocklist": Guardrail(
        blocked_words=("forbidden", "classified"),
        blocked_messaging="Sorry, the model cannot answer this question.",
    )
}
_UNITS = ("topicPolicyUnits", "contentPolicyUnits", "wordPolicyUnits", "sensitiveInformationPolicyUnits")
_FREE = ("sensitiveInformationPolicyFreeUnits", "contextualGroundingPolicyUnits")


def guardrail_of(body: dict[str, Any]) -> tuple[str, Guardrail, bool] | None:
    """(id, guardrail, trace on) for a request with guardrailConfig; refuses an unknown one."""
    config = body.get("guardrailConfig")
    if not isinstance(config, dict):
        return None
    identifier = str(config.get("guardrailIdentifier", "")).rsplit("/", 1)[-1]
    guardrail = GUARDRAILS.get(identifier)
    if guardrail is None or config.get("guardrailVersion") not in guardrail.versions:
        raise BedrockError(
            "ValidationException",
            "The guardrail identifier or version provided in the request does not exist.",
        )
    return identifier, guardrail, config.get("trace") in ("enabled", "enabled_full")


def _assessment(guardrail: Guardrail, text: str, matches: list[str]) -> dict[str, Any]:
    units = math.ceil(len(text) / 1000)
    usage = {name: units if name in ("contentPolicyUnits", "wordPolicyUnits") else 0 for name in _UNITS}
    usage.update(dict.fromkeys(_FREE, 0))
    assessment: dict[str, Any] = {
        "invocationMetrics": {
            "guardrailProcessingLatency": 5,
            "usage": usage,
            "guardrailCoverage": {"textCharacters": {"guarded": len(text), "total": len(text)}},
        }
    }
    if matches:
        words = [{"match": word, "action": "BLOCKED", "detected": True} for word in matches]
        assessment["wordPolicy"] = {"customWords": words, "managedWordLists": []}
    return assessment


def _matches(guardrail: Guardrail, text: str) -> list[str]:
    lowered = text.lower()
    return [word for word in guardrail.blocked_words if word in lowered]


def apply(
    guarded: tuple[str, Guardrail, bool], user_text: str, answer_text: str | None
) -> tuple[bool, str, dict[str, Any] | None]:
    """(intervened, blocked message, the response's ``trace`` or None) for the input and, when the
    model answered (``answer_text``), the output."""
    identifier, guardrail, traced = guarded
    input_hits = _matches(guardrail, user_text)
    trace: dict[str, Any] = {"inputAssessment": {identifier: _assessment(guardrail, user_text, input_hits)}}
    intervened = bool(input_hits)
    if not intervened and answer_text is not None:
        output_hits = _matches(guardrail, answer_text)
        trace["outputAssessments"] = {identifier: [_assessment(guardrail, answer_text, output_hits)]}
        intervened = bool(output_hits)
    if intervened:
        trace["actionReason"] = "Guardrail blocked."
    return intervened, guardrail.blocked_messaging, ({"guardrail": trace} if traced else None)
