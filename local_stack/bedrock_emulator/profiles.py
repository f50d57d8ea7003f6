"""Application inference profiles on the emulator's control plane, as Bedrock serves them.

CreateInferenceProfile (``POST /inference-profiles``, 201) copies a foundation model or a system
(cross-region) inference profile into an APPLICATION profile with its own ARN
(``arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>``); GetInferenceProfile
(``GET /inference-profiles/{id or ARN}``) answers for it and for system profiles; ListInferenceProfiles
with ``typeEquals=APPLICATION`` lists them. Converse on a profile's ARN runs its model (server.py), with
its own quota (quotas.quota_key keys by the ARN's id). Requests are checked against botocore's
``bedrock`` service model first (shape_check), as Bedrock's front end does. Error messages are the
API reference's descriptions of each error (ResourceNotFoundException, ConflictException).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any
from urllib.parse import unquote

from local_stack.bedrock_emulator import catalog
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.shape_check import check_request

PROFILES_PATH = "/inference-profiles"
NOT_FOUND = (
    "The specified resource Amazon Resource Name (ARN) was not found. Check the Amazon Resource Name "
    "(ARN) and try your request again."
)
CONFLICT = "Error occurred because of a conflict while performing an operation."


def application_profile_id(name: str) -> str:
    """The id the emulator gives the application profile named ``name`` (12 lowercase hex, as Bedrock's
    ids are 12 lowercase letters and digits)."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


class ApplicationProfiles:
    """The profiles created since the emulator started (or was reset); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[str, dict[str, Any]] = {}  # ARN -> GetInferenceProfile response

    def create(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        check_request("bedrock", "CreateInferenceProfile", body)
        source = body["modelSource"]["copyFrom"]
        model_id = _source_model(source, region)
        if model_id is None:
            raise BedrockError("ResourceNotFoundException", NOT_FOUND)
        name = body["inferenceProfileName"]
        with self._lock:
            if any(p["inferenceProfileName"] == name for p in self._profiles.values()):
                raise BedrockError("ConflictException", CONFLICT)
            # From the name (unique among the live profiles): a demo or test can know the ARN beforehand.
            profile_id = application_profile_id(name)
            arn = f"arn:aws:bedrock:{region}:{catalog.ACCOUNT_ID}:application-inference-profile/{profile_id}"
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            profile = {
                "inferenceProfileName": name,
                "createdAt": now,
                "updatedAt": now,
                "inferenceProfileArn": arn,
                "models": [{"modelArn": catalog.foundation_model_arn(model_id, region)}],
                "inferenceProfileId": profile_id,
                "status": "ACTIVE",
                "type": "APPLICATION",
            }
            if "description" in body:
                profile["description"] = body["description"]
            self._profiles[arn] = profile
        return {"inferenceProfileArn": arn, "status": "ACTIVE"}

    def get(self, identifier: str, region: str) -> dict[str, Any]:
        identifier = unquote(identifier)
        with self._lock:
            for profile in self._profiles.values():
                if identifier in (profile["inferenceProfileArn"], profile["inferenceProfileId"]):
                    return dict(profile)
        for summary in catalog.inference_profile_summaries(region, "SYSTEM_DEFINED"):
            if identifier in (summary["inferenceProfileArn"], summary["inferenceProfileId"]):
                return summary
        raise BedrockError("ResourceNotFoundException", NOT_FOUND)

    def summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._profiles.values()]

    def model_for(self, model_identifier: str) -> str | None:
        """The foundation model id an application profile ARN (or id) runs; None for anything else."""
        with self._lock:
            for profile in self._profiles.values():
                if model_identifier in (profile["inferenceProfileArn"], profile["inferenceProfileId"]):
                    return str(profile["models"][0]["modelArn"]).rsplit("/", 1)[-1]
        return None


def _source_model(source: str, region: str) -> str | None:
    """The foundation model a copyFrom ARN names (a foundation model or a system profile the catalog
    knows), or None."""
    resource = source.split(":", 5)[-1]
    kind, _, identifier = resource.partition("/")
    if kind not in ("foundation-model", "inference-profile"):
        return None
    info = catalog.resolve(identifier)
    if info is None or (kind == "inference-profile" and identifier == info.model_id):
        return None  # an inference-profile ARN must name a profile (us.X), not a bare model
    return info.model_id
