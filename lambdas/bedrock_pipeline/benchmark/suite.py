"""A benchmark suite: a prompt file with per-prompt expectations, identified by id and content hash.

The prompts are parsed by the pipeline's own prompt-file parser (which ignores unknown fields); the
expectation fields are read here from the same lines, keyed by record id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bedrock_pipeline.prompt_file import ParsedPromptFile, parse_prompt_file

_SUITE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class SuiteError(ValueError):
    """The suite cannot run: a bad id, a rejected file, bad lines or bad expectations."""


@dataclass(frozen=True)
class Expectation:
    """What a correct answer looks like. Any one of `expected` (substring), `expected_any`
    (one of several substrings) or `expected_regex` (a regular expression search)."""

    expected: str | None = None
    expected_any: tuple[str, ...] = ()
    expected_regex: str | None = None
    case_sensitive: bool = False

    def passes(self, answer: str) -> bool:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        haystack = answer if self.case_sensitive else answer.casefold()

        def contains(needle: str) -> bool:
            return (needle if self.case_sensitive else needle.casefold()) in haystack

        if self.expected is not None:
            return contains(self.expected)
        if self.expected_any:
            return any(contains(n) for n in self.expected_any)
        if self.expected_regex is not None:
            return re.search(self.expected_regex, answer, flags) is not None
        return True

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Expectation | None:
        """The expectation carried by one raw suite line, or None if it has none."""
        expected = record.get("expected")
        expected_any = record.get("expected_any")
        expected_regex = record.get("expected_regex")
        given = [v for v in (expected, expected_any, expected_regex) if v is not None]
        if not given:
            return None
        if len(given) > 1:
            raise ValueError("give one of expected, expected_any, expected_regex")
        if expected is not None and (not isinstance(expected, str) or not expected):
            raise ValueError("expected must be a non-empty string")
        if expected_any is not None and (
            not isinstance(expected_any, list)
            or not expected_any
            or not all(isinstance(v, str) and v for v in expected_any)
        ):
            raise ValueError("expected_any must be a non-empty list of non-empty strings")
        if expected_regex is not None:
            if not isinstance(expected_regex, str):
                raise ValueError("expected_regex must be a string")
            try:
                re.compile(expected_regex)
            except re.error as exc:
                raise ValueError(f"expected_regex does not compile: {exc}") from exc
        case_sensitive = record.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise ValueError("case_sensitive must be true or false")
        return cls(
            expected=expected,
            expected_any=tuple(expected_any or ()),
            expected_regex=expected_regex,
            case_sensitive=case_sensitive,
        )


@dataclass(frozen=True)
class Suite:
    suite_id: str
    content_hash: str  # sha256 of the file's bytes: a changed suite starts a new baseline
    parsed: ParsedPromptFile
    expectations: Mapping[str, Expectation] = field(default_factory=dict)

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]

    @property
    def prompts(self) -> int:
        return len({item.record_id for item in self.parsed.items})

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.model_id for item in self.parsed.items))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_suite(suite_id: str, data: bytes, *, default_models: Sequence[str]) -> Suite:
    """Parse a suite. Unlike a prompt file, a suite with any bad line does not run: a benchmark that
    silently dropped prompts would not be comparable with its baseline."""
    if not _SUITE_ID.match(suite_id):
        raise SuiteError(f"suite id {suite_id!r} must be lowercase letters, digits, '.', '_' or '-'")
    parsed = parse_prompt_file(data, default_models=default_models)
    if parsed.rejected:
        raise SuiteError(f"suite {suite_id} rejected: {parsed.rejected}")
    if parsed.errors:
        first = parsed.errors[0]
        raise SuiteError(
            f"suite {suite_id} has {len(parsed.errors)} bad line(s); line {first.line_number}: {first.reason}"
        )
    if not parsed.items:
        raise SuiteError(f"suite {suite_id} has no prompts")
    return Suite(
        suite_id=suite_id,
        content_hash=content_hash(data),
        parsed=parsed,
        expectations=_expectations(suite_id, data, parsed),
    )


def _expectations(suite_id: str, data: bytes, parsed: ParsedPromptFile) -> dict[str, Expectation]:
    record_ids = {item.line_number: item.record_id for item in parsed.items}
    text = data.decode("utf-8-sig")
    expectations: dict[str, Expectation] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        record_id = record_ids.get(number)
        if record_id is None:  # blank, header, or a line the parser did not turn into items
            continue
        try:
            expectation = Expectation.from_record(json.loads(raw))
        except ValueError as exc:
            raise SuiteError(f"suite {suite_id} line {number}: {exc}") from exc
        if expectation is not None:
            expectations[record_id] = expectation
    return expectations
