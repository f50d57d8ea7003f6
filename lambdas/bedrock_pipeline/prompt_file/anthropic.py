"""Anthropic Messages request bodies (``anthropic_version``, ``max_tokens``, ...) -> Converse.

Bedrock batch-inference files for Claude usually carry the model's native body; the pipeline only
calls Converse, so such a ``modelInput`` is converted here: text, ``tool_use``/``tool_result``
blocks, tools and tool_choice map to their Converse equivalents, ``cache_control`` becomes a
``cachePoint``, ``top_k``/``thinking``/``anthropic_beta`` go to ``additionalModelRequestFields``.
Images and documents are not converted (the Converse shape carries those). A body that cannot be
converted raises ``LineRejected`` with the reason.
"""

from __future__ import annotations

from typing import Any

from bedrock_pipeline.prompt_file.schema import LineRejected, ToolSpec, validate

_ANTHROPIC_ONLY_KEYS = frozenset(
    {
        "anthropic_version",
        "max_tokens",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
    }
)
_ANTHROPIC_EXTRA_FIELDS = ("top_k", "thinking", "anthropic_beta")
_ANTHROPIC_KEYS = frozenset(
    {"anthropic_version", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences"}
    | {"tools", "tool_choice", *_ANTHROPIC_EXTRA_FIELDS}
)


def is_anthropic(model_input: dict[str, Any]) -> bool:
    """Anthropic's shape, not Converse's: its own keys, a string system or content, or typed blocks."""
    if _ANTHROPIC_ONLY_KEYS & set(model_input) or isinstance(model_input.get("system"), str):
        return True
    messages = model_input.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            return True
        if isinstance(content, list) and any(
            isinstance(block, dict) and "type" in block for block in content
        ):
            return True
    return False


def from_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse request body for an Anthropic Messages body (``LineRejected`` if it has none)."""
    unknown = sorted(set(body) - _ANTHROPIC_KEYS)
    if unknown:
        raise LineRejected(
            f"Anthropic-style modelInput has keys that cannot be converted to Converse: {unknown}"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LineRejected('modelInput "messages" must be a non-empty list')
    request: dict[str, Any] = {"messages": [_anthropic_message(m) for m in messages]}
    system = body.get("system")
    if system is not None:
        request["system"] = _anthropic_blocks(system, "system")
    config = {
        "maxTokens": body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "topP": body.get("top_p"),
        "stopSequences": body.get("stop_sequences"),
    }
    if config := {k: v for k, v in config.items() if v is not None}:
        request["inferenceConfig"] = config
    extra = {key: body[key] for key in _ANTHROPIC_EXTRA_FIELDS if key in body}
    if extra:
        request["additionalModelRequestFields"] = extra
    if "tools" in body:
        request["toolConfig"] = _anthropic_tools(body["tools"], body.get("tool_choice"))
    elif "tool_choice" in body:
        raise LineRejected('modelInput "tool_choice" needs "tools"')
    return request


def _anthropic_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        raise LineRejected('each modelInput message must be {"role": ..., "content": ...}')
    return {"role": message["role"], "content": _anthropic_blocks(message["content"], "message")}


def _anthropic_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise LineRejected(f"modelInput {where} content must be a string or a list of blocks")
    blocks: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise LineRejected(f"modelInput {where} content blocks must be objects")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            blocks.append({"text": block["text"]})
        elif kind == "tool_use" and where == "message":
            if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
                raise LineRejected('modelInput tool_use blocks need string "id" and "name"')
            blocks.append(
                {
                    "toolUse": {
                        "toolUseId": block.get("id"),
                        "name": block.get("name"),
                        "input": block.get("input"),
                    }
                }
            )
        elif kind == "tool_result" and where == "message":
            if not isinstance(block.get("tool_use_id"), str):
                raise LineRejected('modelInput tool_result blocks need a string "tool_use_id"')
            result: dict[str, Any] = {
                "toolUseId": block.get("tool_use_id"),
                "content": _anthropic_blocks(block.get("content", ""), "tool_result"),
            }
            if block.get("is_error"):
                result["status"] = "error"
            blocks.append({"toolResult": result})
        elif "type" not in block and len(block) == 1 and isinstance(block.get("text"), str):
            blocks.append(block)  # already Converse-style
        else:
            raise LineRejected(
                f"modelInput {where} block of type {kind!r} cannot be converted; use the Converse shape"
            )
        if "cache_control" in block:
            blocks.append({"cachePoint": {"type": "default"}})
    return blocks


def _anthropic_tools(tools: Any, choice: Any) -> dict[str, Any]:
    if not isinstance(tools, list) or not tools:
        raise LineRejected('modelInput "tools" must be a non-empty list')
    specs = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("input_schema"), dict):
            raise LineRejected('each modelInput tool needs "name" and an "input_schema" object')
        spec = {"name": tool.get("name"), "inputSchema": {"json": tool["input_schema"]}}
        if tool.get("description"):
            spec["description"] = tool["description"]
        specs.append(validate(ToolSpec, spec, prefix="modelInput.tools").model_dump(exclude_none=True))
    config: dict[str, Any] = {"tools": [{"toolSpec": spec} for spec in specs]}
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind in ("auto", "any"):
            config["toolChoice"] = {kind: {}}
        elif kind == "tool" and isinstance(choice.get("name"), str):
            config["toolChoice"] = {"tool": {"name": choice["name"]}}
        else:
            raise LineRejected('modelInput "tool_choice" must be {"type": "auto" | "any" | "tool", ...}')
    return config
