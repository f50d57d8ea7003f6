"""The Bedrock adapter on a scripted bedrock-runtime client: time to first token, media bytes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from botocore.hooks import HierarchicalEmitter

from bedrock_pipeline.bedrock import BedrockGateway
from bedrock_pipeline.domain import ModelResponse
from tests.images import b64, png

MODEL = "amazon.nova-lite-v1:0"
START = {"messageStart": {"role": "assistant"}}
STOP = {"messageStop": {"stopReason": "end_turn"}}
METADATA = {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {}}}
Script = list[tuple[float, dict[str, Any]]]  # (seconds to wait, then the event)


def _delta(**delta: Any) -> dict[str, Any]:
    return {"contentBlockDelta": {"contentBlockIndex": 0, "delta": delta}}


class ScriptedClient:
    """Plays events with pauses; ``backoff`` is time spent before the last attempt is sent (a throttled
    first attempt and botocore's retry delay), which botocore spends inside ``converse_stream``."""

    def __init__(self, script: Script, backoff: float = 0.0) -> None:
        self.meta = SimpleNamespace(events=HierarchicalEmitter())
        self.script = script
        self.backoff = backoff
        self.calls: list[dict[str, Any]] = []

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        self.meta.events.emit("before-send.bedrock-runtime.ConverseStream", request=None)
        time.sleep(self.backoff)
        if self.backoff:  # the retry is the attempt that is answered
            self.meta.events.emit("before-send.bedrock-runtime.ConverseStream", request=None)
        return {"stream": self._events()}

    def converse(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        message = {"role": "assistant", "content": [{"text": "ok"}]}
        return {"output": {"message": message}, "stopReason": "end_turn", "usage": {}, "metrics": {}}

    def _events(self) -> Iterator[dict[str, Any]]:
        for pause, event in self.script:
            time.sleep(pause)
            yield event


def _invoke(client: ScriptedClient, *, stream: bool = True) -> ModelResponse:
    request = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    return BedrockGateway(client).invoke(MODEL, request, stream=stream)


def test_time_to_first_token_ends_at_the_first_text_delta_not_at_the_stream_or_block_start() -> None:
    block_start = {"contentBlockStart": {"contentBlockIndex": 0, "start": {}}}
    script: Script = [(0, START), (0.10, block_start), (0.08, _delta(text="Hel")), (0.15, _delta(text="lo"))]

    answer = _invoke(ScriptedClient([*script, (0, STOP), (0, METADATA)]))

    assert answer.text == "Hello"
    assert answer.time_to_first_token_ms is not None
    assert answer.time_to_first_token_ms >= 180  # not at messageStart (0) nor contentBlockStart (100)
    assert answer.wall_ms - answer.time_to_first_token_ms >= 150 * 0.99  # the rest came after it


def test_a_tool_call_or_reasoning_delta_is_a_first_token_too() -> None:
    tool_start = {
        "contentBlockStart": {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}
    }
    tool = [(0, START), (0.05, tool_start), (0.06, _delta(toolUse={"input": "{}"})), (0, STOP), (0, METADATA)]
    thinking = [(0, START), (0.06, _delta(reasoningContent={"text": "hmm"})), (0.2, _delta(text="ok"))]

    tool_answer = _invoke(ScriptedClient(tool))
    thinking_answer = _invoke(ScriptedClient([*thinking, (0, STOP), (0, METADATA)]))

    assert tool_answer.time_to_first_token_ms is not None and tool_answer.time_to_first_token_ms >= 110
    assert thinking_answer.time_to_first_token_ms is not None
    assert 60 <= thinking_answer.time_to_first_token_ms < 200


def test_a_retry_backoff_before_the_answered_attempt_is_not_time_to_first_token() -> None:
    script: Script = [(0, START), (0.05, _delta(text="late")), (0, STOP), (0, METADATA)]

    answer = _invoke(ScriptedClient(script, backoff=0.3))

    assert answer.time_to_first_token_ms is not None
    assert 50 <= answer.time_to_first_token_ms < 300
    assert answer.wall_ms >= 350


def test_a_whole_answer_or_a_stream_without_tokens_has_no_time_to_first_token() -> None:
    assert _invoke(ScriptedClient([]), stream=False).time_to_first_token_ms is None
    assert _invoke(ScriptedClient([(0, START), (0, STOP), (0, METADATA)])).time_to_first_token_ms is None


def test_time_to_first_token_survives_the_answer_cache_and_an_older_cached_answer_has_none() -> None:
    answer = ModelResponse({"content": []}, "end_turn", {}, 10.0, 11.0, time_to_first_token_ms=4.5)
    older = {k: v for k, v in answer.to_dict().items() if k != "time_to_first_token_ms"}

    assert ModelResponse.from_dict(answer.to_dict()) == answer
    assert ModelResponse.from_dict(older).time_to_first_token_ms is None


def test_media_bytes_reach_the_client_raw_and_the_request_keeps_its_base64() -> None:
    client = ScriptedClient([])
    image = {"format": "png", "source": {"bytes": b64(png())}}
    request = {"messages": [{"role": "user", "content": [{"text": "what is it?"}, {"image": image}]}]}

    BedrockGateway(client).invoke(MODEL, request, stream=False)

    [call] = client.calls
    assert call["messages"][0]["content"][1]["image"]["source"]["bytes"] == png()
    assert request["messages"][0]["content"][1]["image"]["source"]["bytes"] == b64(png())
