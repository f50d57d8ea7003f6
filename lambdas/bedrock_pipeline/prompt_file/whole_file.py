"""The one decision whether a prompt file runs at all: ingest and `pipeline_cli estimate` both call
`read_prompt_file`, so what the CLI predicts is what the pipeline does, reason for reason."""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence

from bedrock_pipeline.prompt_file.parser import parse_prompt_file
from bedrock_pipeline.prompt_file.schema import Limits, ParsedPromptFile

# Byte-order marks of encodings a prompt file must not be in (UTF-32 first: its LE mark starts like UTF-16's).
_FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
SNIFF_BYTES = 1024
# Share of undecodable bytes and control characters in the first KiB above which a file is binary.
# Random bytes score about 0.5; UTF-8 text 0, and a Latin-1 text with accents only a few percent.
BINARY_SHARE = 0.3
_TEXT_CONTROLS = frozenset("\t\n\r\f")


def file_problem(body: bytes) -> str | None:
    """Whole-file problems the line parser would only report line by line, less clearly."""
    for bom, encoding in _FOREIGN_BOMS:
        if body.startswith(bom):
            return f"the file is {encoding}-encoded; prompt files must be UTF-8 (JSON Lines)"
    if not body.strip():
        return "the file is empty: no records to run"
    if _is_json_array(body):  # pretty-printed, some of its lines would even parse as records
        return "the file is a JSON array; prompt files are JSON Lines (one JSON object per line)"
    head = body[:SNIFF_BYTES]
    if b"\x00" in head:
        return "the file is binary (NUL bytes in its first KiB); prompt files are UTF-8 JSON Lines"
    # Incremental: a character cut at the end of the sample is not counted as invalid.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=False)
    odd = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in _TEXT_CONTROLS))
    if text and odd / len(text) > BINARY_SHARE:
        return (
            f"the file is binary ({odd} of its first {len(text)} characters are not UTF-8 text); "
            "prompt files are UTF-8 JSON Lines"
        )
    return None


def read_prompt_file(
    body: bytes,
    *,
    default_models: Sequence[str] = (),
    limits: Limits = Limits(),  # noqa: B008 (a frozen dataclass, safe as a default)
    source_uri: str | None = None,
) -> ParsedPromptFile:
    """Parse a prompt file, or reject it whole with one reason: a whole-file problem, the parser's own
    limits, or no valid record left, whatever the cause (bad lines keep their own errors)."""
    problem = file_problem(body)
    if problem:
        return ParsedPromptFile.rejection(problem)
    parsed = parse_prompt_file(body, default_models=default_models, limits=limits, source_uri=source_uri)
    if parsed.rejected or parsed.items:
        return parsed
    return parsed.model_copy(update={"rejected": _no_record_reason(parsed)})


def _is_json_array(body: bytes) -> bool:
    text = body.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not text.startswith(b"["):  # the only case that pays for parsing the whole file
        return False
    try:
        return isinstance(json.loads(text), list)
    except (ValueError, RecursionError):
        return False


def _no_record_reason(parsed: ParsedPromptFile) -> str:
    if not parsed.errors:
        return "the file has a job header but no records to run"
    first = parsed.errors[0]
    return (
        f"no valid record: {len(parsed.errors)} bad line(s), first: line {first.line_number}: {first.reason}"
    )
