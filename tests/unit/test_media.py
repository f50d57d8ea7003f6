"""The media-bytes rule: base64 in every JSON the pipeline keeps, raw bytes only in the boto3 call."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bedrock_pipeline.media import MediaBytes, decode_base64, decoded_for_boto3, is_image_of
from bedrock_pipeline.prompt_file import parse_prompt_file
from tests.images import b64, png

MODEL = "amazon.nova-lite-v1:0"
IMAGE_START = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff\xe0",
    "gif": b"GIF89a",
    "webp": b"RIFF\x10\x00\x00\x00WEBP",
}


def _request(image_format: str, data: str) -> dict[str, Any]:
    image = {"format": image_format, "source": {"bytes": data}}
    return {"messages": [{"role": "user", "content": [{"text": "look"}, {"image": image}]}]}


def _line(request: dict[str, Any]) -> bytes:
    return json.dumps({"recordId": "r", "modelInput": request}).encode() + b"\n"


@given(st.sampled_from(sorted(IMAGE_START)), st.binary(max_size=300))
def test_any_image_of_its_format_parses_and_reaches_boto3_as_exactly_its_bytes(
    image_format: str, rest: bytes
) -> None:
    data = IMAGE_START[image_format] + rest
    request = _request(image_format, base64.b64encode(data).decode())
    before = copy.deepcopy(request)

    parsed = parse_prompt_file(_line(request), default_models=(MODEL,))

    assert parsed.errors == []
    sent = decoded_for_boto3(parsed.items[0].request)["messages"][0]["content"][1]["image"]["source"]
    assert sent["bytes"] == data and isinstance(sent["bytes"], bytes)
    assert parsed.items[0].request == before  # the item keeps what the file had


@given(st.text(max_size=40))
def test_a_string_that_is_not_strict_base64_is_a_line_error_never_sent(text: str) -> None:
    try:
        decode_base64(text)
    except ValueError:
        parsed = parse_prompt_file(_line(_request("png", text)), default_models=(MODEL,))
        assert parsed.items == []
        assert parsed.errors[0].reason == "message 1 content 2: image bytes are not valid base64"
    else:  # valid base64 (or empty): then it is judged as an image, not as base64
        parsed = parse_prompt_file(_line(_request("png", text)), default_models=(MODEL,))
        assert all("not valid base64" not in error.reason for error in parsed.errors)


@pytest.mark.parametrize("text", ["iVBO Rw==", "iVBORw0KGgo\n", "iVBORw", "-_-_"])
def test_whitespace_missing_padding_and_url_safe_alphabet_are_not_base64_here(text: str) -> None:
    with pytest.raises(ValueError):
        decode_base64(text)


def test_the_decoded_bytes_print_as_a_placeholder_so_traces_do_not_carry_them() -> None:
    picture = png()
    sent = decoded_for_boto3(_request("png", b64(picture)))["messages"][0]["content"][1]["image"]["source"]

    assert isinstance(sent["bytes"], MediaBytes)
    assert str(sent["bytes"]) == repr(sent["bytes"]) == f"<{len(picture)} bytes>"
    assert base64.b64encode(sent["bytes"]) == b64(picture).encode()  # what botocore puts on the wire


def test_guard_content_and_system_images_are_decoded_and_the_request_is_left_as_it_was() -> None:
    guard = {"guardContent": {"image": {"format": "png", "source": {"bytes": b64(png())}}}}
    request = {"system": [guard], "messages": [{"role": "user", "content": [{"text": "hi"}, guard]}]}
    before = copy.deepcopy(request)

    decoded = decoded_for_boto3(request)

    assert decoded["system"][0]["guardContent"]["image"]["source"]["bytes"] == png()
    assert decoded["messages"][0]["content"][1]["guardContent"]["image"]["source"]["bytes"] == png()
    assert request == before


@pytest.mark.parametrize(
    ("image_format", "data", "expected"),
    [
        ("png", png(), True),
        ("webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", True),
        ("webp", b"RIFF\x00\x00\x00\x00WAVEfmt ", False),  # a RIFF file, but audio
        ("gif", b"GIF87a...", True),
        ("jpeg", png(), False),
        ("bmp", b"BM....", False),
    ],
)
def test_an_image_is_recognised_by_how_its_format_starts(
    image_format: str, data: bytes, expected: bool
) -> None:
    assert is_image_of(image_format, data) is expected
