"""The `ModelCatalog` port on Bedrock's control plane (the ``bedrock`` client, not ``bedrock-runtime``).

What the account offers is read once per execution environment (a cold start) with two list calls:

* ListFoundationModels (``GET /foundation-models``, not paginated): ``modelSummaries[]`` with
  ``modelId``, ``modelArn`` and ``inferenceTypesSupported`` (a model without ``ON_DEMAND`` is invoked
  through an inference profile only). API reference: ListFoundationModels.
* ListInferenceProfiles (``GET /inference-profiles``, paginated: ``nextToken``/``maxResults``, boto3
  paginator ``list_inference_profiles``): ``inferenceProfileSummaries[]`` with ``inferenceProfileId``
  (``us.``/``global.``... cross-region ids) and ``inferenceProfileArn``. Without ``typeEquals`` it
  returns only SYSTEM_DEFINED profiles (aws/aws-cli#9728), so APPLICATION profiles are listed too.

An application inference profile ARN is resolved to the foundation model it routes to with
GetInferenceProfile (``GET /inference-profiles/{id}``: ``models[].modelArn``), once per ARN per cold
start, so its calls are priced as that model (README "Prompt files").

IAM: ``bedrock:ListFoundationModels`` and ``bedrock:ListInferenceProfiles`` (no resource types: "*"),
``bedrock:GetInferenceProfile`` on the configured application profiles.
Offline the emulator serves both calls (AWS_ENDPOINT_URL_BEDROCK). If the lists cannot be read (no
grant, no endpoint), the check is off and the calls decide, as before; it is tried again later.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

# Identifiers the lists can vouch for. Other ARNs (provisioned, custom or imported models, prompt
# routers) are not in either list: they are left to the call rather than wrongly refused.
_CHECKED_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[^:]*:[^:]*:(foundation-model|inference-profile|application-inference-profile)/"
)


def make_catalog_client(region_name: str | None = None) -> Any:
    """A ``bedrock`` client that gives up quickly: an unreachable control plane turns the check off."""
    config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 2})
    return boto3.client("bedrock", region_name=region_name, config=config)


@dataclass(frozen=True)
class _Offered:
    invocable: frozenset[str]  # ids and ARNs that can be called as they are
    profile_only: Mapping[str, str]  # foundation model id -> an inference profile that serves it


class BedrockModelCatalog:
    """Reads the account's models and inference profiles at the first check, then answers from memory."""

    def __init__(
        self,
        client_factory: Callable[[], Any] = make_catalog_client,
        *,
        retry_after_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._offered: _Offered | None = None
        self._failed_at: float | None = None
        self._profiles: dict[str, str | None] = {}  # application profile ARN -> its foundation model

    def readable(self) -> bool:
        """Whether the account's lists could be read (else every check passes, as without one)."""
        return self._load() is not None

    def unknown(self, model_ids: Collection[str]) -> dict[str, str]:
        offered = self._load()
        if offered is None:
            return {}
        unknown: dict[str, str] = {}
        for model_id in model_ids:
            if model_id in offered.invocable or (
                model_id.startswith("arn:") and not _CHECKED_ARN.match(model_id)
            ):
                continue
            if profile := offered.profile_only.get(model_id):
                unknown[model_id] = (
                    f"this model is invoked through an inference profile here, e.g. {profile!r}"
                )
            else:
                unknown[model_id] = (
                    "not a foundation model or inference profile this account offers in this region "
                    "(ListFoundationModels, ListInferenceProfiles); not called"
                )
        return unknown

    def resolve_profile(self, model_id: str) -> str | None:
        """The foundation model id behind an application inference profile ARN, read once per ARN."""
        if not (model_id.startswith("arn:") and ":application-inference-profile/" in model_id):
            return None
        with self._lock:
            if model_id in self._profiles:
                return self._profiles[model_id]
        try:
            profile = self._client_factory().get_inference_profile(inferenceProfileIdentifier=model_id)
        except (BotoCoreError, ClientError) as error:  # not cached: the next file tries again
            logger.warning(
                "cannot read the inference profile %s (%s): its calls go unpriced", model_id, error
            )
            return None
        # A profile that copies a cross-region profile lists the same model in each region it routes to.
        arns = [m.get("modelArn", "") for m in profile.get("models", [])]
        models = {arn.rsplit("/", 1)[-1] for arn in arns if ":foundation-model/" in arn}
        resolved = models.pop() if len(models) == 1 else None
        with self._lock:
            self._profiles[model_id] = resolved
        return resolved

    def _load(self) -> _Offered | None:
        with self._lock:
            if self._offered is not None:
                return self._offered
            if self._failed_at is not None and self._clock() - self._failed_at < self._retry_after:
                return None
            try:
                self._offered = _read_offered(self._client_factory())
            except (BotoCoreError, ClientError, ValueError) as error:
                self._failed_at = self._clock()
                logger.warning("model check off: cannot list the account's Bedrock models (%s)", error)
                return None
            return self._offered


def _read_offered(client: Any) -> _Offered:
    models = client.list_foundation_models()["modelSummaries"]
    if not models:  # no account offers nothing: an endpoint that is not Bedrock's
        raise ValueError("ListFoundationModels returned no models")
    invocable: set[str] = set()
    on_demand: set[str] = set()
    for model in models:
        invocable.add(model["modelArn"])
        if "ON_DEMAND" in model.get("inferenceTypesSupported", ["ON_DEMAND"]):
            on_demand.add(model["modelId"])
    invocable |= on_demand
    profile_only: dict[str, str] = {}
    paginator = client.get_paginator("list_inference_profiles")
    for profile_type in ("SYSTEM_DEFINED", "APPLICATION"):
        for page in paginator.paginate(typeEquals=profile_type):
            for profile in page.get("inferenceProfileSummaries", []):
                invocable.add(profile["inferenceProfileId"])
                invocable.add(profile["inferenceProfileArn"])
                for served in profile.get("models", []):
                    model_id = served.get("modelArn", "").rsplit("/", 1)[-1]
                    if model_id and model_id not in on_demand:
                        profile_only.setdefault(model_id, profile["inferenceProfileId"])
    return _Offered(frozenset(invocable), profile_only)
