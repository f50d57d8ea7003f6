"""Bedrock runtime errors as the REST-JSON protocol carries them (status + x-amzn-ErrorType + message).

botocore maps the ``x-amzn-ErrorType`` header to ``client.exceptions.<Name>``; statuses and names are
those of the bedrock-runtime service model (Converse/ConverseStream error shapes).
"""

from __future__ import annotations

from typing import Any

ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "ConflictException": 400,  # control plane (bedrock service model): batch jobs
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}

DEFAULT_MESSAGES: dict[str, str] = {
    "ValidationException": "The request is invalid.",
    "ConflictException": "The request conflicts with the resource's current state.",
    "ServiceQuotaExceededException": "The request exceeds a service quota.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "The requested resource could not be found.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request again.",
    "ModelErrorException": "The model encountered an error while processing the request.",
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ModelNotReadyException": "The model is not ready to serve inference requests. Try again later.",
    "InternalServerException": "The server encountered an internal error. Try your request again later.",
    "ServiceUnavailableException": "The service isn't currently available. Try again later.",
}

# Outcome buckets of the emulator's statistics.
THROTTLE_ERRORS = frozenset({"ThrottlingException"})


class BedrockError(Exception):
    """An error response: ``name`` is the service-model shape name, e.g. ``ThrottlingException``."""

    def __init__(self, name: str, message: str | None = None, **fields: Any) -> None:
        if name not in ERROR_STATUS:
            raise ValueError(f"unknown Bedrock error type: {name}")
        self.name = name
        self.message = message or DEFAULT_MESSAGES[name]
        self.fields = fields
        super().__init__(f"{name}: {self.message}")

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.name]

    @property
    def outcome(self) -> str:
        if self.name == "ValidationException":
            return "validation"
        return "throttled" if self.name in THROTTLE_ERRORS else "error"

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.fields}
