"""The Bedrock emulator through a real boto3 bedrock-runtime client on loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bedrock_pipeline.bedrock import BedrockGateway
from bedrock_pipeline.prompt_file import parse_prompt_file
from bedrock_pipeline.tokenizer import count_message_tokens, count_tokens
from local_stack.bedrock_emulator import EmulatorAdmin, EmulatorServer
from tests.images import b64, png

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "verbose": {"type": "boolean"},
                },
                "required": ["city", "days", "unit"],
            }
        },
    }
}


def _client(url: str, **config: Any) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(seed=7) as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer) -> EmulatorServer:
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def client(emulator: EmulatorServer) -> Any:
    return _client(emulator.url)


@pytest.fixture(scope="module")
def raw_client(emulator: EmulatorServer) -> Any:
    """Skips botocore's client-side checks so malformed requests reach the server, as from other SDKs."""
    return _client(emulator.url, parameter_validation=False)


def _stream_to_reply(client: Any, **request: Any) -> dict[str, Any]:
    """Reassemble a ConverseStream into a Converse-shaped reply via botocore's own event-stream decoder."""
    events = list(client.converse_stream(**request)["stream"])
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    tool_json = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e and "toolUse" in e["contentBlockDelta"]["delta"]
    )
    starts = [e["contentBlockStart"]["start"] for e in events if "contentBlockStart" in e]
    [stop] = [e["messageStop"] for e in events if "messageStop" in e]
    [metadata] = [e["metadata"] for e in events if "metadata" in e]
    return {
        "events": events,
        "text": text,
        "tool_input": json.loads(tool_json) if tool_json else None,
        "starts": starts,
        "stopReason": stop["stopReason"],
        "usage": metadata["usage"],
        "metrics": metadata["metrics"],
    }


# --- Converse basics ---


def test_given_a_prompt_when_conversing_then_text_usage_and_metrics_are_returned(
    emu: EmulatorServer, client: Any
) -> None:
    request = {"messages": [_user("Describe observability in one paragraph.")]}

    response = client.converse(modelId=HAIKU, **request)

    [block] = response["output"]["message"]["content"]
    assert response["output"]["message"]["role"] == "assistant"
    assert len(block["text"].split()) >= 6
    assert response["stopReason"] == "end_turn"
    usage = response["usage"]
    assert usage["inputTokens"] == count_message_tokens(request) > 0
    assert usage["outputTokens"] == count_tokens(block["text"])
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert response["metrics"]["latencyMs"] == 0
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_given_a_system_prompt_and_several_turns_then_all_of_them_are_counted_as_input(
    emu: EmulatorServer, client: Any
) -> None:
    request = {
        "system": [{"text": "You are a terse assistant."}, {"text": "Answer in English."}],
        "messages": [
            _user("First question about queues."),
            {"role": "assistant", "content": [{"text": "Queues decouple producers and consumers."}]},
            _user("And what about dead-letter queues?"),
        ],
    }

    response = client.converse(modelId=NOVA, **request)
    single_turn = client.converse(modelId=NOVA, messages=[_user("And what about dead-letter queues?")])

    assert response["usage"]["inputTokens"] == count_message_tokens(request)
    assert response["usage"]["inputTokens"] > single_turn["usage"]["inputTokens"]
    assert response["output"]["message"]["content"] != single_turn["output"]["message"]["content"]


@pytest.mark.parametrize(
    "model_id",
    [
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "eu.amazon.nova-micro-v1:0",
        "apac.anthropic.claude-3-5-sonnet-20241022-v2:0",
        "global.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-1-70b-instruct-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0",
        "mistral.mistral-large-2407-v1:0",
        "meta.llama3-1-8b-instruct-v1:0",
    ],
)
def test_given_profile_ids_and_arns_of_known_models_then_they_are_accepted(
    emu: EmulatorServer, client: Any, model_id: str
) -> None:
    response = client.converse(modelId=model_id, messages=[_user("hi")])

    assert response["stopReason"] == "end_turn"
    assert emu.stats()["models"][model_id]["ok"] == 1


def test_given_a_profile_id_then_it_answers_like_its_base_model(emu: EmulatorServer, client: Any) -> None:
    messages = [_user("Summarise the pipeline.")]

    base = client.converse(modelId=HAIKU, messages=messages)
    profile = client.converse(modelId=f"us.{HAIKU}", messages=messages)

    assert profile["output"] == base["output"]


# --- determinism ---


def test_given_the_same_seed_and_request_then_replies_are_identical_and_another_seed_differs() -> None:
    request = {"modelId": NOVA, "messages": [_user("Write about evaluation datasets.")]}
    replies = []
    for seed in (3, 3, 4):
        with EmulatorServer(seed=seed) as server:
            replies.append(_client(server.url).converse(**request)["output"]["message"]["content"][0]["text"])

    assert replies[0] == replies[1]
    assert replies[0] != replies[2]


def test_given_different_models_or_prompts_then_replies_differ(emu: EmulatorServer, client: Any) -> None:
    a = client.converse(modelId=NOVA, messages=[_user("one")])["output"]
    b = client.converse(modelId=HAIKU, messages=[_user("one")])["output"]
    c = client.converse(modelId=NOVA, messages=[_user("two")])["output"]

    assert a != b
    assert a != c


