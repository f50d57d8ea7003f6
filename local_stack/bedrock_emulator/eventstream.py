"""AWS event-stream message encoder (``application/vnd.amazon.eventstream``).

botocore ships only the decoder (``botocore.eventstream``), so the emulator encodes here. Wire format:
prelude = total length (uint32) + headers length (uint32) + CRC32 of those 8 bytes; then the headers,
the payload and a CRC32 of everything before it. All integers are big-endian.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING_HEADER_TYPE = 7  # botocore.eventstream header type for UTF-8 strings
_PRELUDE_LENGTH = 12
_MESSAGE_CRC_LENGTH = 4


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Headers as name length (1 byte), name, type 7 (string), value length (2 bytes), value."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 65535:
            raise ValueError(f"event-stream header too long: {name}")
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", _STRING_HEADER_TYPE, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with both CRC32 checksums."""
    raw_headers = encode_headers(headers)
    total_length = _PRELUDE_LENGTH + len(raw_headers) + len(payload) + _MESSAGE_CRC_LENGTH
    prelude = struct.pack("!II", total_length, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw_headers + payload
    return body + struct.pack("!I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """A modelled event (``messageStart``, ``contentBlockDelta``, ...) with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(payload, separators=(",", ":")).encode("utf-8"))


def encode_exception(exception_type: str, message: str) -> bytes:
    """A modelled in-stream error (e.g. ``throttlingException``) as botocore's parser expects it."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode("utf-8"))
