"""No network beyond the configured endpoints: importing our entry points before mlflow leaves MLflow's
usage telemetry off (it would otherwise start a client that calls MLflow's public endpoints)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import {entry}
import mlflow
from mlflow.telemetry.client import get_telemetry_client
print(get_telemetry_client() is None)
"""


def _telemetry_off_after(entry: str, cwd: Path) -> bool:
    # A clean environment: no CI/pytest variables (MLflow turns telemetry off by itself under those).
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        # Should telemetry start, its calls go to a closed loopback port, not to the internet.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    # Outside the repository (cwd): the entry points come from the venv's install, not from the cwd.
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(entry=entry)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("entry", ["handlers.runner", "handlers.ingest", "pipeline_cli", "local_stack"])
def test_entry_points_turn_mlflow_telemetry_off(entry: str, tmp_path: Path) -> None:
    assert _telemetry_off_after(entry, tmp_path)


def test_the_probe_sees_telemetry_when_nothing_turns_it_off(tmp_path: Path) -> None:
    # Without this, the test above would pass even if MLflow had no telemetry to turn off.
    assert not _telemetry_off_after("json", tmp_path)