# --- inference config ---


def test_given_a_small_max_tokens_then_the_reply_is_cut_with_stop_reason_max_tokens(
    emu: EmulatorServer, client: Any
) -> None:
    messages = [_user("Tell me a long story.")]
    full = client.converse(modelId=HAIKU, messages=messages)["output"]["message"]["content"][0]["text"]

    response = client.converse(modelId=HAIKU, messages=messages, inferenceConfig={"maxTokens": 5})

    text = response["output"]["message"]["content"][0]["text"]
    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 5 == count_tokens(text)
    assert full.startswith(text)  # the same generation, cut short
    assert count_tokens(full) > 5


def test_given_a_stop_sequence_that_occurs_then_the_reply_stops_before_it(
    emu: EmulatorServer, client: Any
) -> None:
    messages = [_user("Tell me about latency.")]
    full = client.converse(modelId=NOVA, messages=messages)["output"]["message"]["content"][0]["text"]
    stop = " " + full.split()[4]

    cut = client.converse(
        modelId=NOVA, messages=messages, inferenceConfig={"stopSequences": [stop, "@@never@@"]}
    )

    assert cut["stopReason"] == "stop_sequence"
    assert cut["output"]["message"]["content"][0]["text"] == full[: full.index(stop)]


# --- ConverseStream ---


def test_given_the_same_request_when_streaming_then_botocore_reassembles_the_converse_reply(
    emu: EmulatorServer, client: Any
) -> None:
    request = {
        "modelId": HAIKU,
        "system": [{"text": "Be helpful."}],
        "messages": [_user("Explain event-driven pipelines.")],
        "inferenceConfig": {"maxTokens": 200},
    }

    converse = client.converse(**request)
    stream = _stream_to_reply(client, **request)

    assert stream["text"] == converse["output"]["message"]["content"][0]["text"]
    assert stream["stopReason"] == converse["stopReason"]
    assert stream["usage"] == converse["usage"]
    assert set(stream["metrics"]) == {"latencyMs"}
    kinds = [next(iter(e)) for e in stream["events"]]
    assert kinds[0] == "messageStart"
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert kinds.count("contentBlockDelta") > 2  # text arrives in chunks of a few words


def test_given_a_cut_reply_when_streaming_then_stop_reason_and_usage_match(
    emu: EmulatorServer, client: Any
) -> None:
    stream = _stream_to_reply(
        client, modelId=NOVA, messages=[_user("go on")], inferenceConfig={"maxTokens": 3}
    )

    assert stream["stopReason"] == "max_tokens"
    assert stream["usage"]["outputTokens"] == 3


# --- tool use ---


