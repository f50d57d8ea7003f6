"""Specification of the prompt-file format: shapes, job defaults, fan-out, and how bad lines are reported."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bedrock_pipeline.domain import JobRef
from bedrock_pipeline.media import decoded_for_boto3
from bedrock_pipeline.prompt_file import (
    CONVERSE_BODY_KEYS,
    MAX_NESTING_DEPTH,
    InferenceSettings,
    JobDefaults,
    Limits,
    LineError,
    ParsedPromptFile,
    WorkItem,
    parse_prompt_file,
)
from tests.images import b64, png

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


def jsonl(*records: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def parse(*records: Any, models: tuple[str, ...] = (HAIKU,), **kwargs: Any) -> ParsedPromptFile:
    return parse_prompt_file(jsonl(*records), default_models=models, **kwargs)


_CONVERSE_INPUT = (
    botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
)


def assert_valid_converse_request(item: WorkItem) -> None:
    """botocore's own validator for the Converse call the runner will make (raises on any mismatch)."""
    validate_parameters({"modelId": item.model_id, **item.request}, _CONVERSE_INPUT.input_shape)


# --- simple shape --------------------------------------------------------------------------------------
def test_given_only_a_prompt_when_parsed_then_one_item_per_default_model_with_a_line_based_id() -> None:
    parsed = parse({"prompt": "What is 2+2?"}, models=(HAIKU, NOVA))

    assert parsed.errors == [] and parsed.rejected is None
    assert [(i.record_id, i.line_number, i.model_id) for i in parsed.items] == [
        ("line-1", 1, HAIKU),
        ("line-1", 1, NOVA),
    ]
    item = parsed.items[0]
    assert item.request == {"messages": [{"role": "user", "content": [{"text": "What is 2+2?"}]}]}
    assert item.shape == "simple" and item.stream is False and item.tags == {}


def test_given_every_simple_field_when_parsed_then_it_maps_onto_the_converse_request() -> None:
    record = {
        "id": "q1",
        "prompt": "Hi",
        "model": NOVA,
        "system": "Be brief.",
        "max_tokens": 512,
        "temperature": 0.1,
        "top_p": 0.9,
        "stream": True,
        "tags": {"suite": "smoke", "n": 3, "gold": False, "ratio": 0.5},
    }
    [item] = parse(record).items

    assert item.record_id == "q1" and item.model_id == NOVA and item.stream is True
    assert item.request == {
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.1, "topP": 0.9},
    }
    assert item.tags == {"suite": "smoke", "n": "3", "gold": "false", "ratio": "0.5"}
    assert_valid_converse_request(item)


