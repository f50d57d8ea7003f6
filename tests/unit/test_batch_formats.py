"""The emulator's batch records: native InvokeModel bodies -> Converse, and replies -> native bodies."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.bedrock_emulator.batch_formats import RecordError, family, to_converse, to_native
from local_stack.bedrock_emulator.batch_settings import BatchSettings
from local_stack.bedrock_emulator.model import respond
from local_stack.bedrock_emulator.state import EmulatorState

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
CONVERSE = {
    "system": [{"text": "Be brief."}],
    "messages": [{"role": "user", "content": [{"text": "What is 17 + 25?"}]}],
    "inferenceConfig": {"maxTokens": 64, "temperature": 0.5},
}


def _answer(model_id: str, body: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    reply = respond(body, model_id, 0, 1.0)
    return reply, EmulatorState(0).usage(body, model_id, reply.output_tokens)


def test_families_of_the_default_models() -> None:
    assert (family(HAIKU), family(NOVA), family(LLAMA)) == ("anthropic", "nova", "llama")
    assert family("amazon.titan-text-express-v1") is None
    assert family("mistral.mistral-large-2407-v1:0") is None


def test_anthropic_body_means_the_converse_request() -> None:
    native = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "temperature": 0.5,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is 17 + 25?"}],
    }
    assert to_converse("anthropic", native) == CONVERSE


def test_anthropic_output_is_a_messages_response_with_the_converse_reply() -> None:
    reply, usage = _answer(HAIKU, CONVERSE)
    output = to_native("anthropic", HAIKU, reply, usage, CONVERSE)
    assert output["type"] == "message" and output["role"] == "assistant"
    assert output["content"] == [{"type": "text", "text": "The answer is 42."}]
    assert output["stop_reason"] == "end_turn" and output["stop_sequence"] is None
    assert output["usage"] == {"input_tokens": usage["inputTokens"], "output_tokens": usage["outputTokens"]}
    assert output["id"].startswith("msg_bdrk_")


def test_anthropic_body_without_its_required_keys_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="anthropic_version and max_tokens"):
        to_converse("anthropic", {"messages": [{"role": "user", "content": "hi"}]})


def test_nova_body_and_output() -> None:
    native = {
        "schemaVersion": "messages-v1",
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "What is 17 + 25?"}]}],
        "inferenceConfig": {"max_new_tokens": 64, "temperature": 0.5},
    }
    assert to_converse("nova", native) == CONVERSE
    reply, usage = _answer(NOVA, CONVERSE)
    output = to_native("nova", NOVA, reply, usage, CONVERSE)
    assert output == {
        "output": {"message": {"role": "assistant", "content": [{"text": "The answer is 42."}]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": usage["inputTokens"],
            "outputTokens": usage["outputTokens"],
            "totalTokens": usage["inputTokens"] + usage["outputTokens"],
        },
    }


def test_llama_prompt_template_is_read_back_into_the_conversation() -> None:
    prompt = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 17 + 25?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    native = {"prompt": prompt, "max_gen_len": 64, "temperature": 0.5}
    assert to_converse("llama", native) == CONVERSE
    reply, usage = _answer(LLAMA, CONVERSE)
    assert to_native("llama", LLAMA, reply, usage, CONVERSE) == {
        "generation": "The answer is 42.",
        "prompt_token_count": usage["inputTokens"],
        "generation_token_count": usage["outputTokens"],
        "stop_reason": "stop",
    }


def test_llama_plain_prompt_is_one_user_turn_and_a_cut_reply_stops_for_length() -> None:
    body = to_converse("llama", {"prompt": "Tell me a story", "max_gen_len": 3})
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "Tell me a story"}]}],
        "inferenceConfig": {"maxTokens": 3},
    }
    reply, usage = _answer(LLAMA, body)
    output = to_native("llama", LLAMA, reply, usage, body)
    assert output["stop_reason"] == "length" and output["generation_token_count"] == 3


@pytest.mark.parametrize(
    ("name", "model_input", "message"),
    [
        ("nova", {"messages": []}, "messages must be a non-empty list"),
        ("llama", {"max_gen_len": 5}, "prompt must be a non-empty string"),
        ("anthropic", ["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_malformed_records(name: str, model_input: Any, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        to_converse(name, model_input)


def test_converse_jobs_answer_with_the_converse_response_body() -> None:
    assert to_converse("converse", CONVERSE) is CONVERSE
    reply, usage = _answer(NOVA, CONVERSE)
    output = to_native("converse", NOVA, reply, usage, CONVERSE)
    assert output["output"]["message"]["content"] == [{"text": "The answer is 42."}]
    assert output["usage"] == usage


def test_batch_settings_validate_before_changing() -> None:
    settings = BatchSettings()
    assert settings.merged({"minimum_records": 3}).minimum_records == 3
    for bad in ({"minimum_records": 0}, {"faults": {"x": "explode"}}, {"nope": 1}, {"events": "sns"}):
        with pytest.raises(ValueError):
            settings.merged(bad)
    faulty = settings.merged({"faults": {"flaky": "partial", "*": "fail"}})
    assert faulty.fault_for("a-flaky-job") == "partial"
    assert faulty.fault_for("other") == "fail"
    assert settings.fault_for("other") is None