def test_given_a_prompt_naming_a_tool_then_tool_use_follows_and_a_tool_result_turn_gets_text(
    emu: EmulatorServer, client: Any
) -> None:
    tool_config = {"tools": [WEATHER_TOOL]}
    first_turn = [_user("Please get weather for Paris.")]

    first = client.converse(modelId=HAIKU, messages=first_turn, toolConfig=tool_config)

    assert first["stopReason"] == "tool_use"
    [block] = first["output"]["message"]["content"]
    tool_use = block["toolUse"]
    assert tool_use["name"] == "get_weather"
    assert re.fullmatch(r"tooluse_[A-Za-z0-9]{22}", tool_use["toolUseId"])
    assert tool_use["input"] == {"city": "sample city", "days": 1, "unit": "celsius"}  # required ones only

    result = {"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"json": {"temp_c": 21}}]}}
    second = client.converse(
        modelId=HAIKU,
        messages=[*first_turn, first["output"]["message"], {"role": "user", "content": [result]}],
        toolConfig=tool_config,
    )

    assert second["stopReason"] == "end_turn"
    text = second["output"]["message"]["content"][0]["text"]
    assert "get_weather" in text
    assert '"temp_c": 21' in text


def test_given_tool_choice_any_or_tool_then_a_tool_is_used_and_auto_without_mention_gives_text(
    emu: EmulatorServer, client: Any
) -> None:
    other_tool = {"toolSpec": {"name": "lookup_price", "inputSchema": {"json": {"type": "object"}}}}
    messages = [_user("Hello there.")]

    auto = client.converse(modelId=NOVA, messages=messages, toolConfig={"tools": [WEATHER_TOOL, other_tool]})
    any_tool = client.converse(
        modelId=NOVA,
        messages=messages,
        toolConfig={"tools": [WEATHER_TOOL, other_tool], "toolChoice": {"any": {}}},
    )
    forced = client.converse(
        modelId=NOVA,
        messages=messages,
        toolConfig={"tools": [WEATHER_TOOL, other_tool], "toolChoice": {"tool": {"name": "lookup_price"}}},
    )

    assert auto["stopReason"] == "end_turn"
    assert "text" in auto["output"]["message"]["content"][0]
    assert any_tool["stopReason"] == "tool_use"
    assert any_tool["output"]["message"]["content"][0]["toolUse"]["name"] == "get_weather"
    assert forced["output"]["message"]["content"][0]["toolUse"] == {
        "toolUseId": forced["output"]["message"]["content"][0]["toolUse"]["toolUseId"],
        "name": "lookup_price",
        "input": {},
    }


def test_given_tool_use_when_streaming_then_start_and_json_deltas_rebuild_the_tool_call(
    emu: EmulatorServer, client: Any
) -> None:
    request = {
        "modelId": HAIKU,
        "messages": [_user("get_weather now")],
        "toolConfig": {"tools": [WEATHER_TOOL]},
    }

    converse = client.converse(**request)
    stream = _stream_to_reply(client, **request)

    tool_use = converse["output"]["message"]["content"][0]["toolUse"]
    assert stream["starts"] == [{"toolUse": {"toolUseId": tool_use["toolUseId"], "name": "get_weather"}}]
    assert stream["tool_input"] == tool_use["input"]
    assert stream["stopReason"] == "tool_use"
    assert stream["usage"] == converse["usage"]


# --- arithmetic skill ---


def test_given_arithmetic_questions_then_accuracy_controls_how_often_the_answer_is_right(
    emu: EmulatorServer, client: Any
) -> None:
    questions = [(a, op, b) for a in range(3, 93, 3) for op, b in (("+", 25), ("-", 7), ("*", 3))]

    def answers(accuracy: float) -> list[bool]:
        emu.configure(HAIKU, accuracy=accuracy)
        right = []
        for a, op, b in questions:
            reply = client.converse(modelId=HAIKU, messages=[_user(f"What is {a} {op} {b}?")])
            text = reply["output"]["message"]["content"][0]["text"]
            number = int(re.fullmatch(r"The answer is (-?\d+)\.", text).group(1))  # type: ignore[union-attr]
            right.append(number == eval(f"{a} {op} {b}"))  # our own literal arithmetic
        return right

    assert all(answers(1.0))
    assert not any(answers(0.0))
    half = answers(0.5)
    assert 0.35 < sum(half) / len(half) < 0.65
    assert answers(0.5) == half  # deterministic per seed and request


# --- prompt caching ---


def test_given_a_cache_point_then_the_prefix_is_written_once_and_read_afterwards(
    emu: EmulatorServer, client: Any
) -> None:
    system = [{"text": "You are an expert on AWS. " * 20}, {"cachePoint": {"type": "default"}}]
    prefix_tokens = count_tokens("You are an expert on AWS. " * 20)

    first = client.converse(modelId=HAIKU, system=system, messages=[_user("What is SQS?")])["usage"]
    second = client.converse(modelId=HAIKU, system=system, messages=[_user("What is SNS?")])["usage"]
    other_model = client.converse(modelId=NOVA, system=system, messages=[_user("What is SNS?")])["usage"]

    assert first["cacheWriteInputTokens"] == prefix_tokens
    assert first["cacheReadInputTokens"] == 0
    assert first["inputTokens"] == count_tokens("What is SQS?")  # the cached prefix is excluded
    assert second["cacheReadInputTokens"] == prefix_tokens
    assert second["cacheWriteInputTokens"] == 0
    # Bedrock's totalTokens includes the cache tokens.
    assert second["totalTokens"] == second["inputTokens"] + second["outputTokens"] + prefix_tokens
    assert other_model["cacheWriteInputTokens"] == prefix_tokens  # caches are per model

    emu.reset()
    assert (
        client.converse(modelId=HAIKU, system=system, messages=[_user("What is SQS?")])["usage"][
            "cacheWriteInputTokens"
        ]
        == prefix_tokens
    )


def test_given_a_cache_point_in_messages_after_a_cached_system_then_only_the_new_part_is_written(
    emu: EmulatorServer, client: Any
) -> None:
    system = [{"text": "Shared instructions for every call."}, {"cachePoint": {"type": "default"}}]
    document = "A long document about pipelines. " * 10
    messages = [
        {"role": "user", "content": [{"text": document}, {"cachePoint": {"type": "default"}}, {"text": "Q1"}]}
    ]

    client.converse(modelId=NOVA, system=system, messages=[_user("warm up")])
    usage = client.converse(modelId=NOVA, system=system, messages=messages)["usage"]

    assert usage["cacheReadInputTokens"] == count_tokens("Shared instructions for every call.")
    assert usage["cacheWriteInputTokens"] == count_tokens(document)
    assert usage["inputTokens"] == count_tokens("Q1")


# --- errors ---

FAULTS = [
    ("ThrottlingException", 429),
    ("ServiceUnavailableException", 503),
    ("InternalServerException", 500),
    ("ModelTimeoutException", 408),
    ("ModelNotReadyException", 429),
    ("ModelErrorException", 424),
    ("AccessDeniedException", 403),
    ("ResourceNotFoundException", 404),
]


@pytest.mark.parametrize(("name", "status"), FAULTS)
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_given_a_fault_at_rate_one_then_boto3_raises_the_modelled_exception(
    emu: EmulatorServer, client: Any, name: str, status: int, operation: str
) -> None:
    emu.configure(NOVA, faults={name: 1.0})

    with pytest.raises(getattr(client.exceptions, name)) as raised:
        getattr(client, operation)(modelId=NOVA, messages=[_user("hi")])

    assert raised.value.response["Error"]["Code"] == name
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert raised.value.response["Error"]["Message"]
    expected = "throttled" if name == "ThrottlingException" else "error"
    assert emu.stats()["models"][NOVA][expected] == 1


def test_given_throttle_and_error_rates_of_one_then_throttling_and_server_faults_surface(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure(NOVA, throttle_rate=1.0)
    emu.configure(HAIKU, error_rate=1.0)

    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=NOVA, messages=[_user("hi")])
    seen = set()
    for i in range(20):
        try:
            client.converse(modelId=HAIKU, messages=[_user(f"hi {i}")])
        except (
            client.exceptions.InternalServerException,
            client.exceptions.ServiceUnavailableException,
        ) as exc:
            seen.add(exc.response["Error"]["Code"])

    assert seen == {"InternalServerException", "ServiceUnavailableException"}
    assert emu.stats()["outcomes"] == {"ok": 0, "throttled": 1, "error": 20, "validation": 0}


def test_given_a_fault_rate_then_the_fault_sequence_is_reproducible_for_a_seed(
    emu: EmulatorServer, client: Any
) -> None:
    def run() -> list[bool]:
        emu.reset()
        emu.configure("*", throttle_rate=0.3)
        outcomes = []
        for i in range(30):
            try:
                client.converse(modelId=NOVA, messages=[_user(f"q{i}")])
                outcomes.append(True)
            except client.exceptions.ThrottlingException:
                outcomes.append(False)
        return outcomes

    first = run()
    assert run() == first
    assert 0 < first.count(False) < 30


MALFORMED = [
    ({"messages": []}, "start with a user message"),
    ({"messages": [{"role": "user", "content": []}]}, "is empty"),
    ({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "start with a user message"),
    ({"messages": [_user("a"), _user("b")]}, "alternate"),
    # The service model's constraints, in the AWS framework's words (shape_check.py).
    (
        {"messages": [_user("a")], "inferenceConfig": {"maxTokens": 0}},
        "must have value greater than or equal to 1",
    ),
    ({"messages": [_user("a")], "inferenceConfig": {"maxTokens": 100000}}, "model limit"),
    ({"messages": [_user("a")], "inferenceConfig": {"temperature": 1.5}}, "temperature"),
    (
        {
            "messages": [
                {"role": "user", "content": [{"toolResult": {"toolUseId": "x", "content": [{"text": "1"}]}}]}
            ]
        },
        "toolConfig",
    ),
    (
        {
            "messages": [_user("a")],
            "toolConfig": {"tools": [WEATHER_TOOL], "toolChoice": {"tool": {"name": "nope"}}},
        },
        "not defined",
    ),
]


@pytest.mark.parametrize(("request_body", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_given_a_malformed_request_then_validation_exception(
    emu: EmulatorServer, raw_client: Any, request_body: dict[str, Any], message: str
) -> None:
    with pytest.raises(raw_client.exceptions.ValidationException, match=message) as raised:
        raw_client.converse(modelId=HAIKU, **request_body)

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert emu.stats()["models"][HAIKU]["validation"] == 1


@pytest.mark.parametrize("model_id", ["anthropic.claude-9-ultra-v1:0", "us.foo.bar-v1:0", "gpt-4o"])
def test_given_an_unknown_model_then_validation_exception_like_bedrock(
    emu: EmulatorServer, client: Any, model_id: str
) -> None:
    with pytest.raises(
        client.exceptions.ValidationException, match=r"The provided model identifier is invalid\."
    ):
        client.converse(modelId=model_id, messages=[_user("hi")])
    with pytest.raises(
        client.exceptions.ValidationException, match=r"The provided model identifier is invalid\."
    ):
        client.converse_stream(modelId=model_id, messages=[_user("hi")])


def test_given_a_body_that_is_not_json_then_validation_exception_on_the_wire(emu: EmulatorServer) -> None:
    request = urllib.request.Request(f"{emu.url}/model/{NOVA}/converse", data=b"{not json", method="POST")

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)

    assert raised.value.code == 400
    assert raised.value.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert "Malformed input request" in json.load(raised.value)["message"]


# --- media: image bytes are base64 on the wire, once ---
IMAGE_MISMATCH = "The provided image does not match the specified image format."


def _image_message(data: bytes | str, image_format: str = "png") -> dict[str, Any]:
    image = {"format": image_format, "source": {"bytes": data}}
    return {"role": "user", "content": [{"text": "What colour is this?"}, {"image": image}]}


def test_given_an_image_then_raw_bytes_pass_and_a_base64_string_given_as_bytes_is_refused_like_bedrock(
    emu: EmulatorServer, client: Any
) -> None:
    picture = png()

    answer = client.converse(modelId=NOVA, messages=[_image_message(picture)])
    with pytest.raises(client.exceptions.ValidationException, match=re.escape(IMAGE_MISMATCH)) as raised:
        client.converse(modelId=NOVA, messages=[_image_message(b64(picture))])  # botocore encodes it again
    with pytest.raises(client.exceptions.ValidationException, match=re.escape(IMAGE_MISMATCH)):
        client.converse_stream(modelId=NOVA, messages=[_image_message(picture, "jpeg")])

    assert answer["stopReason"] == "end_turn"
    assert raised.value.response["Error"]["Message"].startswith("The model returned the following errors:")
    assert emu.stats()["models"][NOVA]["validation"] == 2


def test_given_an_image_format_bedrock_does_not_know_then_its_enum_error(
    emu: EmulatorServer, raw_client: Any
) -> None:
    with pytest.raises(raw_client.exceptions.ValidationException) as raised:
        raw_client.converse(modelId=NOVA, messages=[_image_message(png(), "jpg")])

    assert raised.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'jpg' at 'messages.1.member.content.2.member.image.format' "
        "failed to satisfy constraint: Member must satisfy enum value set: [png, jpeg, gif, webp]"
    )


@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
def test_given_a_batch_record_with_a_base64_png_then_the_gateway_sends_the_image_and_gets_an_answer(
    emu: EmulatorServer, stream: bool
) -> None:
    """The issue's case: the record as a Bedrock batch file holds it; sent as it was, it fails."""
    model_input = {"messages": [_image_message(b64(png()))], "inferenceConfig": {"maxTokens": 64}}
    line = json.dumps({"recordId": "IMG1", "modelInput": model_input}).encode()
    [item] = parse_prompt_file(line, default_models=(NOVA,)).items
    own_client = _client(emu.url)

    answer = BedrockGateway(own_client).invoke(NOVA, item.request, stream=stream)
    with pytest.raises(own_client.exceptions.ValidationException, match=re.escape(IMAGE_MISMATCH)):
        own_client.converse(modelId=NOVA, **item.request)  # what the pipeline did before

    assert answer.stop_reason == "end_turn" and answer.text
    assert item.request == model_input  # the item (queue message, results line) keeps the base64


def test_given_autolog_and_an_image_then_the_model_span_shows_a_placeholder_not_the_bytes(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    import mlflow

    picture = png(64, 64)
    line = json.dumps({"modelInput": {"messages": [_image_message(b64(picture))]}}).encode()
    [item] = parse_prompt_file(line, default_models=(NOVA,)).items
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = mlflow.set_experiment("emulator-media").experiment_id
    mlflow.bedrock.autolog()
    try:
        BedrockGateway(_client(emu.url)).invoke(NOVA, item.request, stream=False)
        mlflow.flush_trace_async_logging()
        [trace] = mlflow.MlflowClient().search_traces(locations=[experiment_id])
    finally:
        mlflow.bedrock.autolog(disable=True)
        mlflow.set_tracking_uri(previous_uri)

    [span] = trace.data.spans
    image = span.inputs["messages"][0]["content"][1]["image"]
    assert image == {"format": "png", "source": {"bytes": f"<{len(picture)} bytes>"}}


# --- admin: stats, config, reset ---


def test_given_mixed_calls_then_stats_count_calls_per_model_and_outcome(
    emu: EmulatorServer, client: Any
) -> None:
    client.converse(modelId=NOVA, messages=[_user("a")])
    client.converse(modelId=NOVA, messages=[_user("a")])  # the same request again
    _stream_to_reply(client, modelId=NOVA, messages=[_user("b")])
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId="unknown.model-v1:0", messages=[_user("a")])
    emu.configure(HAIKU, throttle_rate=1.0)
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=HAIKU, messages=[_user("a")])

    stats = EmulatorAdmin(emu.url).stats()

    assert stats["models"][NOVA] == {
        "calls": 3,
        "ok": 3,
        "throttled": 0,
        "error": 0,
        "validation": 0,
        "converse": 2,
        "converse-stream": 1,
    }
    assert stats["models"][HAIKU]["throttled"] == 1
    assert stats["models"]["unknown.model-v1:0"]["validation"] == 1
    assert stats["outcomes"] == {"ok": 3, "throttled": 1, "error": 0, "validation": 1}
    assert stats["errors"] == {"ValidationException": 1, "ThrottlingException": 1}
    assert stats["total_calls"] == 5
    assert stats["distinct_requests"] == 4
    assert stats["repeated_requests"] == 1
    assert stats["repeated_ok_requests"] == 1


def test_given_the_admin_endpoint_when_reconfiguring_at_runtime_then_behaviour_changes_and_reset_restores(
    emu: EmulatorServer, client: Any
) -> None:
    admin = EmulatorAdmin(emu.url)
    assert admin.health() == {"status": "ok"}

    config = admin.configure(NOVA, throttle_rate=1.0)
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=NOVA, messages=[_user("hi")])
    client.converse(modelId=HAIKU, messages=[_user("hi")])  # other models unaffected
    assert config["models"][NOVA] == {"throttle_rate": 1.0}
    assert admin.configure(NOVA, latency_ms=25)["models"][NOVA] == {"throttle_rate": 1.0, "latency_ms": 25.0}

    admin.reset()
    assert admin.config()["models"] == {}
    assert admin.stats()["total_calls"] == 0
    admin.configure("*", latency_ms=30)
    started = time.perf_counter()
    response = client.converse(modelId=NOVA, messages=[_user("hi")])
    assert response["metrics"]["latencyMs"] == 30
    assert time.perf_counter() - started >= 0.03


