"""Offline token counting with tiktoken's cl100k_base (pre-flight estimates only).

Bedrock's own ``usage`` is the source of truth for tokens and cost; this module estimates before a call
(budgets, context checks) and gives the local Bedrock emulator its token counts. tiktoken downloads its
encodings at first use, which fails in a VPC without NAT and offline, so the official encoding file is
vendored under ``data/tiktoken_cache/`` (named by the sha1 of its URL, the way tiktoken's cache names it)
and loaded through tiktoken's own constructor with no network access.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tiktoken

ENCODING_NAME = "cl100k_base"
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
ENCODING_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CACHE_DIR = Path(__file__).resolve().parent / "data" / "tiktoken_cache"
ENCODING_FILE = CACHE_DIR / hashlib.sha1(ENCODING_URL.encode()).hexdigest()

# tiktoken reads TIKTOKEN_CACHE_DIR at call time; the lock keeps the temporary override to one loader.
_ENV_LOCK = threading.Lock()

Segment = str | None
"""A piece of a Converse request in prompt order: its text, or None where a cachePoint block stands."""


class TokenizerDataError(RuntimeError):
    """The vendored encoding file is missing or corrupted (never silently downloaded instead)."""


def _verify_vendored_file() -> None:
    try:
        data = ENCODING_FILE.read_bytes()
    except OSError as exc:
        raise TokenizerDataError(f"vendored encoding missing: {ENCODING_FILE}") from exc
    # Checked here because on a mismatch tiktoken would delete the file and try to download it.
    if hashlib.sha256(data).hexdigest() != ENCODING_SHA256:
        raise TokenizerDataError(f"vendored encoding {ENCODING_FILE} does not match sha256 {ENCODING_SHA256}")


@functools.cache
def encoding() -> tiktoken.Encoding:
    """The cl100k_base Encoding, built once per process on first use from the vendored file."""
    _verify_vendored_file()
    from tiktoken_ext import openai_public  # official pat_str and special tokens

    with _ENV_LOCK:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(CACHE_DIR)
        try:
            spec = openai_public.cl100k_base()
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(**spec)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in cl100k_base (special-token strings count as plain text)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _content_block_texts(block: Mapping[str, Any]) -> Iterator[Segment]:
    if "cachePoint" in block:
        yield None
    if text := block.get("text"):
        yield str(text)
    if tool_use := block.get("toolUse"):
        yield str(tool_use.get("name", ""))
        yield _json(tool_use.get("input", {}))
    if tool_result := block.get("toolResult"):
        for item in tool_result.get("content", []) or []:
            if "text" in item:
                yield str(item["text"])
            elif "json" in item:
                yield _json(item["json"])
    if reasoning_text := ((block.get("reasoningContent") or {}).get("reasoningText") or {}).get("text"):
        yield str(reasoning_text)
    if guard_text := ((block.get("guardContent") or {}).get("text") or {}).get("text"):
        yield str(guard_text)


def request_segments(converse_request: Mapping[str, Any]) -> list[Segment]:
    """Text pieces of a Converse request in prompt-cache order: tools, then system, then messages.

    Images, documents and other media are not counted (this is an estimate for text prompts).
    """
    segments: list[Segment] = []
    for tool in (converse_request.get("toolConfig") or {}).get("tools", []) or []:
        if "cachePoint" in tool:
            segments.append(None)
        if spec := tool.get("toolSpec"):
            segments.append(_json(spec))
    for block in converse_request.get("system", []) or []:
        segments.extend(_content_block_texts(block))
    for message in converse_request.get("messages", []) or []:
        for block in message.get("content", []) or []:
            segments.extend(_content_block_texts(block))
    return segments


def count_message_tokens(converse_request: Mapping[str, Any]) -> int:
    """Pre-flight input-token estimate of a Converse request (system, messages, tool specs).

    Takes the request body (``messages``, ``system``, ``toolConfig``; ``modelId`` etc. are ignored).
    """
    return sum(count_tokens(segment) for segment in request_segments(converse_request) if segment)
