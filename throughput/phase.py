"""Each benchmark phase runs in its own Python process (fresh imports, its own GIL, no autolog or
thread pools left over from the previous phase) and hands its figures back as one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local_stack.config import REPO_ROOT

RESULT_PREFIX = "BENCH_RESULT "


def phase_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every phase that talks to the MLflow server takes (run_all passes them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--emulator-url", required=True)
    parser.add_argument("--access-log", type=Path, required=True)
    return parser


def emit_result(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX) :]))
    raise ValueError("no result line in the phase's output")


def run_phase(
    module: str, args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``python -m <module> <args>``; its stderr passes through, its result line is returned."""
    full_env = {**os.environ, **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{module} exited with {completed.returncode}:\n{completed.stdout[-3000:]}")
    return parse_result(completed.stdout)
