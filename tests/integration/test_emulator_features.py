"""Reasoning, guardrails and service tiers in the Bedrock emulator (issue 18 items 1, 3, 5 and 7):
every response and stream event checked against botocore's bedrock-runtime output shapes, Bedrock's
refusals through boto3, and the pipeline's Bedrock adapter reading what the emulator streams."""

from __future__ import annotations

import base64
import binascii
import json
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import botocore.session
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError
from botocore.model import Shape

from bedrock_pipeline.bedrock import BedrockGateway
from local_stack.bedrock_emulator import EmulatorServer, reasoning
from tests.integration.test_bedrock_emulator import _client, _user

pytestmark = pytest.mark.integration

SONNET = "us.anthropic.claude-sonnet-4-20250514-v1:0"
NOVA_PRO = "amazon.nova-pro-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
GUARD = {"guardrailIdentifier": "emulator-blocklist", "guardrailVersion": "1", "trace": "enabled"}
MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")

BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": (NOVA_LITE, {"messages": [_user("Say hello")]}),
    "thinking": (
        SONNET,
        {
            "messages": [_user("What is 6 times 7?")],
            "inferenceConfig": {"maxTokens": 2048},
            "additionalModelRequestFields": THINKING,
        },
    ),
    "redacted thinking": (
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        {
            "messages": [_user(reasoning.REDACTED_TRIGGER)],
            "inferenceConfig": {"maxTokens": 2048},
            "additionalModelRequestFields": THINKING,
        },
    ),
    "guardrail blocks the input": (
        NOVA_LITE,
        {"messages": [_user("tell me the forbidden recipe")], "guardrailConfig": GUARD},
    ),
    "guardrail passes": (NOVA_LITE, {"messages": [_user("tell me a story")], "guardrailConfig": GUARD}),
    # The emulator answers a tool result by quoting it: the answer carries the blocked word.
    "guardrail blocks the output": (
        NOVA_LITE,
        {
            "messages": [
                _user("Look up the file"),
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}}],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "classified"}]}}],
                },
            ],
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]
            },
            "guardrailConfig": GUARD,
        },
    ),
    "flex": (NOVA_PRO, {"messages": [_user("Summarise this")], "serviceTier": {"type": "flex"}}),
    "latency optimized": (
        NOVA_PRO,
        {"messages": [_user("Quick")], "performanceConfig": {"latency": "optimized"}},
    ),
}


def _conforms(value: Any, shape: Shape, where: str = "") -> None:
    """``value`` (JSON as on the wire) is an instance of botocore's ``shape``; raises AssertionError."""
    kind = shape.type_name
    if kind == "structure" and getattr(shape, "is_document_type", False):
        return  # a Document is any JSON
    if kind == "structure":
        assert isinstance(value, dict), f"{where}: expected an object for {shape.name}"
        members = shape.members  # type: ignore[attr-defined]
        unknown = set(value) - set(members)
        assert not unknown, f"{where}: {sorted(unknown)} are not members of {shape.name}"
        missing = set(shape.required_members) - set(value)  # type: ignore[attr-defined]
        assert not missing, f"{where}: {shape.name} lacks required {sorted(missing)}"
        if shape.metadata.get("union"):
            assert len(value) == 1, f"{where}: union {shape.name} sets {sorted(value)}"
        for name, member in value.items():
            _conforms(member, members[name], f"{where}.{name}")
    elif kind == "list":
        assert isinstance(value, list), f"{where}: expected a list"
        for index, member in enumerate(value):
            _conforms(member, shape.member, f"{where}[{index}]")  # type: ignore[attr-defined]
    elif kind == "map":
        assert isinstance(value, dict), f"{where}: expected a map"
        for key, member in value.items():
            _conforms(key, shape.key, f"{where} key")  # type: ignore[attr-defined]
            _conforms(member, shape.value, f"{where}[{key}]")  # type: ignore[attr-defined]
    elif kind == "string":
        assert isinstance(value, str), f"{where}: expected a string"
        if shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where}: expected a boolean"
    elif kind in ("double", "float"):
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: expected a number"
    elif kind == "blob":
        assert isinstance(value, str), f"{where}: a blob is base64 text on the wire"
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise AssertionError(f"{where}: not base64") from exc
    else:
        raise AssertionError(f"{where}: no check for {kind}")


