"""The emulated model: a deterministic reply for (server seed, model id, request body).

Replies are seeded random words, except for four behaviours tests and evaluations lean on:
- tool use: with ``toolChoice`` any/tool, or auto when the last user text names a tool, the reply is a
  ``toolUse`` block whose input fills the schema's required properties (stopReason ``tool_use``);
- a turn carrying ``toolResult`` blocks is answered with text quoting the result (``end_turn``);
- simple arithmetic ("What is 17 + 25?") is answered "The answer is 42." with probability ``accuracy``,
  otherwise with a number off by 1-10 (an imperfect model for evaluation pipelines to score);
- a judge prompt (judge.py) is answered with a deterministic ``VERDICT: yes|no`` and a reason.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from bedrock_pipeline.tokenizer import count_tokens, encoding
from local_stack.bedrock_emulator.judge import judge_reply

_VOCABULARY = (
    "the model answers with care and the data shows a clear pattern across every sample in this batch "
    "results vary by prompt length while latency stays within budget for most requests evaluation scores "
    "improve when context is relevant and concise a careful reader will notice small differences between "
    "runs yet the overall trend remains stable cost tracking helps teams compare providers fairly over time "
    "observability means knowing what happened why it happened and how often it happens again throughput "
    "depends on concurrency limits retries and quotas good prompts state the task constraints and format "
    "clearly so that outputs can be checked automatically against references"
)
_WORDS = tuple(_VOCABULARY.split(" "))
_ARITHMETIC = re.compile(
    r"(-?\d+)\s*(\+|-|\*|\u00d7|\bx\b|\btimes\b|\bplus\b|\bminus\b)\s*(-?\d+)", re.IGNORECASE
)
_OPERATORS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "\u00d7": "*", "x": "*", "times": "*"}


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str
    output_tokens: int
    text_chunks: list[str] = field(default_factory=list)  # for ConverseStream; joined == the text block


# Limits only cut the reply short: a capped reply is a prefix of the uncapped one, as with a real model.
_CUT_ONLY = ("maxTokens", "stopSequences")


def request_rng(seed: int, model_id: str, body: dict[str, Any]) -> random.Random:
    """The RNG of one reply: seeded by (server seed, base model id, request body less cut-only limits)."""
    inference = {k: v for k, v in (body.get("inferenceConfig") or {}).items() if k not in _CUT_ONLY}
    canonical = json.dumps(
        {**body, "inferenceConfig": inference}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    digest = hashlib.sha256(f"{seed}\x00{model_id}\x00{canonical}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _texts(message: dict[str, Any]) -> str:
    return " ".join(str(block["text"]) for block in message.get("content", []) if "text" in block)


def _tool_specs(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = (body.get("toolConfig") or {}).get("tools") or []
    return [tool["toolSpec"] for tool in tools if "toolSpec" in tool]


def _choose_tool(body: dict[str, Any], user_text: str) -> dict[str, Any] | None:
    specs = _tool_specs(body)
    if not specs:
        return None
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {"auto": {}}
    lowered = user_text.lower()
    mentioned = [
        s for s in specs if s["name"].lower() in lowered or s["name"].replace("_", " ").lower() in lowered
    ]
    if "tool" in choice:
        return next(s for s in specs if s["name"] == choice["tool"]["name"])
    if "any" in choice:
        return mentioned[0] if mentioned else specs[0]
    return mentioned[0] if mentioned else None


def sample_from_schema(schema: dict[str, Any], name: str = "value") -> Any:
    """A deterministic value of a JSON schema: enums/consts/defaults first, else a value of its type."""
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "string":
        return {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "email": "user@example.com"}.get(
            schema.get("format", ""), f"sample {name.replace('_', ' ')}"
        )
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "array":
        item = sample_from_schema(schema.get("items") or {}, name)
        return [item] * max(1, int(schema.get("minItems", 1)))
    if kind == "object":
        properties = schema.get("properties") or {}
        return {key: sample_from_schema(properties.get(key) or {}, key) for key in schema.get("required", [])}
    return None


def _tool_result_text(body: dict[str, Any], user_message: dict[str, Any]) -> str | None:
    results = [block["toolResult"] for block in user_message.get("content", []) if "toolResult" in block]
    if not results:
        return None
    names: dict[str, str] = {}
    for message in body.get("messages", []):
        for block in message.get("content", []):
            if "toolUse" in block:
                names[block["toolUse"].get("toolUseId", "")] = block["toolUse"].get("name", "tool")
    parts = []
    for result in results:
        pieces = [
            str(item["text"]) if "text" in item else json.dumps(item.get("json"), sort_keys=True)
            for item in result.get("content", [])
            if "text" in item or "json" in item
        ]
        name = names.get(result.get("toolUseId", ""), "tool")
        verb = "reported an error" if result.get("status") == "error" else "returned"
        parts.append(f"The {name} tool {verb}: {' '.join(pieces)[:400]}.")
    return " ".join(parts) + " Based on that result, this is the final answer."


def _arithmetic_answer(text: str, rng: random.Random, accuracy: float) -> str | None:
    match = _ARITHMETIC.search(text)
    if not match:
        return None
    left, right = int(match.group(1)), int(match.group(3))
    operator = _OPERATORS[match.group(2).lower()]
    correct = left + right if operator == "+" else left - right if operator == "-" else left * right
    if rng.random() < accuracy:
        return f"The answer is {correct}."
    return f"The answer is {correct + rng.choice((-1, 1)) * rng.randint(1, 10)}."


def _random_text(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 5)):
        words = rng.choices(_WORDS, k=rng.randint(6, 14))
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def _chunks(text: str, words_per_chunk: int = 3) -> list[str]:
    pieces = re.findall(r"\s*\S+|\s+$", text)
    chunks = ["".join(pieces[i : i + words_per_chunk]) for i in range(0, len(pieces), words_per_chunk)]
    return chunks or [text]


def _limit(text: str, stop_sequences: list[str], max_tokens: int | None) -> tuple[str, str, int]:
    """Stop sequences, then the token cap (whichever the model reaches first): text, reason, tokens."""
    stop_reason = "end_turn"
    cuts = [text.find(s) for s in stop_sequences if s in text]
    if cuts:
        text, stop_reason = text[: min(cuts)], "stop_sequence"
    tokens = encoding().encode_ordinary(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        return encoding().decode(tokens[:max_tokens]), "max_tokens", max_tokens
    return text, stop_reason, len(tokens)


def respond(body: dict[str, Any], model_id: str, seed: int, accuracy: float) -> Reply:
    """The reply to a validated Converse request."""
    rng = request_rng(seed, model_id, body)
    messages = body["messages"]
    last = messages[-1]
    user_message = last if last["role"] == "user" else {"content": []}
    user_text = _texts(user_message)
    inference = body.get("inferenceConfig") or {}

    result_text = _tool_result_text(body, user_message)
    tool = None if result_text is not None else _choose_tool(body, user_text)
    if tool is not None:
        tool_input = sample_from_schema((tool.get("inputSchema") or {}).get("json") or {})
        tool_use_id = "tooluse_" + "".join(
            rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=22)
        )
        block = {"toolUse": {"toolUseId": tool_use_id, "name": tool["name"], "input": tool_input}}
        output_tokens = count_tokens(tool["name"]) + count_tokens(json.dumps(tool_input))
        return Reply([block], "tool_use", output_tokens)

    text = (
        result_text
        or judge_reply(user_text)
        or _arithmetic_answer(user_text, rng, accuracy)
        or _random_text(rng)
    )
    text, stop_reason, output_tokens = _limit(
        text, inference.get("stopSequences") or [], inference.get("maxTokens")
    )
    return Reply([{"text": text}], stop_reason, output_tokens, _chunks(text))