def test_given_tools_and_a_tool_choice_when_parsed_then_a_converse_tool_config_is_built() -> None:
    weather = {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    records = [
        {"id": "a", "prompt": "Weather in Oslo?", "tools": [weather], "tool_choice": "get_weather"},
        {"id": "b", "prompt": "Weather?", "tools": [{"toolSpec": weather}], "tool_choice": "any"},
        {"id": "c", "prompt": "Weather?", "tools": [weather]},
    ]
    a, b, c = parse(*records).items

    assert a.request["toolConfig"] == {
        "tools": [{"toolSpec": weather}],
        "toolChoice": {"tool": {"name": "get_weather"}},
    }
    assert b.request["toolConfig"]["toolChoice"] == {"any": {}}
    assert "toolChoice" not in c.request["toolConfig"]
    for item in (a, b, c):
        assert_valid_converse_request(item)


def test_given_unknown_fields_on_a_record_then_they_are_ignored() -> None:
    parsed = parse({"prompt": "Hi", "expected": "Hello", "notes": {"x": 1}})
    assert parsed.errors == [] and len(parsed.items) == 1


def test_given_a_record_model_then_it_runs_on_that_model_only_whatever_the_defaults() -> None:
    parsed = parse({"job": {"models": [HAIKU, NOVA]}}, {"prompt": "a", "model": LLAMA}, {"prompt": "b"})
    assert [(i.record_id, i.model_id) for i in parsed.items] == [
        ("line-2", LLAMA),
        ("line-3", HAIKU),
        ("line-3", NOVA),
    ]


def test_given_several_models_then_each_item_owns_its_request_and_tags() -> None:
    first, second = parse({"prompt": "Hi", "tags": {"a": "1"}}, models=(HAIKU, NOVA)).items
    first.request["messages"].append({"role": "assistant", "content": [{"text": "x"}]})
    first.tags["b"] = "2"
    assert len(second.request["messages"]) == 1 and second.tags == {"a": "1"}


# --- job defaults --------------------------------------------------------------------------------------
def test_given_a_job_header_then_its_models_inference_and_tags_apply_and_records_override_them() -> None:
    header = {
        "job": {
            "models": [HAIKU, NOVA, HAIKU],
            "experiment": "nightly",
            "budget_usd": 1.5,
            "inference": {"max_tokens": 256, "temperature": 0.0},
            "stream": True,
            "tags": {"team": "search", "tier": 1},
        }
    }
    parsed = parse(header, {"prompt": "a", "temperature": 0.7, "stream": False, "tags": {"tier": "2"}})

    assert parsed.header_line_number == 1 and parsed.errors == []
    assert parsed.job.models == (HAIKU, NOVA)  # duplicates dropped
    assert parsed.job.experiment == "nightly" and parsed.job.budget_usd == 1.5
    assert [i.model_id for i in parsed.items] == [HAIKU, NOVA]
    item = parsed.items[0]
    assert item.request["inferenceConfig"] == {"maxTokens": 256, "temperature": 0.7}
    assert item.stream is False
    assert item.tags == {"team": "search", "tier": "2"}


def test_given_caller_defaults_and_a_header_then_the_header_wins_field_by_field() -> None:
    caller = JobDefaults(
        models=(LLAMA,),
        experiment="from-sidecar",
        budget_usd=5.0,
        inference=InferenceSettings(max_tokens=100, top_p=0.5),
        tags={"owner": "ops", "env": "dev"},
    )
    header = {"job": {"models": [NOVA], "inference": {"max_tokens": 300}, "tags": {"env": "prod"}}}

    parsed = parse(header, {"prompt": "a"}, defaults=caller, models=(HAIKU,))

    assert parsed.job == JobDefaults(
        models=(NOVA,),
        experiment="from-sidecar",
        budget_usd=5.0,
        inference=InferenceSettings(max_tokens=300, top_p=0.5),
        tags={"owner": "ops", "env": "prod"},
    )
    [item] = parsed.items
    assert item.model_id == NOVA and item.request["inferenceConfig"] == {"maxTokens": 300, "topP": 0.5}


def test_given_caller_defaults_without_a_header_then_they_apply_as_given() -> None:
    caller = JobDefaults.model_validate({"models": [NOVA], "stream": True, "tags": {"k": 1}})
    [item] = parse({"prompt": "a"}, defaults=caller, models=(HAIKU,)).items
    assert (item.model_id, item.stream, item.tags) == (NOVA, True, {"k": "1"})


def test_given_a_header_after_blank_lines_then_it_still_counts_as_the_header() -> None:
    parsed = parse_prompt_file(b'\n\n{"job": {"models": ["' + NOVA.encode() + b'"]}}\n{"prompt": "a"}\n')
    assert parsed.header_line_number == 3 and [i.model_id for i in parsed.items] == [NOVA]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"job": {"modles": [HAIKU]}}, "job.modles"),
        ({"job": {"budget_usd": "1.5"}}, "job.budget_usd"),
        ({"job": {"budget_usd": -1.0}}, "job.budget_usd"),
        ('{"job": {"budget_usd": NaN}}', "job.budget_usd"),
        ({"job": {"models": HAIKU}}, "job.models"),
        ({"job": {"inference": {"temperature": 3}}}, "job.inference.temperature"),
        ({"job": {"tags": {"a": {"b": 1}}}}, "job.tags"),
        ({"job": [HAIKU]}, "job"),
        ({"job": {}, "extra": 1}, "extra"),
    ],
)
def test_given_an_invalid_job_header_then_the_whole_file_is_rejected(
    header: dict[str, Any] | str, reason: str
) -> None:
    parsed = parse(header, {"prompt": "a"})
    assert parsed.items == [] and parsed.rejected is not None
    assert parsed.rejected.startswith("invalid job header on line 1") and reason in parsed.rejected