def test_given_bad_admin_settings_then_400_and_the_config_is_unchanged(emu: EmulatorServer) -> None:
    admin = EmulatorAdmin(emu.url)
    for update in (
        {"models": {"*": {"throtle_rate": 1}}},
        {"models": {"*": {"throttle_rate": 2}}},
        {"models": {"*": {"faults": {"NoSuchException": 1}}}},
        {"*": {"throttle_rate": 1}},
    ):
        with pytest.raises(urllib.error.HTTPError) as raised:
            admin.update_config(update)
        assert raised.value.code == 400
    assert admin.config()["models"] == {}


def test_given_a_model_configured_at_runtime_then_it_is_accepted_as_a_model(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure("acme.private-model-v1:0", latency_ms=0)

    response = client.converse(modelId="us.acme.private-model-v1:0", messages=[_user("hi")])

    assert response["stopReason"] == "end_turn"


def test_given_per_token_latency_when_streaming_then_chunks_are_spread_over_time(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure(NOVA, ms_per_output_token=2)
    started = time.perf_counter()

    stream = _stream_to_reply(client, modelId=NOVA, messages=[_user("stream slowly")])

    elapsed_ms = (time.perf_counter() - started) * 1000
    assert stream["metrics"]["latencyMs"] == 2 * stream["usage"]["outputTokens"]
    assert elapsed_ms >= stream["metrics"]["latencyMs"] * 0.9


def test_given_base_latency_when_streaming_then_the_stream_opens_at_once_and_the_first_delta_waits(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure(NOVA, latency_ms=300)

    stream = client.converse_stream(modelId=NOVA, messages=[_user("Take your time")])["stream"]
    arrivals = [(time.perf_counter(), event) for event in stream]

    opened = next(at for at, event in arrivals if "messageStart" in event)
    first_delta = next(at for at, event in arrivals if "contentBlockDelta" in event)
    assert (first_delta - opened) * 1000 >= 300 * 0.95  # the model's time to first token, as Bedrock


def test_given_base_latency_then_the_gateway_records_it_as_time_to_first_token_of_streamed_calls_only(
    emu: EmulatorServer,
) -> None:
    emu.configure(NOVA, latency_ms=150, ms_per_output_token=1)
    gateway = BedrockGateway(_client(emu.url))
    request = {"messages": [_user("Tell me a story")], "inferenceConfig": {"maxTokens": 100}}

    streamed = gateway.invoke(NOVA, request, stream=True)
    whole = gateway.invoke(NOVA, request, stream=False)

    assert streamed.time_to_first_token_ms is not None
    assert 150 <= streamed.time_to_first_token_ms < streamed.wall_ms
    assert streamed.usage["outputTokens"] > 1  # so some of the latency came after the first token
    assert whole.time_to_first_token_ms is None


def test_given_concurrent_clients_then_every_call_is_answered_and_counted(emu: EmulatorServer) -> None:
    def worker(worker_id: int) -> list[str]:
        own_client = _client(emu.url)
        return [
            own_client.converse(modelId=NOVA, messages=[_user(f"w{worker_id} q{i}")])["stopReason"]
            for i in range(25)
        ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [reason for reasons in pool.map(worker, range(4)) for reason in reasons]

    assert results == ["end_turn"] * 100
    stats = emu.stats()
    assert stats["models"][NOVA]["ok"] == 100
    assert stats["distinct_requests"] == 100


# --- CLI ---


def test_given_the_cli_then_it_serves_on_the_chosen_port_logs_calls_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "emulator.json"
    config_file.write_text(json.dumps({"models": {NOVA: {"latency_ms": 5}}}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local_stack.bedrock_emulator",
            "--port",
            "0",
            "--seed",
            "1",
            "--config",
            str(config_file),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", banner).group(0)  # type: ignore[union-attr]
        response = _client(url).converse(modelId=NOVA, messages=[_user("hi")])
        assert response["metrics"]["latencyMs"] == 5
        assert EmulatorAdmin(url).config()["seed"] == 1
        log_line = process.stderr.readline()
        assert "converse amazon.nova-lite-v1:0 200" in log_line
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


# --- MLflow ---


def test_given_mlflow_bedrock_autolog_then_the_converse_trace_carries_the_emulator_usage(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = mlflow.set_experiment("emulator-autolog").experiment_id
    mlflow.bedrock.autolog()  # before the client: autolog patches client creation
    try:
        traced_client = _client(emu.url)
        response = traced_client.converse(
            modelId=HAIKU,
            system=[{"text": "Context " * 30}, {"cachePoint": {"type": "default"}}],
            messages=[_user("Trace me.")],
        )
        mlflow.flush_trace_async_logging()

        [trace] = mlflow.MlflowClient().search_traces(locations=[experiment_id])
    finally:
        mlflow.bedrock.autolog(disable=True)
        mlflow.set_tracking_uri(previous_uri)

    usage = response["usage"]
    assert usage["cacheWriteInputTokens"] > 0
    # MLflow folds Bedrock's cache tokens into input_tokens; the total is the same as Bedrock's.
    assert trace.info.token_usage["input_tokens"] == usage["inputTokens"] + usage["cacheWriteInputTokens"]
    assert trace.info.token_usage["output_tokens"] == usage["outputTokens"]
    assert trace.info.token_usage["total_tokens"] == usage["totalTokens"]
    assert trace.info.token_usage["cache_creation_input_tokens"] == usage["cacheWriteInputTokens"]
    [span] = trace.data.spans
    assert span.name == "BedrockRuntime.converse"


# --- the control plane: what ingest's model check reads ---


def _control_client(url: str) -> Any:
    return boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _conforms(value: Any, shape: Any, path: str = "") -> list[str]:
    """Where raw JSON leaves botocore's shape: unknown or missing required members, wrong types."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        problems = [f"{path}.{name}: unknown member" for name in value if name not in shape.members]
        problems += [
            f"{path}.{name}: required, missing" for name in shape.required_members if name not in value
        ]
        for name, member in shape.members.items():
            if name in value:
                problems += _conforms(value[name], member, f"{path}.{name}")
        return problems
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, item in enumerate(value) for p in _conforms(item, shape.member, f"{path}[{i}]")]
    if kind == "string":
        enum = shape.metadata.get("enum")
        if not isinstance(value, str) or (enum and value not in enum):
            return [f"{path}: {value!r} is not a string of {enum or 'any value'}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: not a boolean"]
    if kind == "timestamp":
        return [] if isinstance(value, str) and value.endswith("Z") else [f"{path}: not an iso8601 timestamp"]
    return []


def test_given_the_emulator_when_its_models_and_profiles_are_listed_raw_then_they_have_bedrocks_shapes(
    emu: EmulatorServer,
) -> None:
    """The raw JSON of ListFoundationModels and ListInferenceProfiles, member by member against
    botocore's ``bedrock`` service model (boto3's parser would drop what does not fit silently)."""
    model = boto3.session.Session().client("bedrock", region_name="us-east-1").meta.service_model

    def raw(path: str) -> Any:
        with urllib.request.urlopen(f"{emu.url}{path}", timeout=5) as response:
            return json.load(response)

    models = raw("/foundation-models")
    profiles = raw("/inference-profiles?maxResults=5&type=SYSTEM_DEFINED")

    assert _conforms(models, model.operation_model("ListFoundationModels").output_shape) == []
    assert _conforms(profiles, model.operation_model("ListInferenceProfiles").output_shape) == []
    assert len(profiles["inferenceProfileSummaries"]) == 5 and profiles["nextToken"]


def test_given_a_bedrock_client_when_listing_then_every_model_and_paged_profile_the_runtime_accepts_is_there(
    emu: EmulatorServer, client: Any
) -> None:
    """Through boto3 (paginator included), each listed id and ARN is accepted by Converse, and the ARNs
    carry the region the client signed for."""
    control = _control_client(emu.url)

    models = control.list_foundation_models()["modelSummaries"]
    pages = list(control.get_paginator("list_inference_profiles").paginate(typeEquals="SYSTEM_DEFINED"))
    profiles = [p for page in pages for p in page["inferenceProfileSummaries"]]
    application = control.list_inference_profiles(typeEquals="APPLICATION")["inferenceProfileSummaries"]

    ids = {m["modelId"] for m in models}
    assert {HAIKU, NOVA} <= ids
    assert len(pages) > 1
    assert f"us.{NOVA}" in {p["inferenceProfileId"] for p in profiles}
    assert all(m["modelArn"].startswith("arn:aws:bedrock:eu-west-1::foundation-model/") for m in models)
    assert application == []
    for model_id in (NOVA, f"global.{HAIKU}", models[0]["modelArn"], profiles[-1]["inferenceProfileArn"]):
        client.converse(modelId=model_id, messages=[_user("hi")], inferenceConfig={"maxTokens": 5})


def test_given_the_emulator_when_ingest_checks_a_files_models_then_only_the_unknown_one_is_refused(
    emu: EmulatorServer,
) -> None:
    """The production adapter (BedrockModelCatalog) on the emulator's control plane: catalog ids,
    cross-region profiles and a model configured at run time are known, a typo is not."""
    from bedrock_pipeline.model_catalog import BedrockModelCatalog

    emu.configure("acme.custom-model-v1:0", latency_ms=0)
    catalog = BedrockModelCatalog(lambda: _control_client(emu.url))

    unknown = catalog.unknown(
        {NOVA, f"us.{HAIKU}", f"apac.{NOVA}", "acme.custom-model-v1:0", "amazon.nova-typo-v1:0"}
    )

    assert set(unknown) == {"amazon.nova-typo-v1:0"}


# --- quotas (requests and tokens per minute, Bedrock's counting) ---

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def _throttle_error(exc_info: pytest.ExceptionInfo[Any]) -> tuple[str, int, str]:
    response = exc_info.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def test_given_a_requests_quota_then_exactly_the_calls_over_it_are_throttled_until_it_is_raised_at_run_time(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure(NOVA, requests_per_minute=3)
    outcomes = []
    for index in range(5):
        try:
            client.converse(modelId=NOVA, messages=[_user(f"call {index}")])
            outcomes.append("ok")
        except client.exceptions.ThrottlingException as exc:
            outcomes.append(exc.response["Error"]["Message"])
    with pytest.raises(client.exceptions.ThrottlingException) as throttled:
        client.converse(modelId=NOVA, messages=[_user("one more")])

    EmulatorAdmin(emu.url).configure(NOVA, requests_per_minute=10)
    client.converse(modelId=NOVA, messages=[_user("after raising the quota")])

    too_many = "Too many requests, please wait before trying again."
    assert outcomes == ["ok", "ok", "ok", too_many, too_many]
    assert _throttle_error(throttled) == ("ThrottlingException", 429, too_many)
    stats = emu.stats()
    assert stats["quotas"][NOVA]["window_requests"] == 4
    assert stats["quotas"][NOVA]["throttled_by_requests_per_minute"] == 3
    assert stats["quotas"][NOVA]["requests_per_minute"] == 10
    assert stats["models"][NOVA]["throttled"] == 3


def test_given_a_tokens_quota_then_input_plus_max_tokens_decides_admission_and_the_wording_names_tokens(
    emu: EmulatorServer, client: Any
) -> None:
    request = {"messages": [_user("Describe observability.")], "inferenceConfig": {"maxTokens": 5}}
    reserved = count_message_tokens(request) + 5  # the reply is cut at 5 tokens, so it settles at this too
    emu.configure(NOVA, tokens_per_minute=2 * reserved + reserved // 2)
    client.converse(modelId=NOVA, **request)
    client.converse(modelId=NOVA, **request)

    with pytest.raises(client.exceptions.ThrottlingException) as throttled:
        client.converse(modelId=NOVA, **request)
    emu.configure(NOVA, tokens_per_minute=None)
    client.converse(modelId=NOVA, **request)

    assert _throttle_error(throttled) == (
        "ThrottlingException",
        429,
        "Too many tokens, please wait before trying again.",
    )
    window = emu.stats()["quotas"][NOVA]
    assert (window["window_tokens"], window["throttled_by_tokens_per_minute"]) == (3 * reserved, 1)


def test_given_a_stream_then_it_is_admitted_under_the_quota_and_settled_at_its_end_with_the_5x_burndown(
    emu: EmulatorServer, client: Any
) -> None:
    request = {"messages": [_user("Tell me about quotas.")], "inferenceConfig": {"maxTokens": 5}}
    emu.configure(SONNET_45, requests_per_minute=1)

    reply = _stream_to_reply(client, modelId=SONNET_45, **request)
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse_stream(modelId=SONNET_45, **request)

    usage = reply["usage"]
    window = emu.stats()["quotas"][SONNET_45]
    assert usage["outputTokens"] == 5
    assert window["window_tokens"] == usage["inputTokens"] + 5 * usage["outputTokens"]
    assert (window["in_flight"], window["throttled_requests"]) == (0, 1)


def test_given_a_quota_on_a_model_then_its_inference_profile_is_counted_in_a_window_of_its_own(
    emu: EmulatorServer, client: Any
) -> None:
    emu.configure(NOVA, requests_per_minute=1)
    client.converse(modelId=NOVA, messages=[_user("a")])
    client.converse(modelId=f"us.{NOVA}", messages=[_user("a")])

    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=NOVA, messages=[_user("b")])
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=f"us.{NOVA}", messages=[_user("b")])
    emu.configure(f"us.{NOVA}", requests_per_minute=2)  # a profile's own quota, as on Bedrock
    client.converse(modelId=f"us.{NOVA}", messages=[_user("c")])

    quotas = emu.stats()["quotas"]
    assert {key: quotas[key]["admitted_requests"] for key in quotas} == {NOVA: 1, f"us.{NOVA}": 2}


def test_given_concurrent_clients_over_a_quota_then_exactly_the_quota_is_served(emu: EmulatorServer) -> None:
    emu.configure(NOVA, requests_per_minute=10)
    emu.configure(HAIKU, throttle_rate=1.0)  # random throttles are counted apart from quota ones
    client = _client(emu.url, max_pool_connections=20)

    def call(index: int) -> str:
        try:
            client.converse(modelId=NOVA, messages=[_user(f"concurrent {index}")])
            return "ok"
        except client.exceptions.ThrottlingException:
            return "throttled"

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(call, range(30)))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=HAIKU, messages=[_user("random")])

    assert (outcomes.count("ok"), outcomes.count("throttled")) == (10, 20)
    stats = emu.stats()
    assert stats["quotas"][NOVA]["throttled_requests"] == 20
    assert stats["models"][HAIKU]["throttled"] == 1
    assert HAIKU not in stats["quotas"]  # randomly throttled before admission: no quota touched


def test_given_bad_quota_settings_on_the_admin_endpoint_then_400_and_nothing_changes(
    emu: EmulatorServer,
) -> None:
    before = emu.config()
    request = urllib.request.Request(
        f"{emu.url}/_emulator/config",
        data=json.dumps({"models": {NOVA: {"requests_per_minute": -5}}}).encode(),
        method="POST",
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 400
    assert "requests_per_minute" in json.loads(refused.value.read())["message"]
    assert emu.config() == before
