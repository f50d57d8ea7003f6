"""Request checks Bedrock performs server-side, with messages modelled on the real service's wording."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from local_stack.bedrock_emulator.catalog import ModelInfo
from local_stack.bedrock_emulator.content_rules import check_media
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.shape_check import check_request

_START_WITH_USER = (
    "A conversation must start with a user message. "
    "Try again with a conversation that starts with a user message."
)


# ImageBlock formats (API reference, ImageBlock: png | jpeg | gif | webp) and how each file starts.
# Kept apart from the pipeline's own table on purpose: the emulator stands in for the service.
_IMAGE_MAGIC = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),  # and b"WEBP" at offset 8
}
# What Converse answers when an image's bytes are not its format (boto/boto3#4415); a base64 string
# passed to boto3 as bytes is encoded twice and fails this way too.
_IMAGE_MISMATCH = (
    "The model returned the following errors: The provided image does not match the specified image format."
)


def _invalid(message: str) -> BedrockError:
    return BedrockError("ValidationException", message)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"Malformed input request: {exc}, please reformat your input and try again.") from exc
    if not isinstance(body, dict):
        raise _invalid(
            "Malformed input request: expected a JSON object, please reformat your input and try again."
        )
    return body


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for m in messages for block in m["content"])


def validate_converse(body: dict[str, Any], model: ModelInfo, *, operation: str = "Converse") -> None:
    """Raise ValidationException for a request real Bedrock would reject: first what botocore's
    service model declares (shape_check), then Bedrock's own rules."""
    check_request("bedrock-runtime", operation, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(_START_WITH_USER)
    previous_role = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{index}.role must be one of [user, assistant].")
        content = message.get("content")
        if not isinstance(content, list) or not content or not all(isinstance(b, dict) for b in content):
            raise _invalid(
                f"The content field in the Message object at messages.{index} is empty. "
                "Add a ContentBlock object to the content field and try again."
            )
        if index == 0 and message["role"] != "user":
            raise _invalid(_START_WITH_USER)
        if message["role"] == previous_role:
            raise _invalid(
                "A conversation must alternate between user and assistant roles. "
                "Make sure the conversation alternates between user and assistant roles and try again."
            )
        previous_role = message["role"]
    for index, block in enumerate(body.get("system") or []):
        if not isinstance(block, dict) or not ({"text", "cachePoint", "guardContent"} & set(block)):
            raise _invalid(f"system.{index} must contain text, guardContent or cachePoint.")
    for index, message in enumerate(messages):
        for position, block in enumerate(message["content"]):
            _validate_image(block.get("image"), f"messages.{index + 1}.member.content.{position + 1}")
    check_media(messages, model.model_id)
    _validate_inference_config(body.get("inferenceConfig") or {}, model)
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        _validate_tool_config(tool_config)
    elif _has_tool_blocks(messages):
        raise _invalid(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )


def _validate_image(image: Any, location: str) -> None:
    """An image block as Bedrock checks it: a known format, and bytes (base64 on the wire, as botocore
    sends a blob) that decode once to an image of that format."""
    if not isinstance(image, dict):
        return
    image_format = image.get("format")
    if image_format not in _IMAGE_MAGIC:
        raise _invalid(
            f"1 validation error detected: Value '{image_format}' at '{location}.member.image.format' "
            f"failed to satisfy constraint: Member must satisfy enum value set: [{', '.join(_IMAGE_MAGIC)}]"
        )
    source = image.get("source")
    raw = source.get("bytes") if isinstance(source, dict) else None
    if raw is None:
        return  # an s3Location: not fetched here
    try:
        data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
    except binascii.Error:
        data = b""
    if not data.startswith(_IMAGE_MAGIC[image_format]) or (image_format == "webp" and data[8:12] != b"WEBP"):
        raise _invalid(_IMAGE_MISMATCH)


def _validate_inference_config(config: Any, model: ModelInfo) -> None:
    if not isinstance(config, dict):
        raise _invalid("inferenceConfig must be an object.")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("The maximum tokens you requested must be at least 1.")
        if max_tokens > model.max_output_tokens:
            raise _invalid(
                f"The maximum tokens you requested exceeds the model limit of {model.max_output_tokens}. "
                "Try again with a maximum tokens value that is lower than the model limit."
            )
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
        ):
            raise _invalid(f"inferenceConfig.{name} must be between 0 and 1.")
    stops = config.get("stopSequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
    ):
        raise _invalid("inferenceConfig.stopSequences must be a list of non-empty strings.")


def _validate_tool_config(tool_config: Any) -> None:
    tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
    if not isinstance(tools, list) or not tools:
        raise _invalid("The toolConfig field must contain at least one tool.")
    names = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"toolConfig.tools.{index} must be an object.")
        if spec := tool.get("toolSpec"):
            if not spec.get("name") or not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
                raise _invalid(
                    f"toolConfig.tools.{index}.toolSpec needs a name and an inputSchema.json object."
                )
            names.append(spec["name"])
    choice = tool_config.get("toolChoice") or {}
    if "tool" in choice and choice["tool"].get("name") not in names:
        raise _invalid(
            f"The tool {choice['tool'].get('name')!r} in toolChoice is not defined in toolConfig.tools."
        )
