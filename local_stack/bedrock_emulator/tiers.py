"""Service tiers and latency-optimized inference as the emulator serves them.

``serviceTier.type`` is priority | default | flex | reserved (API reference, ServiceTier). Flex and
Priority launched for a list of models (What's New, 2025-11-18, "Amazon Bedrock introduces Priority
and Flex inference service tiers": among this catalog, Amazon Nova Pro and Nova Premier); a model or
region without the tier gets ValidationException (the documented behaviour; the message text here
is the emulator's own, not Bedrock's verbatim). Reserved needs a reservation the emulator never has.
``performanceConfig`` is echoed, not refused: the emulator does not model which models run
latency-optimized. The response names the tier that served the call, as Bedrock's does.
"""

from __future__ import annotations

from typing import Any

from local_stack.bedrock_emulator.catalog import ModelInfo
from local_stack.bedrock_emulator.errors import BedrockError

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
        fields["performanceConfig"] = {"latency": performance["latency"]}
    return fields
