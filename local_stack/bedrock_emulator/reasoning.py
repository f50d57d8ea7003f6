"""Extended thinking as Bedrock serves it for Anthropic models: checks, the reasoning block, its stream.

The request turns it on with ``additionalModelRequestFields.thinking`` ``{"type": "enabled",
"budget_tokens": N}`` (user guide, claude-messages-extended-thinking.html, which lists the models).
Refusals carry the wording Bedrock relays from the model (seen in client reports: LibreChat#8346 for
the minimum budget, vercel/ai#7927 for max_tokens). The answer starts with a reasoningContent block
(``reasoningText`` with a ``signature``); its tokens are counted in ``outputTokens``, as Bedrock bills
thinking (Converse's TokenUsage has no separate reasoning count). A prompt with Anthropic's test
string for redacted thinking (REDACTED_TRIGGER, from Anthropic's extended-thinking docs, "Thinking
redaction") adds a ``redactedContent`` block, base64 on the wire as every blob.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

from bedrock_pipeline.tokenizer import encoding
from local_stack.bedrock_emulator.catalog import ModelInfo
from local_stack.bedrock_emulator.errors import BedrockError

THINKING_MODELS = (
    "anthropic.claude-3-7-sonnet",
    "anthropic.claude-sonnet-4",
    "anthropic.claude-opus-4",
    "anthropic.claude-haiku-4-5",
)
MIN_BUDGET = 1024
REDACTED_TRIGGER = "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB"
_PREFIX = "The model returned the following errors: "
_STEPS = (
    "First, restate what is being asked.",
    "Next, list what is known and what is missing.",
    "Then check each step against the question before answering.",
    "Finally, keep the answer short and state it plainly.",
)


def budget(body: dict[str, Any], model: ModelInfo) -> int | None:
    """The thinking budget of a request to a thinking model (None: no thinking); refuses what Bedrock refuses."""
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    if not model.model_id.startswith(THINKING_MODELS):
        return None  # the emulator does not model what other providers answer to Anthropic's field
    tokens = thinking.get("budget_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < MIN_BUDGET:
        raise BedrockError(
            "ValidationException",
            f"{_PREFIX}thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET}",
        )
    inference = body.get("inferenceConfig") or {}
    max_tokens = inference.get("maxTokens")
    if max_tokens is not None and max_tokens <= tokens:
        raise BedrockError(
            "ValidationException",
            f"{_PREFIX}`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking"
            "#max-tokens-and-context-window-size",
        )
    if inference.get("temperature") not in (None, 1):
        raise BedrockError(
            "ValidationException",
            f"{_PREFIX}`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            "documentation at https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking"
            "#important-considerations-when-using-extended-thinking",
        )
    return tokens


def blocks(rng: random.Random, tokens_budget: int, user_text: str) -> tuple[list[dict[str, Any]], int]:
    """The reasoningContent blocks of an answer and their tokens (within the budget)."""
    thought, tokens = _text_block(rng, tokens_budget)
    if REDACTED_TRIGGER not in user_text:
        return [thought], tokens
    redacted = hashlib.sha256(user_text.encode()).digest() * 4
    extra = min(len(redacted) // 4, max(tokens_budget - tokens, 0))
    return [
        thought,
        {"reasoningContent": {"redactedContent": base64.b64encode(redacted).decode()}},
    ], tokens + extra


def _text_block(rng: random.Random, tokens_budget: int) -> tuple[dict[str, Any], int]:
    """A reasoningText block (deterministic per request) and its token count (within the budget)."""
    steps = list(_STEPS)
    rng.shuffle(steps[1:3])
    text = " ".join(steps)
    ids = encoding().encode_ordinary(text)[:tokens_budget]
    text = encoding().decode(ids)
    signature = base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()
    return {"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}}, len(ids)


def stream_deltas(reasoning: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """ConverseStream deltas of a reasoning block: its text in pieces, then the signature (as Bedrock
    sends it, in a delta of its own), or the redacted bytes in one delta; each with the generated text
    it paces."""
    if "redactedContent" in reasoning["reasoningContent"]:
        return [
            ({"reasoningContent": {"redactedContent": reasoning["reasoningContent"]["redactedContent"]}}, "")
        ]
    text_block = reasoning["reasoningContent"]["reasoningText"]
    words = text_block["text"].split(" ")
    pieces = [
        " ".join(words[i : i + 4]) + (" " if i + 4 < len(words) else "") for i in range(0, len(words), 4)
    ]
    deltas = [({"reasoningContent": {"text": piece}}, piece) for piece in pieces if piece]
    deltas.append(({"reasoningContent": {"signature": text_block["signature"]}}, ""))
    return deltas
