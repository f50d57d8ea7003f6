"""A Converse answer's guardrail facts: the action, the policies that fired, and what its text units cost.

Bedrock reports them in the response's ``trace.guardrail`` (botocore's GuardrailTraceAssessment:
``inputAssessment`` maps a guardrail id to a GuardrailAssessment, ``outputAssessments`` to a list of
them) when the request's guardrailConfig has ``"trace": "enabled"``. Without a trace only the
``stopReason`` (``guardrail_intervened``) tells an intervention: then no policies and no cost are
known, and none are recorded rather than made up.

Pricing (Amazon Bedrock pricing page, "Amazon Bedrock Guardrails"): per 1,000 text units per policy
type, a text unit being up to 1,000 characters; word filters and regex sensitive-information filters
are free. The prices are in ``data/prices.json``'s ``guardrails`` section, keyed by the GuardrailUsage
member that counts the units (API reference, GuardrailUsage).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from bedrock_pipeline.pricing import DEFAULT_PRICES_PATH

logger = logging.getLogger(__name__)

INTERVENED = "INTERVENED"
NONE = "NONE"
# GuardrailAssessment members that are policies (invocationMetrics and appliedGuardrailDetails are not).
POLICIES = (
    "topicPolicy",
    "contentPolicy",
    "wordPolicy",
    "sensitiveInformationPolicy",
    "contextualGroundingPolicy",
    "automatedReasoningPolicy",
)
_PER_UNITS = Decimal(1000)


def action(stop_reason: str) -> str:
    return INTERVENED if stop_reason == "guardrail_intervened" else NONE


def _assessments(trace: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    guardrail = trace.get("guardrail") or {}
    yield from (guardrail.get("inputAssessment") or {}).values()
    for assessments in (guardrail.get("outputAssessments") or {}).values():
        yield from assessments


def _acted(value: Any) -> bool:
    """Anywhere in a policy's assessment, an entry whose action is not NONE (BLOCKED, ANONYMIZED, ...)."""
    if isinstance(value, Mapping):
        if value.get("action") not in (None, "NONE"):
            return True
        return any(_acted(v) for v in value.values())
    if isinstance(value, list):
        return any(_acted(v) for v in value)
    return False


def fired_policies(trace: Mapping[str, Any]) -> list[str]:
    """The policies that acted on the input or output, in POLICIES order (empty without a trace)."""
    fired = {name for a in _assessments(trace) for name in POLICIES if _acted(a.get(name))}
    return [name for name in POLICIES if name in fired]


def text_units(trace: Mapping[str, Any]) -> dict[str, int]:
    """GuardrailUsage summed over every assessment (input and each output), by member."""
    totals: dict[str, int] = {}
    for assessment in _assessments(trace):
        usage = (assessment.get("invocationMetrics") or {}).get("usage") or {}
        for name, units in usage.items():
            if isinstance(units, int) and not isinstance(units, bool):
                totals[name] = totals.get(name, 0) + units
    return totals


@dataclass(frozen=True)
class GuardrailPrices:
    """USD per 1,000 text units by GuardrailUsage member (0 for free ones)."""

    per_1000_units: Mapping[str, Decimal]

    @classmethod
    def load(cls, path: Path | None = None) -> GuardrailPrices:
        if path is None:
            return _default_prices()
        raw = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
        section = raw.get("guardrails") or {}
        return cls({k: Decimal(v) for k, v in (section.get("per_1000_text_units") or {}).items()})

    def cost(self, units: Mapping[str, int]) -> float | None:
        """USD of these text units; None when none were counted or one has no price (with a warning:
        no cost is better than a wrong one)."""
        counted = {k: v for k, v in units.items() if v}
        if not counted:
            return None
        unpriced = sorted(k for k in counted if k not in self.per_1000_units)
        if unpriced:
            logger.warning(
                "guardrail units %s have no price in the table; no guardrail cost recorded", unpriced
            )
            return None
        total = sum((n * self.per_1000_units[k] / _PER_UNITS for k, n in counted.items()), Decimal(0))
        return float(round(total, 10))


@lru_cache(maxsize=1)
def _default_prices() -> GuardrailPrices:
    return GuardrailPrices.load(DEFAULT_PRICES_PATH)