def test_given_no_model_anywhere_then_each_record_is_a_line_error() -> None:
    parsed = parse({"prompt": "a"}, {"recordId": "r", "modelInput": CONVERSE_INPUT}, models=())
    assert [e.line_number for e in parsed.errors] == [1, 2]
    assert "no model to run" in parsed.errors[0].reason


# --- Bedrock batch-inference shape ---------------------------------------------------------------------
CONVERSE_INPUT = {
    "messages": [{"role": "user", "content": [{"text": "Summarise this."}]}],
    "system": [{"text": "You are terse."}],
    "inferenceConfig": {"maxTokens": 64, "stopSequences": ["END"]},
    "additionalModelRequestFields": {"top_k": 5},
}


def test_given_a_converse_model_input_then_it_runs_unchanged_on_every_job_model() -> None:
    parsed = parse({"recordId": "CALL0000001", "modelInput": CONVERSE_INPUT}, models=(HAIKU, NOVA))
    assert [(i.record_id, i.model_id, i.shape) for i in parsed.items] == [
        ("CALL0000001", HAIKU, "bedrock-batch"),
        ("CALL0000001", NOVA, "bedrock-batch"),
    ]
    assert all(i.request == CONVERSE_INPUT for i in parsed.items)
    assert_valid_converse_request(parsed.items[0])


def test_given_job_inference_defaults_then_they_fill_only_unset_keys_of_a_bedrock_record() -> None:
    header = {"job": {"inference": {"max_tokens": 999, "temperature": 0.2}}}
    [item] = parse(header, {"modelInput": CONVERSE_INPUT}).items
    assert item.record_id == "line-2"
    assert item.request["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "stopSequences": ["END"]}


def test_given_a_model_input_with_a_model_id_then_the_line_is_rejected_with_a_hint() -> None:
    parsed = parse({"modelInput": {**CONVERSE_INPUT, "modelId": HAIKU}})
    assert parsed.items == [] and "modelId" in parsed.errors[0].reason and "job" in parsed.errors[0].reason


def test_given_an_anthropic_messages_body_then_it_is_converted_to_converse() -> None:
    model_input = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 300,
        "temperature": 0.3,
        "top_k": 40,
        "system": [{"type": "text", "text": "Long shared context", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "Find order 7"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"n": 7}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "shipped", "is_error": False}
                ],
            },
        ],
    }
    [item] = parse({"recordId": "A1", "modelInput": model_input}).items

    assert item.request == {
        "messages": [
            {"role": "user", "content": [{"text": "Find order 7"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"n": 7}}}],
            },
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "shipped"}]}}],
            },
        ],
        "system": [{"text": "Long shared context"}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.3},
        "additionalModelRequestFields": {"top_k": 40},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "lookup",
                        "description": "Look up",
                        "inputSchema": {"json": {"type": "object"}},
                    }
                }
            ],
            "toolChoice": {"auto": {}},
        },
    }
    assert_valid_converse_request(item)


def test_given_an_anthropic_image_block_then_the_line_is_rejected_as_not_convertible() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    parsed = parse({"modelInput": {"max_tokens": 10, "messages": [{"role": "user", "content": [image]}]}})
    assert parsed.items == [] and "'image' cannot be converted" in parsed.errors[0].reason


# --- media bytes in a Bedrock record: base64 in the file and the item, raw bytes only for boto3 -------
def _image_record(image: dict[str, Any], *, record_id: str = "IMG1") -> dict[str, Any]:
    content = [{"text": "What colour is this?"}, {"image": image}]
    return {"recordId": record_id, "modelInput": {"messages": [{"role": "user", "content": content}]}}


