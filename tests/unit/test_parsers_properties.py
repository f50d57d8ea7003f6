"""Properties of the two parsers untrusted input meets first: prompt files and S3 notifications.

Whatever bytes arrive, the prompt-file parser accounts for every non-blank line exactly once (as
work items or as a numbered error) and never raises; whatever an SQS body holds, the event parser
yields the created incoming/ objects or raises its one documented error.
"""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bedrock_pipeline.prompt_file import Limits, file_problem, parse_prompt_file
from handlers.s3_events import MalformedEvent, ObjectRef, object_refs_in_message

MODELS = ("amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0")
SMALL = Limits(max_line_bytes=400, max_records=30, max_file_bytes=20_000, max_item_bytes=2_000)

prompts = st.text(min_size=1, max_size=60).filter(lambda s: s.strip() != "")
ids = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=20)
bad_lines = st.one_of(
    # Not starting with a BOM: at the top of a file that is the file's BOM, not a line.
    st.binary(min_size=1, max_size=40).filter(
        lambda b: b"\n" not in b and b.strip() != b"" and not b.startswith(b"\xef\xbb\xbf")
    ),
    st.just(b"{not json"),
    st.just(b'{"prompt": ""}'),
    st.just(b'{"prompt": 42}'),
    st.just(b"[1, 2, 3]"),
    st.just(b'{"prompt": "' + b"x" * 500 + b'"}'),  # over SMALL.max_line_bytes
)


def _non_blank_line_numbers(data: bytes) -> set[int]:
    body = data.removeprefix(b"\xef\xbb\xbf")
    return {n for n, raw in enumerate(body.split(b"\n"), start=1) if raw.removesuffix(b"\r").strip()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_any_bytes_are_parsed_without_raising_and_every_line_is_accounted_for(data: bytes) -> None:
    """Given arbitrary bytes, then the parser returns (never raises) and, unless it rejects the whole
    file, every non-blank line ends as items or as exactly one error with its line number."""
    parsed = parse_prompt_file(data, default_models=MODELS, limits=SMALL)
    if parsed.rejected:
        assert not parsed.items
        return
    item_lines = {item.line_number for item in parsed.items}
    error_lines = [error.line_number for error in parsed.errors]
    assert len(error_lines) == len(set(error_lines))  # one error per line
    assert not item_lines & set(error_lines)
    accounted = item_lines | set(error_lines) | {parsed.header_line_number} - {None}
    assert accounted == _non_blank_line_numbers(data)
    assert all(error.reason for error in parsed.errors)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(ids, prompts), min_size=1, max_size=12, unique_by=lambda r: r[0]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=12), bad_lines), max_size=5),
    st.booleans(),
)
def test_good_records_fan_out_and_bad_lines_are_reported_at_their_line(
    records: list[tuple[str, str]], bad: list[tuple[int, bytes]], crlf: bool
) -> None:
    """Given good records with bad lines mixed in (CRLF or LF endings), then each good record becomes
    one item per model with its prompt unchanged, and each bad line one error at its own number."""
    lines: list[tuple[bytes, str | None]] = [
        (json.dumps({"id": rid, "prompt": prompt}, ensure_ascii=False).encode(), rid)
        for rid, prompt in records
    ]
    for position, raw in sorted(bad, reverse=True):
        lines.insert(min(position, len(lines)), (raw, None))
    data = (b"\r\n" if crlf else b"\n").join(raw for raw, _ in lines)
    parsed = parse_prompt_file(data, default_models=MODELS, limits=SMALL)

    assert parsed.rejected is None
    expected_ok = {n: rid for n, (_, rid) in enumerate(lines, start=1) if rid is not None}
    by_line: dict[int, list[str]] = {}
    for item in parsed.items:
        by_line.setdefault(item.line_number, []).append(item.model_id)
        assert item.record_id == expected_ok[item.line_number]
        prompt = dict(records)[item.record_id]
        assert item.request["messages"][0]["content"][0]["text"] == prompt
    assert by_line == {n: list(MODELS) for n in expected_ok}
    error_lines = {error.line_number for error in parsed.errors}
    assert error_lines == {n for n, (_, rid) in enumerate(lines, start=1) if rid is None}


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=SMALL.max_records + 1, max_value=SMALL.max_records + 20))
def test_more_records_than_the_limit_rejects_the_whole_file(count: int) -> None:
    """Given more records than the record limit, then the file is rejected with the numbers, no items."""
    data = b"\n".join(json.dumps({"prompt": f"q{i}"}).encode() for i in range(count))
    parsed = parse_prompt_file(data, default_models=MODELS, limits=SMALL)
    assert parsed.rejected == f"file has {count:,} records; the limit is {SMALL.max_records:,}"
    assert not parsed.items


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"prompt": "hi"}'.encode("utf-16"), "UTF-16"),
        ('{"prompt": "hi"}'.encode("utf-32"), "UTF-32"),
        (b"", "empty"),
        (b"\n \r\n\t\n", "empty"),
    ],
)
def test_foreign_encodings_and_empty_files_are_named_as_such(body: bytes, words: str) -> None:
    """Given a UTF-16/32 or an empty file, then the whole-file check says so in plain words."""
    problem = file_problem(body)
    assert problem is not None and words in problem


