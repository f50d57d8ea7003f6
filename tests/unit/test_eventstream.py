"""The emulator's event-stream encoder, checked against botocore's own decoder (CRCs included)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from local_stack.bedrock_emulator.eventstream import encode_event, encode_exception, encode_message


def _decode_all(data: bytes, piece: int | None = None) -> list:
    buffer = EventStreamBuffer()
    messages = []
    step = piece or len(data)
    for start in range(0, len(data), step):
        buffer.add_data(data[start : start + step])
        messages.extend(buffer)
    return messages


def test_given_an_event_when_decoded_by_botocore_then_headers_and_payload_round_trip() -> None:
    payload = {"delta": {"text": "héllo wörld"}, "contentBlockIndex": 0}

    [message] = _decode_all(encode_event("contentBlockDelta", payload))

    assert message.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(message.payload) == payload
    assert message.to_response_dict()["status_code"] == 200


def test_given_an_encoded_message_then_prelude_lengths_and_both_crcs_are_correct() -> None:
    data = encode_message({":event-type": "messageStop"}, b'{"stopReason":"end_turn"}')

    total_length, headers_length, prelude_crc = struct.unpack("!III", data[:12])
    [message_crc] = struct.unpack("!I", data[-4:])

    assert total_length == len(data)
    assert headers_length == len(data) - 12 - len(b'{"stopReason":"end_turn"}') - 4
    assert prelude_crc == zlib.crc32(data[:8])
    assert message_crc == zlib.crc32(data[:-4])
    [message] = _decode_all(data)
    assert message.prelude.crc == prelude_crc
    assert message.crc == message_crc


def test_given_many_events_split_into_small_pieces_when_decoded_then_all_arrive_in_order() -> None:
    events = [
        encode_event("contentBlockDelta", {"delta": {"text": f"w{i} "}, "contentBlockIndex": 0})
        for i in range(50)
    ]

    messages = _decode_all(b"".join(events), piece=7)

    assert [json.loads(m.payload)["delta"]["text"] for m in messages] == [f"w{i} " for i in range(50)]


@pytest.mark.parametrize("position", [5, 20, -2], ids=["prelude", "body", "message-crc"])
def test_given_a_corrupted_byte_when_decoded_then_botocore_reports_a_checksum_mismatch(position: int) -> None:
    data = bytearray(encode_event("messageStart", {"role": "assistant"}))
    data[position] ^= 0xFF

    with pytest.raises(ChecksumMismatch):
        _decode_all(bytes(data))


def test_given_an_exception_event_then_botocore_sees_the_exception_type_and_message() -> None:
    [message] = _decode_all(encode_exception("throttlingException", "slow down"))

    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "throttlingException"
    assert json.loads(message.payload) == {"message": "slow down"}
    assert message.to_response_dict()["status_code"] == 400
