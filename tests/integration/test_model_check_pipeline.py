"""Issue #17 point 6 end to end: the ingest handler, through the event pump, checks each record's model
against what the account offers (the emulator's ListFoundationModels/ListInferenceProfiles) and
reports an unknown one as a line error; nothing calls Bedrock for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_stack.bedrock_emulator.server import EmulatorServer
from local_stack.processes import free_port
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


def _estimate(path: Path, *flags: str, bedrock_port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCAL_BEDROCK_PORT": str(bedrock_port)}
    command = [sys.executable, "-m", "pipeline_cli", "estimate", str(path), *flags]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_estimate_reports_the_same_unknown_model_as_ingest_when_it_can_ask_the_stack(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Given the same file, `estimate --check-models` asks the local stack what it offers and reports the
    typo on its line, as ingest would, estimating only the records that would run; with the stack
    unreachable it says so on one line and exits 1; without the flag it stays offline."""
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"id": "good", "prompt": "hello", "model": "amazon.nova-lite-v1:0"})
        + "\n"
        + json.dumps({"id": "typo", "prompt": "hello", "model": "amazon.nova-lite-v9:9"})
        + "\n"
    )
    port = int(emulator.url.rsplit(":", 1)[1])

    checked = _estimate(path, "--check-models", bedrock_port=port)
    assert checked.returncode == 0, checked.stderr
    assert "line 2: model 'amazon.nova-lite-v9:9': not a foundation model" in checked.stderr
    assert "amazon.nova-lite-v9:9" not in checked.stdout and "amazon.nova-lite-v1:0" in checked.stdout

    offline = _estimate(path, bedrock_port=port)
    assert offline.returncode == 0 and "amazon.nova-lite-v9:9" in offline.stdout

    unreachable = _estimate(path, "--check-models", bedrock_port=free_port())
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    assert unreachable.stderr.strip().count("\n") == 0 and "--check-models: cannot list" in unreachable.stderr
