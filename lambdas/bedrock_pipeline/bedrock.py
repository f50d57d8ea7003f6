"""Bedrock adapter: one boto3 bedrock-runtime client, Converse and ConverseStream, errors classified.

The endpoint is never set in code: on AWS boto3 resolves the VPC endpoint, offline the environment
sets AWS_ENDPOINT_URL_BEDROCK_RUNTIME to the emulator. So the same code runs in both places.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from bedrock_pipeline import settings
from bedrock_pipeline.domain import ModelResponse
from bedrock_pipeline.media import decoded_for_boto3
from bedrock_pipeline.ports import BedrockCallError
from bedrock_pipeline.reasoning import json_safe_content

# ConverseStream deltas that are the model's output (text, a tool call's input, reasoning): the first
# one ends the time to first token. messageStart and contentBlockStart carry no generated token.
_TOKEN_DELTAS = frozenset({"text", "toolUse", "reasoningContent"})

# Errors that will not go away by retrying the same request: they become a failure result at once.
PERMANENT_ERROR_CODES = frozenset(
    {
        "ValidationException",
        "ResourceNotFoundException",
        "AccessDeniedException",
        "ModelErrorException",
    }
)


def make_bedrock_client(region_name: str | None = None, *, paced: bool = False) -> Any:
    """bedrock-runtime client. ``paced``: one attempt per call ("standard" mode, total_max_attempts 1:
    the initial request included, boto3 guide "Retries"), as the
    paced gateway books every attempt in the model's shared schedule and sees every throttle
    (use_cases/paced_calls.py). Otherwise botocore's adaptive retries (client-side rate limiting).

    Call after `mlflow.bedrock.autolog()` so the client is traced.
    """
    retries: Any = (
        {"mode": "standard", "total_max_attempts": 1}
        if paced
        else {"mode": "adaptive", "max_attempts": settings.BEDROCK_MAX_ATTEMPTS}
    )
    config = Config(
        retries=retries,
        read_timeout=settings.BEDROCK_READ_TIMEOUT_SECONDS,
        max_pool_connections=max(10, settings.RUNNER_ITEM_CONCURRENCY * 2),
    )
    return boto3.client("bedrock-runtime", region_name=region_name, config=config)


class BedrockGateway:
    """The `ModelGateway` port on bedrock-runtime. Calls Converse or ConverseStream and returns a `ModelResponse`; raises `BedrockCallError`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # When the last attempt of the calling thread's ConverseStream request was sent: botocore
        # retries throttles inside the call, and a backoff is not the model's time to first token.
        self._attempt = threading.local()
        client.meta.events.register("before-send.bedrock-runtime.ConverseStream", self._note_attempt)

    def _note_attempt(self, **_: Any) -> None:
        self._attempt.sent = time.perf_counter()  # returns None: botocore then sends the request

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse:
        # Media bytes travel as base64 until here; botocore wants raw bytes (media.py says why).
        body = decoded_for_boto3(request)
        started = time.perf_counter()
        first_token_ms: float | None = None
        try:
            if stream:
                self._attempt.sent = started
                response, first_token_at = _collect_stream(
                    self._client.converse_stream(modelId=model_id, **body)
                )
                if first_token_at is not None:
                    first_token_ms = (first_token_at - self._attempt.sent) * 1000
            else:
                response = self._client.converse(modelId=model_id, **body)
        except EventStreamError as exc:  # an error event inside the stream
            code = _normalise_code(exc.response.get("Error", {}).get("Code", "StreamError"))
            raise BedrockCallError(code, str(exc), code in PERMANENT_ERROR_CODES) from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            raise BedrockCallError(code, message, code in PERMANENT_ERROR_CODES) from exc
        wall_ms = (time.perf_counter() - started) * 1000
        usage = {k: int(v) for k, v in response.get("usage", {}).items() if isinstance(v, int)}
        message = response["output"]["message"]
        return ModelResponse(
            # Reasoning blocks kept as Bedrock answers them; redacted ones as base64 text (JSON has no bytes).
            output_message={**message, "content": json_safe_content(message.get("content", []))},
            stop_reason=response.get("stopReason", ""),
            usage=usage,
            latency_ms=float(response.get("metrics", {}).get("latencyMs", wall_ms)),
            wall_ms=wall_ms,
            time_to_first_token_ms=first_token_ms,
            response_fields={k: response[k] for k in RESPONSE_FIELDS if k in response},
        )