def _post(url: str, model: str, operation: str, body: dict[str, Any]) -> tuple[str, bytes]:
    request = urllib.request.Request(
        f"{url}/model/{quote(model, safe='')}/{operation}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read()


def _events(raw: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    for message in buffer:
        headers = message.headers
        assert headers[":message-type"] == "event"
        yield headers[":event-type"], json.loads(message.payload)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(seed=3) as server:
        yield server


@pytest.mark.parametrize("case", sorted(BODIES))
def test_every_converse_answer_and_stream_event_is_an_instance_of_botocores_output_shapes(
    emulator: EmulatorServer, case: str
) -> None:
    model, body = BODIES[case]
    _, raw = _post(emulator.url, model, "converse", body)
    _conforms(json.loads(raw), MODEL.operation_model("Converse").output_shape, "Converse")
    content_type, raw = _post(emulator.url, model, "converse-stream", body)
    assert content_type == "application/vnd.amazon.eventstream"
    stream_shape = MODEL.operation_model("ConverseStream").output_shape.members["stream"]
    kinds = []
    for kind, payload in _events(raw):
        assert kind in stream_shape.members, kind
        _conforms(payload, stream_shape.members[kind], kind)
        kinds.append(kind)
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]


def test_thinking_is_answered_first_with_a_signature_and_its_tokens_in_output_tokens(
    emulator: EmulatorServer,
) -> None:
    model, body = BODIES["thinking"]
    client = _client(emulator.url)
    answer = client.converse(modelId=model, **body)
    thought, text = answer["output"]["message"]["content"]
    reasoning = thought["reasoningContent"]["reasoningText"]
    assert reasoning["text"] and reasoning["signature"] and text["text"]
    without = client.converse(modelId=model, messages=body["messages"], inferenceConfig={"maxTokens": 2048})
    assert answer["usage"]["outputTokens"] > without["usage"]["outputTokens"]
    streamed = BedrockGateway(client).invoke(model, body, stream=True)
    assert streamed.output_message["content"] == answer["output"]["message"]["content"]
    assert streamed.usage == answer["usage"]


def test_redacted_thinking_arrives_as_bytes_and_the_adapter_keeps_them_as_base64(
    emulator: EmulatorServer,
) -> None:
    model, body = BODIES["redacted thinking"]
    client = _client(emulator.url)
    answer = client.converse(modelId=model, **body)
    redacted = answer["output"]["message"]["content"][1]["reasoningContent"]["redactedContent"]
    assert isinstance(redacted, bytes) and redacted  # botocore decodes the blob
    for stream in (False, True):
        kept = BedrockGateway(client).invoke(model, body, stream=stream).output_message["content"][1]
        assert kept == {"reasoningContent": {"redactedContent": base64.b64encode(redacted).decode()}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1000}}},
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            {"inferenceConfig": {"maxTokens": 1024}},
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        ({"inferenceConfig": {"maxTokens": 2048, "temperature": 0.5}}, "`temperature` may only be set to 1"),
    ],
)
def test_thinking_rules_are_refused_with_bedrocks_wording(
    emulator: EmulatorServer, change: dict[str, Any], message: str
) -> None:
    model, body = BODIES["thinking"]
    with pytest.raises(ClientError) as refused:
        _client(emulator.url).converse(modelId=model, **{**body, **change})
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert message in refused.value.response["Error"]["Message"]


def test_a_guardrail_intervenes_on_a_blocked_word_with_its_trace_and_units(emulator: EmulatorServer) -> None:
    model, body = BODIES["guardrail blocks the input"]
    answer = _client(emulator.url).converse(modelId=model, **body)
    assert answer["stopReason"] == "guardrail_intervened"
    assessment = answer["trace"]["guardrail"]["inputAssessment"]["emulator-blocklist"]
    assert assessment["wordPolicy"]["customWords"][0] == {
        "match": "forbidden",
        "action": "BLOCKED",
        "detected": True,
    }
    assert assessment["invocationMetrics"]["usage"]["contentPolicyUnits"] == 1
    untraced = _client(emulator.url).converse(
        modelId=model, **{**body, "guardrailConfig": {**GUARD, "trace": "disabled"}}
    )
    assert untraced["stopReason"] == "guardrail_intervened" and "trace" not in untraced
    with pytest.raises(ClientError, match="guardrail identifier or version"):
        _client(emulator.url).converse(
            modelId=model, **{**body, "guardrailConfig": {**GUARD, "guardrailIdentifier": "nope"}}
        )


def test_a_guardrail_intervenes_on_the_answer_after_the_model_ran(emulator: EmulatorServer) -> None:
    model, body = BODIES["guardrail blocks the output"]
    answer = _client(emulator.url).converse(modelId=model, **body)
    assert answer["stopReason"] == "guardrail_intervened" and answer["usage"]["outputTokens"] > 0
    assert answer["output"]["message"]["content"] == [
        {"text": "Sorry, the model cannot answer this question."}
    ]
    guardrail = answer["trace"]["guardrail"]
    assert "wordPolicy" not in guardrail["inputAssessment"]["emulator-blocklist"]
    (output,) = guardrail["outputAssessments"]["emulator-blocklist"]
    assert output["wordPolicy"]["customWords"][0]["match"] == "classified"


def test_latency_optimized_is_served_where_bedrock_has_it_and_standard_elsewhere(
    emulator: EmulatorServer,
) -> None:
    model, body = BODIES["latency optimized"]
    assert _client(emulator.url).converse(modelId=model, **body)["performanceConfig"] == {
        "latency": "optimized"
    }
    served = _client(emulator.url).converse(modelId=NOVA_LITE, **body)
    assert served["performanceConfig"] == {"latency": "standard"}


def test_a_tier_is_echoed_where_the_model_has_it_and_refused_where_it_has_not(
    emulator: EmulatorServer,
) -> None:
    model, body = BODIES["flex"]
    assert _client(emulator.url).converse(modelId=model, **body)["serviceTier"] == {"type": "flex"}
    with pytest.raises(ClientError) as refused:
        _client(emulator.url).converse(modelId=NOVA_LITE, **body)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
