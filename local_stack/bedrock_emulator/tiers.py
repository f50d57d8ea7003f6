"""Service tiers and latency-optimized inference as the emulator serves them.

``serviceTier.type`` is priority | default | flex | reserved (API reference, ServiceTier). Flex and
Priority launched for a list of models (What's New, 2025-11-18, "Amazon Bedrock introduces Priority
and Flex inference service tiers": among this catalog, Amazon Nova Pro and Nova Premier); a model or
region without the tier gets ValidationException (the documented behaviour; the message text here
is the emulator's own, not Bedrock's verbatim). Reserved needs a reservation the emulator never has.
``performanceConfig`` ``{"latency": "optimized"}`` is served optimized for the models the user guide
lists (latency-optimized-inference.html: Nova Pro, Claude 3.5 Haiku, Llama 3.1 405B and 70B) and
otherwise at standard latency, which the response says: Bedrock falls back to standard (and bills
it) when it cannot serve optimized, and "the latency configuration for a served request is visible
in API response" (same page). The response names the tier that served the call, as Bedrock's does.
"""

from __future__ import annotations

from typing import Any

from local_stack.bedrock_emulator.catalog import ModelInfo
from local_stack.bedrock_emulator.errors import BedrockError

LATENCY_OPTIMIZED_MODELS = (
    "amazon.nova-pro-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "meta.llama3-1-405b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
)
TIER_MODELS = {
    "flex": ("amazon.nova-pro-v1:0", "amazon.nova-premier-v1:0"),
    "priority": ("amazon.nova-pro-v1:0", "amazon.nova-premier-v1:0"),
}


def response_fields(body: dict[str, Any], model: ModelInfo) -> dict[str, Any]:
    """The serviceTier / performanceConfig members of the response; refuses a tier the model lacks."""
    fields: dict[str, Any] = {}
    tier = body.get("serviceTier")
    if isinstance(tier, dict):
        kind = tier.get("type")
        if kind != "default" and model.model_id not in TIER_MODELS.get(str(kind), ()):
            raise BedrockError(
                "ValidationException",
                f"The service tier '{kind}' is not supported for model {model.model_id}.",
            )
        fields["serviceTier"] = {"type": kind}
    performance = body.get("performanceConfig")
    if isinstance(performance, dict) and "latency" in performance:
        optimized = performance["latency"] == "optimized" and model.model_id in LATENCY_OPTIMIZED_MODELS
        fields["performanceConfig"] = {"latency": "optimized" if optimized else "standard"}
    return fields
