"""Issue #17 point 6 end to end: the ingest handler, through the event pump, checks each record's model
against what the account offers (the emulator's ListFoundationModels/ListInferenceProfiles) and
reports an unknown one as a line error; nothing calls Bedrock for it."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


def test_a_record_on_an_unknown_model_is_a_line_error_and_never_reaches_bedrock(stack: Stack) -> None:
    """Given a file with a record on a catalog model, one on a cross-region profile and one on a model
    no account offers, then the first two run and the third is line 3 of errors.jsonl with no call,
    no run and no result line; the job still ends."""
    typo = "amazon.nova-lite-v9:9"
    body = "".join(
        json.dumps(record) + "\n"
        for record in (
            {"id": "good", "prompt": "hello", "model": "amazon.nova-lite-v1:0"},
            {"id": "profile", "prompt": "hello", "model": "us.amazon.nova-lite-v1:0"},
            {"id": "typo", "prompt": "hello", "model": typo},
        )
    ).encode()

    job_id = stack.upload(key="incoming/tests/unknown-model-checked.jsonl", body=body)
    stack.wait(job_id)

    lines = {line["recordId"]: line for line in stack.results(job_id)}
    [error] = stack.results(job_id, "errors.jsonl")
    counts = stack.ledger.counts(job_id)
    assert set(lines) == {"good", "profile"}
    assert all("modelOutput" in line for line in lines.values())
    assert error["lineNumber"] == 3
    assert error["reason"].startswith(f"model {typo!r}: not a foundation model or inference profile")
    assert counts is not None and (counts.expected, counts.succeeded, counts.rejected_lines) == (2, 2, 1)
    assert typo not in stack.emulator.stats()["models"]
