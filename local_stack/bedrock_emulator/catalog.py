"""The emulator's model catalog and model-identifier resolution.

Bedrock accepts a foundation-model id, a cross-region inference-profile id (``us.``/``eu.``/``apac.``/
``global.``... prefix) or the ARN of either. Anything else gets ValidationException "The provided model
identifier is invalid." (the text real Bedrock returns, HTTP 400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INVALID_MODEL_MESSAGE = "The provided model identifier is invalid."


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    provider: str
    max_output_tokens: int


def _m(model_id: str, max_output_tokens: int) -> ModelInfo:
    return ModelInfo(model_id, model_id.split(".", 1)[0], max_output_tokens)


KNOWN_MODELS: dict[str, ModelInfo] = {
    m.model_id: m
    for m in (
        _m("anthropic.claude-3-haiku-20240307-v1:0", 4096),
        _m("anthropic.claude-3-sonnet-20240229-v1:0", 4096),
        _m("anthropic.claude-3-opus-20240229-v1:0", 4096),
        _m("anthropic.claude-3-5-haiku-20241022-v1:0", 8192),
        _m("anthropic.claude-3-5-sonnet-20240620-v1:0", 8192),
        _m("anthropic.claude-3-5-sonnet-20241022-v2:0", 8192),
        _m("anthropic.claude-3-7-sonnet-20250219-v1:0", 64000),
        _m("anthropic.claude-sonnet-4-20250514-v1:0", 64000),
        _m("anthropic.claude-opus-4-20250514-v1:0", 32000),
        _m("anthropic.claude-sonnet-4-5-20250929-v1:0", 64000),
        _m("anthropic.claude-haiku-4-5-20251001-v1:0", 64000),
        _m("amazon.nova-micro-v1:0", 10000),
        _m("amazon.nova-lite-v1:0", 10000),
        _m("amazon.nova-pro-v1:0", 10000),
        _m("amazon.nova-premier-v1:0", 32000),
        _m("amazon.titan-text-express-v1", 8192),
        _m("meta.llama3-8b-instruct-v1:0", 2048),
        _m("meta.llama3-70b-instruct-v1:0", 2048),
        _m("meta.llama3-1-8b-instruct-v1:0", 2048),
        _m("meta.llama3-1-70b-instruct-v1:0", 2048),
        _m("meta.llama3-2-1b-instruct-v1:0", 2048),
        _m("meta.llama3-2-3b-instruct-v1:0", 2048),
        _m("meta.llama3-3-70b-instruct-v1:0", 2048),
        _m("mistral.mistral-small-2402-v1:0", 8192),
        _m("mistral.mistral-large-2402-v1:0", 8192),
        _m("mistral.mistral-large-2407-v1:0", 8192),
        _m("cohere.command-r-v1:0", 4096),
        _m("cohere.command-r-plus-v1:0", 4096),
        _m("ai21.jamba-1-5-mini-v1:0", 4096),
    )
}

DEFAULT_MAX_OUTPUT_TOKENS = 8192  # for models added at run time through the config
INFERENCE_PROFILE_PREFIXES = ("us", "eu", "apac", "global", "us-gov", "ca", "jp", "au")
_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:\d*:(?:foundation-model|inference-profile|"
    r"system-defined-inference-profile)/(?P<id>[^/]+)$"
)


def base_model_id(model_identifier: str) -> str:
    """Strip an ARN and an inference-profile prefix: ``arn:...:inference-profile/us.X`` -> ``X``."""
    identifier = model_identifier.strip()
    if match := _ARN.match(identifier):
        identifier = match.group("id")
    prefix, _, rest = identifier.partition(".")
    if rest and prefix in INFERENCE_PROFILE_PREFIXES:
        identifier = rest
    return identifier


def resolve(model_identifier: str, extra_models: frozenset[str] = frozenset()) -> ModelInfo | None:
    """The catalog entry a request's model identifier names, or None when Bedrock would reject it.

    ``extra_models`` are ids made known at run time (any id configured explicitly in the emulator config).
    """
    base = base_model_id(model_identifier)
    if info := KNOWN_MODELS.get(base):
        return info
    if base in extra_models or model_identifier in extra_models:
        return ModelInfo(base, base.split(".", 1)[0], DEFAULT_MAX_OUTPUT_TOKENS)
    return None


# --- the control plane: ListFoundationModels and ListInferenceProfiles, in Bedrock's response shapes ---
ACCOUNT_ID = "123456789012"
PROFILES_PAGE_SIZE = 100  # when the request gives no maxResults; 1..1000 as Bedrock validates
_PROFILE_DATE = "2024-08-27T00:00:00Z"  # iso8601, as the service model declares these timestamps


def foundation_model_arn(model_id: str, region: str) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model_id}"


def foundation_model_summaries(
    region: str, extra_models: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every model the runtime answers (the catalog and ids configured at run time), on demand."""
    ids = sorted({*KNOWN_MODELS, *(base_model_id(m) for m in extra_models if not m.startswith("arn:"))})
    return [
        {
            "modelArn": foundation_model_arn(model_id, region),
            "modelId": model_id,
            "modelName": model_id,
            "providerName": model_id.split(".", 1)[0].capitalize(),
            "inputModalities": ["TEXT"],
            "outputModalities": ["TEXT"],
            "responseStreamingSupported": True,
            "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"],
            "modelLifecycle": {"status": "ACTIVE"},
        }
        for model_id in ids
    ]


def inference_profile_summaries(region: str, type_equals: str | None) -> list[dict[str, Any]]:
    """The cross-region (SYSTEM_DEFINED) profiles the runtime accepts: every prefix for every catalog
    model. The emulator has no APPLICATION profiles."""
    if type_equals not in (None, "SYSTEM_DEFINED"):
        return []
    return [
        {
            "inferenceProfileName": f"{prefix.upper()} {model_id}",
            "description": f"Routes requests to {model_id} across {prefix} regions.",
            "createdAt": _PROFILE_DATE,
            "updatedAt": _PROFILE_DATE,
            "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:inference-profile/{prefix}.{model_id}",
            "models": [{"modelArn": foundation_model_arn(model_id, region)}],
            "inferenceProfileId": f"{prefix}.{model_id}",
            "status": "ACTIVE",
            "type": "SYSTEM_DEFINED",
        }
        for model_id in sorted(KNOWN_MODELS)
        for prefix in INFERENCE_PROFILE_PREFIXES
    ]
