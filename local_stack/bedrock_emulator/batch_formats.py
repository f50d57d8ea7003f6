"""Batch inference records in each model family's native InvokeModel format, to and from Converse.

A batch job's ``modelInput`` is the model's InvokeModel request body and its ``modelOutput`` the
InvokeModel response body ("View the results of a batch inference job", Bedrock user guide,
batch-inference-results.html). The emulator answers a record by converting its body to the Converse
request it means, answering that as Converse would (``model.respond``, same reply and tokens), and
writing the reply back in the family's response shape:

- Anthropic Messages (model-parameters-anthropic-claude-messages): ``anthropic_version``,
  ``max_tokens``, ``messages`` -> ``{"id", "type": "message", "role", "model", "content": [{"type":
  "text", ...}|{"type": "tool_use", ...}], "stop_reason", "stop_sequence", "usage": {"input_tokens",
  "output_tokens"}}``; the body is converted by the pipeline's own converter
  (``bedrock_pipeline.prompt_file.anthropic.from_anthropic``).
- Amazon Nova (Nova user guide, complete-request-schema-response): ``schemaVersion`` "messages-v1",
  ``system``/``messages`` as Converse, ``inferenceConfig`` (``max_new_tokens`` or ``maxTokens``,
  ``top_p``/``topP``, ``top_k``/``topK``, ``stopSequences``) -> ``{"output": {"message": ...},
  "stopReason", "usage": {"inputTokens", "outputTokens", "totalTokens"}}``.
- Meta Llama (model-parameters-meta): ``prompt`` (Llama 3 chat template), ``max_gen_len``,
  ``temperature``, ``top_p`` -> ``{"generation", "prompt_token_count", "generation_token_count",
  "stop_reason": "stop"|"length"}``. The template is parsed back into messages so the reply is the one
  Converse gives for the same conversation; a prompt without the template is one user message.
- A job of ``modelInvocationType`` Converse: ``modelInput`` is a Converse request, ``modelOutput`` the
  Converse response body.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from bedrock_pipeline.prompt_file.anthropic import from_anthropic
from bedrock_pipeline.prompt_file.schema import LineRejected
from local_stack.bedrock_emulator.model import Reply

FAMILIES = ("anthropic", "nova", "llama", "converse")  # "converse": a job of modelInvocationType Converse
_LLAMA_TURN = re.compile(
    r"<\|start_header_id\|>(?P<role>system|user|assistant)<\|end_header_id\|>\n\n(?P<text>.*?)<\|eot_id\|>",
    re.DOTALL,
)


class RecordError(ValueError):
    """A record the model cannot answer: written as an error record (errorCode 400) with this message."""


def family(model_id: str) -> str | None:
    """The native format of a base model id, or None when the emulator has no batch format for it."""
    if model_id.startswith("anthropic.claude"):
        return "anthropic"
    if model_id.startswith("amazon.nova"):
        return "nova"
    if model_id.startswith("meta.llama"):
        return "llama"
    return None


def to_converse(family_name: str, model_input: Any) -> dict[str, Any]:
    """The Converse request a native InvokeModel body means (``RecordError`` when it is not one)."""
    if not isinstance(model_input, dict):
        raise RecordError("modelInput must be a JSON object")
    if family_name == "anthropic":
        if "anthropic_version" not in model_input or "max_tokens" not in model_input:
            raise RecordError("Malformed input request: anthropic_version and max_tokens are required")
        try:
            return from_anthropic(model_input)
        except LineRejected as rejected:
            raise RecordError(f"Malformed input request: {rejected}") from None
    if family_name == "nova":
        return _nova_to_converse(model_input)
    if family_name == "converse":
        return model_input  # validated as Converse requests are
    if family_name == "llama":
        return _llama_to_converse(model_input)
    raise RecordError(f"no batch format for model family {family_name}")


def _nova_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("Malformed input request: messages must be a non-empty list")
    request: dict[str, Any] = {"messages": messages}
    if "system" in body:
        request["system"] = body["system"]
    if "toolConfig" in body:
        request["toolConfig"] = body["toolConfig"]
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, dict):
        raise RecordError("Malformed input request: inferenceConfig must be an object")
    converse_config = {
        "maxTokens": config.get("maxTokens", config.get("max_new_tokens")),
        "temperature": config.get("temperature"),
        "topP": config.get("topP", config.get("top_p")),
        "stopSequences": config.get("stopSequences"),
    }
    if converse_config := {k: v for k, v in converse_config.items() if v is not None}:
        request["inferenceConfig"] = converse_config
    return request


def _llama_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RecordError("Malformed input request: prompt must be a non-empty string")
    turns = [(m.group("role"), m.group("text")) for m in _LLAMA_TURN.finditer(prompt)]
    system = [{"text": text} for role, text in turns if role == "system"]
    messages = [{"role": role, "content": [{"text": text}]} for role, text in turns if role != "system"]
    if not messages:
        messages = [{"role": "user", "content": [{"text": prompt}]}]
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    config = {
        "maxTokens": body.get("max_gen_len"),
        "temperature": body.get("temperature"),
        "topP": body.get("top_p"),
    }
    if config := {k: v for k, v in config.items() if v is not None}:
        request["inferenceConfig"] = config
    return request


def to_native(
    family_name: str, model_id: str, reply: Reply, usage: dict[str, int], request: dict[str, Any]
) -> dict[str, Any]:
    """The InvokeModel response body of ``family_name`` for a Converse reply and its usage."""
    text = "".join(str(block["text"]) for block in reply.content if "text" in block)
    if family_name == "anthropic":
        return _anthropic_output(model_id, reply, usage, request)
    if family_name == "converse":  # "the format matches the response body of the Converse API"
        return {
            "output": {"message": {"role": "assistant", "content": reply.content}},
            "stopReason": reply.stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 0},
        }
    if family_name == "nova":
        return {
            "output": {"message": {"role": "assistant", "content": reply.content}},
            "stopReason": reply.stop_reason,
            "usage": {
                "inputTokens": usage["inputTokens"],
                "outputTokens": usage["outputTokens"],
                "totalTokens": usage["totalTokens"],
            },
        }
    return {
        "generation": text,
        "prompt_token_count": usage["inputTokens"],
        "generation_token_count": usage["outputTokens"],
        "stop_reason": "length" if reply.stop_reason == "max_tokens" else "stop",
    }


def _anthropic_output(
    model_id: str, reply: Reply, usage: dict[str, int], request: dict[str, Any]
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in reply.content:
        if "toolUse" in block:
            tool = block["toolUse"]
            content.append(
                {"type": "tool_use", "id": tool["toolUseId"], "name": tool["name"], "input": tool["input"]}
            )
        else:
            content.append({"type": "text", "text": block["text"]})
    stop_sequence = None
    if reply.stop_reason == "stop_sequence":
        stop_sequence = ((request.get("inferenceConfig") or {}).get("stopSequences") or [None])[0]
    native_usage = {"input_tokens": usage["inputTokens"], "output_tokens": usage["outputTokens"]}
    if "cacheReadInputTokens" in usage:
        native_usage["cache_read_input_tokens"] = usage["cacheReadInputTokens"]
        native_usage["cache_creation_input_tokens"] = usage["cacheWriteInputTokens"]
    digest = hashlib.sha256(repr(reply.content).encode()).hexdigest()[:24]
    return {
        "id": f"msg_bdrk_{digest}",
        "type": "message",
        "role": "assistant",
        "model": model_id.removeprefix("anthropic.").rsplit("-v", 1)[0],
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": stop_sequence,
        "usage": native_usage,
    }
