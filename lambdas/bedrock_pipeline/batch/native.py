"""Converse requests to each model family's own InvokeModel body (what a Bedrock batch input record's
``modelInput`` is), and InvokeModel answers back to Converse's response shape.

A batch input line is ``{"recordId": ..., "modelInput": <the model's InvokeModel body>}``
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html); an output line adds
``modelOutput`` (that model's InvokeModel response body) or ``error``
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html). The parser makes
Converse requests, so a record runs in batch when its request converts here; `unsupported` says why
one does not. Bodies per family:

* Anthropic Claude: the Messages API (``anthropic_version`` "bedrock-2023-05-31", ``max_tokens``
  required, ``system`` a string, ``{"type": "text"}`` blocks; the answer's ``content``,
  ``stop_reason``, ``usage.input_tokens``/``output_tokens``):
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html
* Amazon Nova: the Converse-like native schema (``messages``, ``system``, ``inferenceConfig`` with
  ``maxTokens``/``temperature``/``topP``/``stopSequences``; the answer's ``output.message``,
  ``stopReason``, ``usage``): https://docs.aws.amazon.com/nova/latest/nova2-userguide/request-response-schema.html
* Meta Llama 3.x: one ``prompt`` in Llama 3's chat template, ``max_gen_len``, ``temperature``,
  ``top_p``; the answer's ``generation``, ``prompt_token_count``, ``generation_token_count``,
  ``stop_reason`` ("stop" or "length"):
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bedrock_pipeline.domain import ModelResponse
from bedrock_pipeline.pricing import PriceTable

Family = Literal["anthropic", "nova", "llama"]

ANTHROPIC_VERSION = "bedrock-2023-05-31"
# Anthropic's body requires max_tokens; Converse lets a request leave it to the model. A record that
# sets none gets this (Claude 3 Haiku's own output maximum, the smallest of the batch-capable Claudes).
DEFAULT_MAX_TOKENS = 4096

# Converse request members the conversion carries; any other member would be lost, so a request
# using one runs on demand (auto) or is a line error (batch).
_CARRIED = frozenset({"messages", "system", "inferenceConfig"})
# Batch inference does not support tool calling or structured output
# (https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference.html).
_NOT_IN_BATCH = {
    "toolConfig": "batch inference does not support tool calling",
    "outputConfig": "batch inference does not support structured output",
}

_ANTHROPIC_STOPS = {"end_turn": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}
_LLAMA_STOPS = {"stop": "end_turn", "length": "max_tokens"}


def family_of(model_id: str) -> Family | None:
    """The request format a model (or inference profile of it) takes; None for one not converted here."""
    base = PriceTable.base_model_id(model_id)
    if base.startswith("anthropic.claude"):
        return "anthropic"
    if base.startswith("amazon.nova"):
        return "nova"
    if base.startswith("meta.llama3"):
        return "llama"
    return None


def unsupported(request: Mapping[str, Any]) -> str | None:
    """Why a Converse request cannot become a batch record; None when it can."""
    for key, reason in _NOT_IN_BATCH.items():
        if key in request:
            return reason
    extra = sorted(set(request) - _CARRIED - set(_NOT_IN_BATCH))
    if extra:
        return f"{', '.join(extra)} cannot be carried into a batch record"
    for message in request.get("messages", []):
        for block in message.get("content", []):
            if set(block) != {"text"}:
                kinds = ", ".join(sorted(set(block) - {"text"})) or "empty"
                return f"only text content runs in batch here ({kinds} block in {message.get('role')})"
    for block in request.get("system", []) or []:
        if set(block) != {"text"}:
            return "only text system prompts run in batch here"
    return None


def to_model_input(family: Family, request: Mapping[str, Any]) -> dict[str, Any]:
    """The InvokeModel body of ``request`` for ``family`` (``unsupported(request)`` must be None)."""
    config = request.get("inferenceConfig") or {}
    system = "\n\n".join(block["text"] for block in request.get("system", []) or [])
    messages = [
        {"role": m["role"], "text": "".join(block["text"] for block in m["content"])}
        for m in request["messages"]
    ]
    if family == "anthropic":
        body: dict[str, Any] = {
            "anthropic_version": ANTHROPIC_VERSION,
            "max_tokens": config.get("maxTokens", DEFAULT_MAX_TOKENS),
            "messages": [
                {"role": m["role"], "content": [{"type": "text", "text": m["text"]}]} for m in messages
            ],
        }
        if system:
            body["system"] = system
        _copy(config, body, temperature="temperature", topP="top_p", stopSequences="stop_sequences")
        return body
    if family == "nova":
        body = {"messages": [dict(m) for m in request["messages"]]}
        if request.get("system"):
            body["system"] = [dict(block) for block in request["system"]]
        nova_config: dict[str, Any] = {}
        _copy(config, nova_config, maxTokens="maxTokens", temperature="temperature", topP="topP")
        _copy(config, nova_config, stopSequences="stopSequences")
        if nova_config:
            body["inferenceConfig"] = nova_config
        return body
    body = {"prompt": _llama_prompt(system, messages)}
    _copy(config, body, maxTokens="max_gen_len", temperature="temperature", topP="top_p")
    return body


def from_model_output(family: Family, output: Mapping[str, Any]) -> ModelResponse:
    """A batch record's ``modelOutput`` in Converse's shape. Latency is None: Bedrock measures none per
    batch record (the job's duration is on the parent run)."""
    if family == "anthropic":
        text = "".join(b.get("text", "") for b in output.get("content", []) if b.get("type") == "text")
        usage = output.get("usage") or {}
        tokens = (int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
        cache = {
            "cacheReadInputTokens": usage.get("cache_read_input_tokens"),
            "cacheWriteInputTokens": usage.get("cache_creation_input_tokens"),
        }
        stop = _ANTHROPIC_STOPS.get(str(output.get("stop_reason")), str(output.get("stop_reason")))
        return _response(text, stop, tokens, {k: int(v) for k, v in cache.items() if v})
    if family == "nova":
        message = (output.get("output") or {}).get("message") or {}
        text = "".join(b.get("text", "") for b in message.get("content", []))
        usage = output.get("usage") or {}
        tokens = (int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0)))
        cache = {k: int(usage[k]) for k in ("cacheReadInputTokens", "cacheWriteInputTokens") if usage.get(k)}
        return _response(text, str(output.get("stopReason", "end_turn")), tokens, cache)
    tokens = (int(output.get("prompt_token_count", 0)), int(output.get("generation_token_count", 0)))
    stop = _LLAMA_STOPS.get(str(output.get("stop_reason")), str(output.get("stop_reason")))
    return _response(str(output.get("generation", "")), stop, tokens, {})


def _response(text: str, stop: str, tokens: tuple[int, int], cache: dict[str, int]) -> ModelResponse:
    usage = {"inputTokens": tokens[0], "outputTokens": tokens[1], "totalTokens": sum(tokens), **cache}
    return ModelResponse(
        output_message={"role": "assistant", "content": [{"text": text}]},
        stop_reason=stop,
        usage=usage,
        latency_ms=None,
        wall_ms=None,
    )


def _llama_prompt(system: str, messages: list[dict[str, str]]) -> str:
    """Llama 3's chat template (the format Bedrock's Meta page shows for InvokeModel prompts)."""
    parts = ["<|begin_of_text|>"]
    turns = ([{"role": "system", "text": system}] if system else []) + messages
    for turn in turns:
        parts.append(f"<|start_header_id|>{turn['role']}<|end_header_id|>\n\n{turn['text']}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _copy(source: Mapping[str, Any], target: dict[str, Any], **names: str) -> None:
    for source_key, target_key in names.items():
        if source.get(source_key) is not None:
            target[target_key] = source[source_key]