def test_given_a_base64_png_then_the_item_keeps_the_base64_and_boto3_gets_the_png_bytes() -> None:
    picture = png()
    record = _image_record({"format": "png", "source": {"bytes": b64(picture)}})

    parsed = parse(record)

    assert parsed.errors == []
    [item] = parsed.items
    assert item.request == record["modelInput"]  # JSON all the way: queue message, results, spans
    WorkItem.model_validate_json(item.model_dump_json())
    sent = decoded_for_boto3(item.request)["messages"][0]["content"][1]["image"]["source"]["bytes"]
    assert sent == picture
    assert_valid_converse_request(item.model_copy(update={"request": decoded_for_boto3(item.request)}))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (
            {"format": "png", "source": {"bytes": "not base64!"}},
            "message 1 content 2: image bytes are not valid base64",
        ),
        (
            {"format": "png", "source": {"bytes": b64(b64(png()).encode())}},
            "message 1 content 2: image bytes are not a png image (base64 of base64? decode it once)",
        ),
        (
            {"format": "jpeg", "source": {"bytes": b64(png())}},
            "message 1 content 2: image bytes are not a jpeg image",
        ),
        (
            {"format": "jpg", "source": {"bytes": b64(png())}},
            "message 1 content 2: image format 'jpg' is not one of ['gif', 'jpeg', 'png', 'webp']",
        ),
        (
            {"format": "png", "source": {"bytes": [137, 80, 78, 71]}},
            "message 1 content 2: image bytes must be a base64 string, not an array",
        ),
        ({"format": "png", "source": {"bytes": ""}}, "message 1 content 2: image bytes are empty"),
    ],
)
def test_given_bad_image_bytes_then_the_line_error_names_the_block(
    image: dict[str, Any], reason: str
) -> None:
    parsed = parse(_image_record(image), {"prompt": "still runs"})

    assert [e.reason for e in parsed.errors] == [reason]
    assert [i.record_id for i in parsed.items] == ["line-2"]


