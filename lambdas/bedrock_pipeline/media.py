"""Media blocks (image, document, video, audio) of a Converse request, and their ``source.bytes``.

JSON cannot hold raw bytes, so a Bedrock batch-inference file carries ``source.bytes`` as base64, and
so does everything the pipeline keeps as JSON: the work item on the queue, its identity, the results
line's ``modelInput`` (Bedrock's batch output echoes the input as written) and the record span's
inputs (where MLflow 3.17+ turns a Converse image's base64 into a trace attachment). boto3 instead wants raw bytes for these blob members and base64-encodes
them itself: a base64 string passed through is encoded twice and the model gets garbage. So the
request stays base64 everywhere and is decoded once, by the Bedrock adapter right before the call
(``decoded_for_boto3``); the prompt-file parser checks the base64 so that decode cannot fail.

Plain Python with no dependencies: the parser (ingest) and the adapter (runner) both import it.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Content blocks whose source may be bytes (botocore's bedrock-runtime model: ContentBlock and
# ToolResultContentBlock members ImageBlock, DocumentBlock, VideoBlock, AudioBlock).
MEDIA_KINDS = ("image", "document", "video", "audio")
# ImageBlock "format" values (API reference, ImageBlock: png | jpeg | gif | webp) and the bytes each
# file format starts with; Bedrock refuses an image whose bytes are not its format ("The provided image
# does not match the specified image format.", boto/boto3#4415).
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),  # then 4 bytes of size and b"WEBP": checked in is_image_of
}


@dataclass(frozen=True)
class MediaSource:
    """One media block's source, and where it is, in words a person finds it by (1-based)."""

    where: str  # "message 1 content 2", "message 2 content 1 toolResult content 1", "system 1"
    kind: str  # "image", "document", "video", "audio" ("image" for a guardContent image)
    block: Mapping[str, Any]  # the image/document/... block itself (its "format" is here)
    source: dict[str, Any]


class MediaBytes(bytes):
    """Raw media bytes for botocore, printed as a placeholder.

    MLflow's Bedrock autolog records the call's kwargs as the model span's inputs and serializes a
    value JSON cannot hold with ``str()``: plain bytes would put a ``b'\\x89PNG...'`` repr, up to 4x
    the media's size, in every trace. The record span already has the media, as base64.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"

    __str__ = __repr__


def media_sources(request: Mapping[str, Any]) -> Iterator[MediaSource]:
    """Every media source in a Converse request body: message content, tool results, guard content."""
    for m, message in enumerate(_dicts(request.get("messages")), start=1):
        for c, block in enumerate(_dicts(message.get("content")), start=1):
            where = f"message {m} content {c}"
            yield from _block_sources(block, where)
            result = block.get("toolResult")
            if isinstance(result, dict):
                for r, inner in enumerate(_dicts(result.get("content")), start=1):
                    yield from _block_sources(inner, f"{where} toolResult content {r}")
    for s, block in enumerate(_dicts(request.get("system")), start=1):
        yield from _block_sources(block, f"system {s}")


def decode_base64(text: str) -> bytes:
    """Standard base64 (RFC 4648, padded, no line breaks), as JSON carries Bedrock's blobs; ValueError
    otherwise (a lenient decode would turn a typo into garbage sent to the model)."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def is_image_of(image_format: str, data: bytes) -> bool:
    """Whether ``data`` starts as an image of ``image_format`` (one of IMAGE_SIGNATURES) does."""
    if image_format == "webp" and data[8:12] != b"WEBP":
        return False
    return data.startswith(IMAGE_SIGNATURES.get(image_format, ()))


def decoded_for_boto3(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request with every base64 ``source.bytes`` decoded to raw bytes for botocore.

    The request itself is not changed (a work item is frozen, and its base64 is what gets recorded);
    one without base64 media is returned as it is, without a copy.
    """
    if not any(isinstance(s.source.get("bytes"), str) for s in media_sources(request)):
        return request
    decoded = copy.deepcopy(dict(request))
    for media in media_sources(decoded):
        value = media.source.get("bytes")
        if isinstance(value, str):
            media.source["bytes"] = MediaBytes(decode_base64(value))
    return decoded


def _block_sources(block: Mapping[str, Any], where: str) -> Iterator[MediaSource]:
    guard = block.get("guardContent")
    candidates = [(kind, block.get(kind)) for kind in MEDIA_KINDS]
    if isinstance(guard, dict):  # a guardrail's image (GuardrailConverseImageBlock) has bytes too
        candidates.append(("image", guard.get("image")))
    for kind, media in candidates:
        if isinstance(media, dict) and isinstance(media.get("source"), dict):
            yield MediaSource(where, kind, media, media["source"])


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
