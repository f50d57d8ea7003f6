"""The `bedrock` control plane the emulator serves, apart from the HTTP side (server.py).

ListFoundationModels and ListInferenceProfiles (what ingest's model check reads), Create/Get
InferenceProfile (application profiles: profiles.py) and the batch inference job routes
(batch_jobs.py). Each answer is (HTTP status, JSON body); Bedrock's refusals raise BedrockError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from local_stack.bedrock_emulator import batch_jobs, catalog, profiles, validation
from local_stack.bedrock_emulator.batch_jobs import BatchJobs
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.state import EmulatorState

_LISTS = ("/foundation-models", "/inference-profiles")
_BATCH_PREFIX = "/model-invocation-job"


def serves(path: str) -> bool:
    """Whether a request path is one of the control plane's."""
    return path in _LISTS or path.startswith(_BATCH_PREFIX) or path.startswith(profiles.PROFILES_PATH + "/")


def answer(
    state: EmulatorState,
    jobs: BatchJobs,
    request: tuple[str, str, Mapping[str, str], bytes],
    region: str,
) -> tuple[int, dict[str, Any]] | None:
    """(status, body) for ``request`` = (method, path, query, raw body); None when no route matches."""
    method, path, query, raw = request
    if method == "GET" and path in _LISTS:
        return 200, _listed(state, path, query, region)
    if path.startswith(_BATCH_PREFIX):
        body = validation.parse_body(raw) if raw.strip() else {}
        found = batch_jobs.handle(jobs, method, path, query, body, region, state.extra_models())
        return (200, found) if found is not None else None
    identifier = path.removeprefix(profiles.PROFILES_PATH).strip("/")
    if method == "POST" and path == profiles.PROFILES_PATH:
        return 201, state.profiles.create(validation.parse_body(raw), region)
    if method == "GET" and identifier:
        return 200, state.profiles.get(identifier, region)
    return None


def _listed(state: EmulatorState, path: str, query: Mapping[str, str], region: str) -> dict[str, Any]:
    if path == "/foundation-models":
        return {"modelSummaries": catalog.foundation_model_summaries(region, state.extra_models())}
    type_equals = query.get("type")
    if type_equals not in (None, "SYSTEM_DEFINED", "APPLICATION"):
        raise BedrockError("ValidationException", f"Invalid value for typeEquals: {type_equals}")
    try:
        size = int(query.get("maxResults", catalog.PROFILES_PAGE_SIZE))
        start = int(query.get("nextToken", "0"))
    except ValueError:
        raise BedrockError("ValidationException", "invalid maxResults or nextToken") from None
    if not 1 <= size <= 1000 or start < 0:
        raise BedrockError("ValidationException", "maxResults must be 1..1000 and nextToken valid")
    listed = (
        state.profiles.summaries()
        if type_equals == "APPLICATION"
        else catalog.inference_profile_summaries(region, type_equals)
    )
    page: dict[str, Any] = {"inferenceProfileSummaries": listed[start : start + size]}
    if start + size < len(listed):
        page["nextToken"] = str(start + size)  # opaque to clients, as Bedrock's
    return page