def test_given_media_inside_a_tool_result_then_it_is_checked_and_decoded_too() -> None:
    document = {"format": "txt", "name": "notes", "source": {"bytes": b64(b"plain notes")}}
    result = {"toolUseId": "t1", "content": [{"document": document}]}
    messages = [
        {"role": "user", "content": [{"text": "Read my notes"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "notes", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": result}]},
    ]
    tools = {"tools": [{"toolSpec": {"name": "notes", "inputSchema": {"json": {"type": "object"}}}}]}
    good = {"recordId": "ok", "modelInput": {"messages": messages, "toolConfig": tools}}
    bad_result = {"toolUseId": "t1", "content": [{"document": {**document, "source": {"bytes": "%%"}}}]}
    bad_messages = [*messages[:2], {"role": "user", "content": [{"toolResult": bad_result}]}]
    bad = {"recordId": "bad", "modelInput": {"messages": bad_messages, "toolConfig": tools}}

    parsed = parse(good, bad)

    [item] = parsed.items
    decoded = decoded_for_boto3(item.request)["messages"][2]["content"][0]["toolResult"]["content"][0]
    assert decoded["document"]["source"]["bytes"] == b"plain notes"
    assert [e.reason for e in parsed.errors] == [
        "message 3 content 1 toolResult content 1: document bytes are not valid base64"
    ]


def test_given_an_image_over_bedrocks_size_limit_then_it_is_a_line_error_even_with_room_in_the_limits() -> (
    None
):
    roomy = Limits(max_line_bytes=8 << 20, max_file_bytes=16 << 20, max_item_bytes=8 << 20)
    at_limit = png() + b"\x00" * (int(3.75 * 1024 * 1024) - len(png()))
    over = at_limit + b"\x00"

    parsed = parse(
        _image_record({"format": "png", "source": {"bytes": b64(at_limit)}}, record_id="at"),
        _image_record({"format": "png", "source": {"bytes": b64(over)}}, record_id="over"),
        limits=roomy,
    )

    assert [i.record_id for i in parsed.items] == ["at"]
    assert [e.reason for e in parsed.errors] == [
        "message 1 content 2: image bytes are 3,932,161 bytes; Bedrock's limit is 3,932,160"
    ]


def test_given_an_s3_location_or_document_text_then_there_are_no_bytes_to_check() -> None:
    video = {"format": "mp4", "source": {"s3Location": {"uri": "s3://bucket/clip.mp4"}}}
    document = {"format": "txt", "name": "n", "source": {"text": "inline text"}}
    content = [{"text": "Describe"}, {"video": video}, {"document": document}]
    record = {"modelInput": {"messages": [{"role": "user", "content": content}]}}

    [item] = parse(record).items

    assert decoded_for_boto3(item.request) is item.request  # nothing to decode: no copy


def test_the_accepted_converse_keys_are_exactly_botocores_converse_members_except_model_id() -> None:
    assert set(_CONVERSE_INPUT.input_shape.members) - {"modelId"} == CONVERSE_BODY_KEYS


# --- bad lines -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"prompt": "a"', "not valid JSON"),
        ('{"prompt": NaN}', "NaN is not valid JSON"),
        ("[1, 2]", "not an array"),
        ('"just a string"', "not a string"),
        ("42", "not a number"),
        ("null", "not null"),
        ('{"text": "hello"}', 'needs "prompt"'),
        ('{"prompt": ""}', "prompt: must not be empty"),
        ('{"prompt": "   "}', "prompt: must not be empty"),
        ('{"prompt": 5}', "prompt: Input should be a valid string"),
        ('{"prompt": "a", "max_tokens": "512"}', "max_tokens"),
        ('{"prompt": "a", "max_tokens": 0}', "max_tokens"),
        ('{"prompt": "a", "max_tokens": 1.5}', "max_tokens"),
        ('{"prompt": "a", "temperature": 1.5}', "temperature"),
        ('{"prompt": "a", "top_p": true}', "top_p"),
        ('{"prompt": "a", "stream": "yes"}', "stream"),
        ('{"prompt": "a", "model": ""}', "model"),
        ('{"prompt": "a", "id": ""}', "record id"),
        ('{"prompt": "a", "id": true}', "id"),
        ('{"prompt": "a", "tags": {"a": {"b": 1}}}', "tag 'a' must be a string, number or boolean"),
        ('{"prompt": "a", "tags": {"a": [1]}}', "tag 'a'"),
        ('{"prompt": "a", "tags": {"a": null}}', "tag 'a'"),
        ('{"prompt": "a", "tags": ["x"]}', "tags"),
        ('{"prompt": "a", "tool_choice": "auto"}', '"tool_choice" needs "tools"'),
        (
            '{"prompt": "a", "tools": [{"name": "f", "inputSchema": {"json": {}}}], "tool_choice": "g"}',
            "'g' is not",
        ),
        ('{"prompt": "a", "tools": [{"name": "bad name", "inputSchema": {"json": {}}}]}', "tools.0.name"),
        ('{"prompt": "a", "tools": [{"name": "f", "inputSchema": {}}]}', "tools.0.inputSchema"),
        ('{"prompt": "a", "modelInput": {}}', "not both"),
        ('{"modelInput": "hello"}', "modelInput"),
        ('{"modelInput": {"messages": []}}', "modelInput.messages"),
        ('{"modelInput": {"messages": [{"role": "system", "content": [{"text": "x"}]}]}}', "role"),
        ('{"job": {"models": []}}', "only allowed on the first line"),
    ],
)
def test_given_a_bad_line_then_it_is_reported_with_its_number_and_reason_and_good_lines_still_run(
    line: str, reason: str
) -> None:
    parsed = parse({"prompt": "good before"}, line, {"prompt": "good after"})

    assert [i.line_number for i in parsed.items] == [1, 3]
    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert error.line_number == 2 and reason in error.reason, error.reason
    assert error.excerpt == line


def test_given_invalid_utf8_then_that_line_is_an_error_and_its_neighbours_parse() -> None:
    data = b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n{"prompt": "b"}\n'
    parsed = parse_prompt_file(data, default_models=(HAIKU,))
    assert [i.line_number for i in parsed.items] == [1, 3]
    assert parsed.errors[0].line_number == 2 and "not valid UTF-8" in parsed.errors[0].reason


def test_given_a_duplicate_record_id_then_the_later_line_is_an_error() -> None:
    parsed = parse(
        {"id": "x", "prompt": "a"}, {"recordId": "x", "modelInput": CONVERSE_INPUT}, {"id": 7, "prompt": "c"}
    )
    assert [i.record_id for i in parsed.items] == ["x", "7"]
    assert (
        parsed.errors[0].line_number == 2
        and "duplicate record id 'x' (first on line 1)" in parsed.errors[0].reason
    )


def test_given_a_line_over_the_line_limit_then_only_that_line_is_rejected() -> None:
    parsed = parse({"prompt": "short"}, {"prompt": "x" * 200}, limits=Limits(max_line_bytes=100))
    assert len(parsed.items) == 1
    assert parsed.errors[0].line_number == 2 and "the limit is 100" in parsed.errors[0].reason


def test_given_a_record_too_big_for_one_queue_message_then_it_is_a_line_error() -> None:
    parsed = parse({"prompt": "x" * 5000}, {"prompt": "ok"}, limits=Limits(max_item_bytes=4096))
    assert [i.line_number for i in parsed.items] == [2]
    assert "work item is" in parsed.errors[0].reason and "4,096" in parsed.errors[0].reason


def test_given_a_very_long_bad_line_then_its_excerpt_is_truncated() -> None:
    [error] = parse("x" * 5000).errors
    assert error.excerpt == "x" * 200 + "…"


def test_given_deeply_nested_json_then_it_is_a_line_error_saying_so_with_the_limit() -> None:
    """Valid JSON 100,000 levels deep is not "invalid JSON" (nor a recursion error): it is too deep."""
    parsed = parse("[" * 100_000 + "]" * 100_000, {"prompt": "ok"})
    assert len(parsed.items) == 1 and parsed.errors[0].line_number == 1
    reason = parsed.errors[0].reason
    assert "nested too deeply" in reason and "100,000 levels" in reason
    assert f"the limit is {MAX_NESTING_DEPTH}" in reason and "JSON" not in reason


def test_given_nesting_at_the_limit_or_brackets_inside_strings_then_the_record_runs() -> None:
    at_limit = {
        "prompt": "ok",
        "extra": json.loads("[" * (MAX_NESTING_DEPTH - 1) + "]" * (MAX_NESTING_DEPTH - 1)),
    }
    brackets_in_text = {"prompt": "[" * 5000 + "{" * 5000}
    parsed = parse(at_limit, brackets_in_text)
    assert parsed.errors == [] and len(parsed.items) == 2


def test_given_reserved_tags_on_a_record_then_it_still_runs_and_a_warning_names_them() -> None:
    parsed = parse(
        {"job": {"tags": {"mlflow.user": "x"}}},
        {"prompt": "a", "tags": {"pipeline.job_id": "mine", "team": "a"}},
        {"prompt": "b", "tags": {"team": "b"}},
    )
    assert [i.line_number for i in parsed.items] == [2, 3] and parsed.errors == []
    assert [(w.line_number, w.reason.split(" are reserved")[0]) for w in parsed.warnings] == [
        (1, "tags ['mlflow.user']"),
        (2, "tags ['pipeline.job_id']"),
    ]
    assert "still runs" in parsed.warnings[1].reason


# --- file-level handling -------------------------------------------------------------------------------
def test_given_blank_lines_a_bom_and_crlf_then_records_parse_with_physical_line_numbers() -> None:
    data = b'\xef\xbb\xbf{"prompt": "a"}\r\n\r\n   \r\n{"prompt": "b"}\r\n\r\n'
    parsed = parse_prompt_file(data, default_models=(HAIKU,))
    assert parsed.errors == []
    assert [(i.line_number, i.request["messages"][0]["content"][0]["text"]) for i in parsed.items] == [
        (1, "a"),
        (4, "b"),
    ]


def test_given_an_empty_file_then_nothing_runs_and_nothing_is_rejected() -> None:
    assert parse_prompt_file(b"") == ParsedPromptFile()


def test_given_a_file_over_the_size_limit_then_it_is_rejected_as_a_whole() -> None:
    parsed = parse({"prompt": "a" * 100}, limits=Limits(max_file_bytes=50))
    assert parsed.items == [] and parsed.errors == []
    assert parsed.rejected == "file is 115 bytes; the limit is 50"


def test_given_more_records_than_allowed_then_the_file_is_rejected_but_the_header_does_not_count() -> None:
    header = {"job": {"models": [HAIKU]}}
    assert parse(header, {"prompt": "a"}, {"prompt": "b"}, limits=Limits(max_records=2)).rejected is None

    parsed = parse(header, {"prompt": "a"}, {"prompt": "b"}, "junk", limits=Limits(max_records=2))
    assert parsed.items == [] and parsed.rejected == "file has 3 records; the limit is 2"


def test_given_a_rejection_reason_then_a_rejected_result_is_built_for_callers() -> None:
    assert ParsedPromptFile.rejection("too big") == ParsedPromptFile(rejected="too big")


# --- work items travel as queue messages, bound to their job -------------------------------------------
_JOB = JobRef(
    job_id="j",
    experiment_id="1",
    parent_run_id="r",
    source_bucket="b",
    source_key="incoming/x.jsonl",
    source_etag="e",
)


def test_given_a_parsed_item_bound_to_its_job_when_sent_then_the_message_round_trips_exactly() -> None:
    [item] = parse({"id": "q", "prompt": "héllo ✓", "tags": {"a": 1}, "system": "s"}).items
    bound = item.bound_to(_JOB)
    text = bound.to_message()
    assert WorkItem.from_message(text) == bound
    assert WorkItem.from_message(text.encode()) == bound
    assert bound.key == "e:q:" + item.model_id and len(bound.digest) == 32


def test_given_an_item_without_its_job_then_it_cannot_become_a_message() -> None:
    [item] = parse({"id": "q", "prompt": "hi"}).items
    with pytest.raises(ValueError, match="not bound to a job"):
        item.to_message()
    with pytest.raises(ValueError, match="not bound to a job"):
        WorkItem.from_message(item.model_dump_json())


def test_given_a_malformed_message_body_then_from_message_raises_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        WorkItem.from_message('{"record_id": "x"}')


def test_line_errors_carry_number_reason_and_excerpt() -> None:
    assert parse("oops").errors == [
        LineError(
            line_number=1, reason="not valid JSON: Expecting value: line 1 column 1 (char 0)", excerpt="oops"
        )
    ]


# --- properties ----------------------------------------------------------------------------------------
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_prompt = _text.filter(lambda s: s.strip() != "")
_models = st.lists(
    st.sampled_from([HAIKU, NOVA, LLAMA, "us.amazon.nova-pro-v1:0"]), min_size=1, max_size=3, unique=True
)


@st.composite
def simple_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    prompts = draw(st.lists(_prompt, max_size=15))
    ids = draw(st.lists(_prompt, min_size=len(prompts), max_size=len(prompts), unique=True))
    records = []
    for record_id, prompt in zip(ids, prompts, strict=True):
        record: dict[str, Any] = {"prompt": prompt}
        if draw(st.booleans()):
            record["id"] = record_id
        if draw(st.booleans()):
            record["max_tokens"] = draw(st.integers(1, 4096))
        if draw(st.booleans()):
            record["tags"] = draw(
                st.dictionaries(_text, st.one_of(_text, st.integers(), st.booleans()), max_size=3)
            )
        records.append(record)
    return records


@settings(max_examples=60, deadline=None)
@given(records=simple_records(), models=_models, crlf=st.booleans(), bom=st.booleans())
def test_property_valid_simple_records_parse_back_in_order_fanned_out_over_every_model(
    records: list[dict[str, Any]], models: list[str], crlf: bool, bom: bool
) -> None:
    explicit_ids = {r["id"] for r in records if "id" in r}
    assume(not any(i.startswith("line-") for i in explicit_ids))  # default ids are "line-<n>"
    newline = "\r\n" if crlf else "\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + "".join(json.dumps(r) + newline for r in records).encode()

    parsed = parse_prompt_file(data, default_models=models)

    assert parsed.errors == [] and parsed.rejected is None
    assert len(parsed.items) == len(records) * len(models)
    expected = [
        (r.get("id", f"line-{n}"), r["prompt"], model)
        for n, r in enumerate(records, start=1)
        for model in models
    ]
    assert [
        (i.record_id, i.request["messages"][0]["content"][0]["text"], i.model_id) for i in parsed.items
    ] == expected
    for item in parsed.items:
        bound = item.bound_to(_JOB)
        assert WorkItem.from_message(bound.to_message()) == bound


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), st.lists(st.sampled_from([
    b"{", b"}", b"[", b"]", b'"prompt"', b'"modelInput"', b'"job"', b'"id"', b":", b",", b'"x"', b"1", b"\n",
    b"\r\n", b" ", b"\xff", b"\xef\xbb\xbf", b'{"prompt": "p"}', b"null", b'"tags"', b'{"messages": []}',
])).map(b"".join)))  # fmt: skip
def test_property_arbitrary_bytes_never_raise_and_every_non_blank_line_is_an_item_or_an_error(
    data: bytes,
) -> None:
    parsed = parse_prompt_file(data, default_models=(HAIKU,))

    body = data.removeprefix(b"\xef\xbb\xbf")
    non_blank = {n for n, line in enumerate(body.split(b"\n"), start=1) if line.removesuffix(b"\r").strip()}
    if parsed.rejected is not None:
        assert parsed.items == [] and parsed.header_line_number == min(non_blank)
        return
    item_lines = {i.line_number for i in parsed.items}
    error_lines = [e.line_number for e in parsed.errors]
    header = {parsed.header_line_number} if parsed.header_line_number else set()
    assert len(error_lines) == len(set(error_lines))
    assert item_lines.isdisjoint(error_lines)
    assert item_lines | set(error_lines) | header == non_blank


_bad_lines = st.sampled_from(
    ["not json", "[]", '{"prompt": ""}', '{"prompt": "a", "max_tokens": -1}', '{"foo": 1}', "\udcff", "{"]
)


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(_prompt, min_size=1, max_size=12),
    injected=st.lists(st.tuples(st.integers(0, 12), _bad_lines), max_size=6),
    models=_models,
)
def test_property_errors_point_exactly_at_the_injected_bad_lines(
    prompts: list[str], injected: list[tuple[int, str]], models: list[str]
) -> None:
    lines: list[tuple[bytes, bool]] = [(json.dumps({"prompt": p}).encode(), False) for p in prompts]
    for position, bad in sorted(injected, reverse=True):
        lines.insert(min(position, len(lines)), (bad.encode("utf-8", errors="surrogateescape"), True))
    bad_numbers = [n for n, (_, is_bad) in enumerate(lines, start=1) if is_bad]

    parsed = parse_prompt_file(b"\n".join(line for line, _ in lines), default_models=models)

    assert [e.line_number for e in parsed.errors] == bad_numbers
    assert len(parsed.items) == len(prompts) * len(models)
    assert [i.request["messages"][0]["content"][0]["text"] for i in parsed.items[:: len(models)]] == prompts
