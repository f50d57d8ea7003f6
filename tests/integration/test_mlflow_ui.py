"""What people look at: the MLflow UI, rendered by headless Chromium, shows a pipeline run and its trace."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags a closed network needs: no background connections, no first-run, no sandbox as root.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=30000",  # let the single-page app fetch and render before the DOM is dumped
]


def _rendered_text(url: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (`apt-get install chromium`); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the browser test always runs
        pytest.skip(message)  # a developer machine without the browser is told so plainly
    return CHROMIUM


def test_the_ui_shows_a_pipeline_run_and_its_trace(chromium: str, stack: Stack) -> None:
    """Given a prompt file run by the pipeline, when its run page and its experiment's traces page are
    rendered by a real browser, then the run's name and the trace of its model call are on the page."""
    body = json.dumps(
        {"id": "ui-capital", "prompt": "What is the capital of France?", "model": "amazon.nova-lite-v1:0"}
    )
    job_id = stack.upload(key="incoming/tests/ui.jsonl", body=(body + "\n").encode())
    stack.wait(job_id)
    (run,) = stack.mlflow.search_runs(
        [e.experiment_id for e in stack.mlflow.search_experiments()],
        filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
    )
    experiment_id = run.info.experiment_id
    base = stack.mlflow.tracking_uri

    run_page = _rendered_text(f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}")
    assert "ui-capital" in run_page and "amazon.nova-lite-v1:0" in run_page

    # The traces table lists the call's trace with the pipeline's tags and its token total.
    expected = f"pipeline.record_id: {run.data.tags['pipeline.record_id']}"
    for _ in range(3):  # a busy machine can need more than one render for the table's data to arrive
        traces_page = _rendered_text(f"{base}/#/experiments/{experiment_id}/traces")
        if expected in traces_page:
            break
    assert expected in traces_page, traces_page[-2000:]
    assert f"OK {int(run.data.metrics['total_tokens'])}" in traces_page  # state and token usage columns