# Converse response members besides output/stopReason/usage/metrics that a result keeps as answered:
# the guardrail trace, the tier that served the call, the model's extra fields (botocore's ConverseResponse).
RESPONSE_FIELDS = ("trace", "serviceTier", "performanceConfig", "additionalModelResponseFields")


def _normalise_code(code: str) -> str:
    # Stream exceptions arrive camel-cased (throttlingException); the API's error codes are Pascal-cased.
    return code[:1].upper() + code[1:] if code else code


def _collect_stream(response: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """Reassemble ConverseStream events into Converse's response shape; also when (perf_counter) the
    first generated token arrived, None if none did.

    Blocks keep their stream order (contentBlockIndex): reasoning, text and tool use as Converse would
    answer them. A reasoningContent delta carries text, a signature or redacted bytes (botocore's
    ReasoningContentBlockDelta); they become one reasoningContent block per index.
    """
    blocks: dict[int, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    tool_inputs: dict[int, list[str]] = {}
    role = "assistant"
    stop_reason = ""
    usage: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    first_token_at: float | None = None
    for event in response["stream"]:
        if "messageStart" in event:
            role = event["messageStart"].get("role", role)
        elif "contentBlockStart" in event:
            index = event["contentBlockStart"]["contentBlockIndex"]
            start = event["contentBlockStart"].get("start", {})
            if "toolUse" in start:
                blocks[index] = {"toolUse": dict(start["toolUse"])}
                tool_inputs[index] = []
        elif "contentBlockDelta" in event:
            index = event["contentBlockDelta"]["contentBlockIndex"]
            delta = event["contentBlockDelta"]["delta"]
            if first_token_at is None and _TOKEN_DELTAS & delta.keys():
                first_token_at = time.perf_counter()
            if "text" in delta:
                block = blocks.setdefault(index, {"text": ""})
                block["text"] = block.get("text", "") + delta["text"]
            elif "toolUse" in delta:
                tool_inputs.setdefault(index, []).append(delta["toolUse"].get("input", ""))
            elif "reasoningContent" in delta:
                _add_reasoning(blocks.setdefault(index, {"reasoningContent": {}}), delta["reasoningContent"])
        elif "messageStop" in event:
            stop_reason = event["messageStop"].get("stopReason", "")
            if "additionalModelResponseFields" in event["messageStop"]:
                extra["additionalModelResponseFields"] = event["messageStop"]["additionalModelResponseFields"]
        elif "metadata" in event:
            usage = event["metadata"].get("usage", {})
            metrics = event["metadata"].get("metrics", {})
            extra.update({k: v for k, v in event["metadata"].items() if k in RESPONSE_FIELDS})
    for index, parts in tool_inputs.items():
        raw = "".join(parts)
        blocks[index]["toolUse"]["input"] = json.loads(raw) if raw else {}
    content = [blocks[i] for i in sorted(blocks)]
    converse = {
        "output": {"message": {"role": role, "content": content}},
        "stopReason": stop_reason,
        "usage": usage,
        "metrics": metrics,
        **extra,
    }
    return converse, first_token_at


def _add_reasoning(block: dict[str, Any], delta: dict[str, Any]) -> None:
    reasoning = block["reasoningContent"]
    if "redactedContent" in delta:
        reasoning["redactedContent"] = reasoning.get("redactedContent", b"") + delta["redactedContent"]
        return
    text = reasoning.setdefault("reasoningText", {"text": ""})
    if "text" in delta:
        text["text"] += delta["text"]
    if "signature" in delta:
        text["signature"] = text.get("signature", "") + delta["signature"]
