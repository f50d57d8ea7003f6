"""Which tier served a call, as the price table names it, and as the run's ``pipeline.service_tier`` tag.

Converse takes ``serviceTier: {"type": "priority" | "default" | "flex" | "reserved"}`` (API reference,
ServiceTier) and ``performanceConfig: {"latency": "standard" | "optimized"}`` (latency-optimized
inference); the response echoes the tier that served it. The price table's tiers are ``flex``,
``priority`` and ``latency_optimized`` beside standard on-demand. Reserved capacity is billed per
reserved tokens-per-minute, not per token: it has no table price, so such calls get no cost (with
a warning) rather than an on-demand one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bedrock_pipeline.pricing import STANDARD_TIER

DEFAULT = "default"
LATENCY_OPTIMIZED = "latency_optimized"


def service_tier(request: Mapping[str, Any], response_fields: Mapping[str, Any] | None = None) -> str:
    """The tier name for tag and price: Bedrock's serviceTier type (the response's when it reports
    one, else the request's), or ``latency_optimized`` for optimized latency; ``default`` otherwise."""
    answered = (response_fields or {}).get("serviceTier") or {}
    requested = request.get("serviceTier") or {}
    tier = answered.get("type") or requested.get("type") or DEFAULT
    if tier != DEFAULT:
        return str(tier)
    performance = (response_fields or {}).get("performanceConfig") or request.get("performanceConfig") or {}
    return LATENCY_OPTIMIZED if performance.get("latency") == "optimized" else DEFAULT


def price_tier(tier: str) -> str:
    """The price table's name for a tier (standard on-demand for ``default``)."""
    return STANDARD_TIER if tier == DEFAULT else tier