text_characters = st.characters(codec="utf-8", exclude_categories=["Cc"]) | st.sampled_from("\t\r\n")


@given(st.text(alphabet=text_characters, max_size=80))
def test_utf8_text_files_pass_the_whole_file_check_unless_blank(text: str) -> None:
    """Given any UTF-8 text (control characters are what binary files are made of), then only a blank
    one is a whole-file problem."""
    problem = file_problem(text.encode())
    assert (problem is not None) == (text.encode().strip() == b"")


@settings(max_examples=50)
@given(st.binary(min_size=64, max_size=4_000))
def test_random_bytes_are_named_binary_not_reported_line_by_line(noise: bytes) -> None:
    """Given random bytes (what an image, an archive or a compiled file look like), then the whole-file
    check names the file binary, unless chance made them blank."""
    assume(noise.strip() != b"" and not noise.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")))
    problem = file_problem(noise)
    assert problem is not None and "binary" in problem


@pytest.mark.parametrize(
    "body",
    [
        "café, crème brûlée, à bientôt\n".encode("latin-1") * 3,  # a few invalid bytes: line errors
        '{"prompt": "日本語のテキスト"}\n'.encode() * 40,  # multi-byte characters cut at 1 KiB
    ],
)
def test_text_with_a_few_odd_bytes_is_not_called_binary(body: bytes) -> None:
    assert file_problem(body) is None


# --- S3 notifications in SQS bodies ---------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_any_body_yields_objects_or_the_one_documented_error(body: str) -> None:
    """Given any SQS body (text or JSON of any shape), then the parser returns object refs or raises
    MalformedEvent: nothing else, so the ingest handler can tell a poison message from a failure."""
    try:
        refs = object_refs_in_message(body)
    except MalformedEvent:
        return
    assert all(isinstance(ref, ObjectRef) and ref.key.startswith("incoming/") for ref in refs)


key_names = st.text(min_size=1, max_size=40).filter(lambda s: not s.endswith("/"))
records = st.tuples(
    st.sampled_from(["incoming/", "results/", "incoming/team a/", ""]),
    key_names,
    st.sampled_from(["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete"]),
    st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
)


@given(st.lists(records, max_size=6), st.text(alphabet="abcdefghij-", min_size=3, max_size=20))
def test_created_incoming_objects_come_out_decoded_in_order(
    entries: list[tuple[str, str, str, str | None]], bucket: str
) -> None:
    """Given a notification with any mix of prefixes, event names and ETags, keys URL-encoded as S3
    sends them, then exactly the created objects under incoming/ come out, decoded, in order."""
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": event,
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": quote_plus(prefix + name), **({"eTag": etag} if etag else {})},
                    },
                }
                for prefix, name, event, etag in entries
            ]
        }
    )
    expected = [
        ObjectRef(bucket, prefix + name, etag)
        for prefix, name, event, etag in entries
        if event.startswith("ObjectCreated") and (prefix + name).startswith("incoming/")
    ]
    assert object_refs_in_message(body) == expected
