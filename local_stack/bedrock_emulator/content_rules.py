"""Bedrock's documented rules on a Converse message's media, beyond what the service model declares.

API reference, Message.content: "You can include up to 20 images. Each image's size, height, and width
must be no more than 3.75 MB, 8000 px, and 8000 px"; "up to five documents. Each document's size must
be no more than 4.5 MB"; "If you include a ContentBlock with a document field in the array, you must
also include a ContentBlock with a text field"; "You can only include images and documents if the role
is user". Bedrock publishes no wording for these refusals: the messages below say the rule as the API
reference states it.

S3 links: only Amazon Nova models take an ``s3Location`` media source (User Guide, "Supported models
and model features", Amazon S3 links for multimedia). Another model answers ValidationException
"messages.0.content.0.document.source.type: Field required" (aws/aws-sdk-js-v3#7732,
strands-agents/harness-sdk#3647: 0-based, the model's own field names), which is what this answers.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from local_stack.bedrock_emulator.errors import BedrockError

MAX_IMAGES = 20
MAX_DOCUMENTS = 5
MAX_IMAGE_BYTES = int(3.75 * 1024 * 1024)
MAX_DOCUMENT_BYTES = int(4.5 * 1024 * 1024)
S3_LINK_FAMILIES = ("amazon.nova",)


def _invalid(message: str) -> BedrockError:
    return BedrockError("ValidationException", message)


def check_media(messages: list[dict[str, Any]], model_id: str) -> None:
    """Raise ValidationException for media Bedrock refuses in these (already shape-checked) messages."""
    images = documents = 0
    for m, message in enumerate(messages):
        content = message.get("content") or []
        kinds = {kind for block in content for kind in ("image", "document", "video") if kind in block}
        if kinds & {"image", "document"} and message.get("role") != "user":
            raise _invalid("You can only include images and documents if the role is user.")
        if "document" in kinds and not any("text" in block for block in content):
            raise _invalid(
                "If you include a ContentBlock with a document field in the array, you must also include "
                "a ContentBlock with a text field."
            )
        for c, block in enumerate(content):
            for kind in ("image", "document", "video"):
                media = block.get(kind)
                if not isinstance(media, dict):
                    continue
                source = media.get("source") or {}
                if "s3Location" in source and not model_id.startswith(S3_LINK_FAMILIES):
                    raise _invalid(f"messages.{m}.content.{c}.{kind}.source.type: Field required")
                size = _decoded_size(source.get("bytes"))
                if kind == "image":
                    images += 1
                    if size > MAX_IMAGE_BYTES:
                        raise _invalid("Each image's size must be no more than 3.75 MB.")
                elif kind == "document":
                    documents += 1
                    if size > MAX_DOCUMENT_BYTES:
                        raise _invalid("Each document's size must be no more than 4.5 MB.")
    if images > MAX_IMAGES:
        raise _invalid(f"You can include up to {MAX_IMAGES} images.")
    if documents > MAX_DOCUMENTS:
        raise _invalid(f"You can include up to {MAX_DOCUMENTS} documents.")


def _decoded_size(raw: Any) -> int:
    if not isinstance(raw, str):
        return 0
    try:
        return len(base64.b64decode(raw, validate=True))
    except binascii.Error:
        return 0
