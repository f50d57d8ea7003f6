"""What a user sees from the CLI for ordinary mistakes: one line on stderr, the right exit code, no traceback.

Each case runs the CLI as a subprocess, as a user would. None needs the local stack: the mistakes are
caught before anything is sent, and an unreachable stack is itself one of the cases.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "batch_prompts" / "demo" / "questions.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LOCAL_MOTO_PORT": str(_free_port()),  # nothing listens: a stack that is down
        "AWS_MAX_ATTEMPTS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline_cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("verb", ["estimate", "submit"])
def test_a_missing_path_is_a_usage_error_in_one_line(verb: str, tmp_path: Path) -> None:
    result = cli(verb, tmp_path / "nope.jsonl")
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "no such file" in line and "nope.jsonl" in line and "JSON Lines prompt file" in line


@pytest.mark.parametrize("verb", ["estimate", "submit"])
def test_a_directory_is_a_usage_error_in_one_line(verb: str, tmp_path: Path) -> None:
    result = cli(verb, tmp_path)
    assert result.returncode == 2
    assert "is a directory" in _one_line(result.stderr)


def test_a_wrong_argument_is_one_line_naming_the_help() -> None:
    result = cli("estimate")
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "the following arguments are required: file" in line and "--help" in line


def test_evaluate_with_a_bad_gate_or_a_missing_job_file_is_a_usage_error(tmp_path: Path) -> None:
    bad_gate = cli("evaluate", "--dataset", "s3://b/k.jsonl", "--wait", "--fail-under", "contains_match")
    assert bad_gate.returncode == 2 and "SCORER=VALUE" in _one_line(bad_gate.stderr)
    missing = cli("evaluate", tmp_path / "job.json")
    assert missing.returncode == 2 and "no such file" in _one_line(missing.stderr)
    (tmp_path / "job.json").write_text(json.dumps({"version": 1, "models": "not-a-list"}))
    invalid = cli("evaluate", tmp_path / "job.json")
    assert invalid.returncode == 2 and "invalid evaluation job" in _one_line(invalid.stderr)


def test_status_with_the_stack_down_is_one_line_saying_to_start_it() -> None:
    result = cli("status", "some-job-1234567890")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "cannot reach" in line and "make up" in line


def test_debug_shows_the_traceback() -> None:
    result = cli("--debug", "status", "some-job-1234567890")
    assert result.returncode == 1 and "Traceback" in result.stderr


# --- estimate says what ingest would (point 5): the same function, the same words ----------------------
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "the file is empty"),
        (bytes(range(256)) * 4, "the file is binary"),
        (b'[{"prompt": "a"}]\n', "the file is a JSON array"),
        (b'{"prompt": ""}\n', "no valid record: 1 bad line(s), first: line 1"),
    ],
)
def test_estimate_rejects_what_ingest_rejects_with_the_same_reason(
    tmp_path: Path, body: bytes, words: str
) -> None:
    from bedrock_pipeline.prompt_file import read_prompt_file

    path = tmp_path / "file.jsonl"
    path.write_bytes(body)
    result = cli("estimate", path)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    reason = read_prompt_file(body).rejected  # what ingest records for the same bytes
    assert reason is not None and words in reason
    assert result.stderr.splitlines()[-1] == f"error: file rejected: {reason}"
    assert "total" not in result.stdout


def test_estimate_over_budget_is_the_ingest_rejection(tmp_path: Path) -> None:
    path = tmp_path / "costly.jsonl"
    path.write_text(json.dumps({"job": {"budget_usd": 0.0}}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    result = cli("estimate", path)
    assert result.returncode == 1
    assert "error: file rejected: estimated cost" in _one_line(result.stderr)


def test_estimate_of_a_good_file_exits_0_with_a_total() -> None:
    result = cli("estimate", DEMO)
    assert result.returncode == 0 and "total" in result.stdout
    assert "line 7:" in result.stderr and "Traceback" not in result.stderr  # its one broken line
