"""The local stack starts every service detached, reports them, and stops exactly what it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_stack.config import LocalStackConfig
from local_stack.event_pump import queue_backlog
from local_stack.processes import ManagedProcess, free_port, http_ok, process_start_ticks
from local_stack.resources import aws_client
from local_stack.stack import PIDS_FILE, LocalStack, emulator_available, read_pids, stack_status, stop_stack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(state_dir: Path) -> LocalStackConfig:
    return LocalStackConfig(
        moto_port=free_port(), mlflow_port=free_port(), emulator_port=free_port(), state_dir=state_dir
    )


def _gone(process: ManagedProcess) -> bool:
    return process_start_ticks(process.pid) is None and not process.group_alive()


def test_given_a_local_stack_when_started_and_stopped_then_all_services_run_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    """Given free ports and a fresh state folder, when the stack starts, then moto, MLflow, the
    Bedrock emulator and the event pump are up with resources created and pids.json written;
    when it stops, every recorded process group is gone and pids.json is removed."""
    assert emulator_available(), "local_stack/bedrock_emulator/__main__.py is part of the stack"
    config = _config(tmp_path / "state")

    with LocalStack(config, visibility_timeouts=2) as stack:
        statuses = {status.name: status.state for status in stack_status(config)}
        recorded = read_pids(config.state_dir)
        env = stack.env
        queue_attributes = aws_client("sqs", stack.moto_url).get_queue_attributes(
            QueueUrl=stack.resources.work.url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        emulator_healthy = http_ok(f"{stack.emulator_url}/_emulator/health")
        # The bucket's notification set-up queued an s3:TestEvent; the pump process must consume it.
        stack.wait_until_idle(timeout=30)
        ingest_dead_letters = queue_backlog(
            aws_client("sqs", stack.moto_url), [stack.resources.ingest.dlq_url]
        )
        logs = sorted(path.name for path in config.logs_dir.iterdir())

    assert statuses == {"moto": "up", "mlflow": "up", "bedrock-emulator": "up", "event-pump": "up"}
    assert [process.name for process in recorded] == ["moto", "mlflow", "bedrock-emulator", "event-pump"]
    assert emulator_healthy
    assert ingest_dead_letters == 0  # consumed by the ingest handler, not given up on
    assert logs == ["bedrock-emulator.log", "event-pump.log", "mlflow.log", "moto.log"]
    assert queue_attributes["VisibilityTimeout"] == "2"
    assert (
        json.loads(queue_attributes["RedrivePolicy"])["deadLetterTargetArn"] == stack.resources.work.dlq_arn
    )
    assert env["AWS_ENDPOINT_URL"] == config.moto_url
    assert env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == config.emulator_url
    assert env["MLFLOW_TRACKING_URI"] == config.mlflow_url
    assert env["WORK_QUEUE_URL"] == stack.resources.work.url
    assert not (config.state_dir / PIDS_FILE).exists()
    assert all(_gone(process) for process in recorded)
    assert {status.state for status in stack_status(config)} == {"down"}


def test_given_the_cli_when_up_status_up_again_and_down_then_each_reports_truthfully(tmp_path: Path) -> None:
    """Given the `python -m local_stack` CLI on free ports, when `up` runs it returns with the stack
    running and prints the exports; `status` shows it up; a second `up` refuses politely; `down`
    stops exactly the recorded processes and `status` then shows everything down."""
    config = _config(tmp_path / "state")
    env = {
        **os.environ,
        "LOCAL_MOTO_PORT": str(config.moto_port),
        "LOCAL_MLFLOW_PORT": str(config.mlflow_port),
        "LOCAL_BEDROCK_PORT": str(config.emulator_port),
        "LOCAL_STATE_DIR": str(config.state_dir),
    }

    def cli(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "local_stack", command],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    up = cli("up")
    try:
        recorded = read_pids(config.state_dir)
        status_up = cli("status")
        up_again = cli("up")
        recorded_after_refusal = read_pids(config.state_dir)
    finally:
        down = cli("down")
    status_down = cli("status")

    assert up.returncode == 0, up.stderr
    assert f"export AWS_ENDPOINT_URL={config.moto_url}" in up.stdout
    assert f"export MLFLOW_TRACKING_URI={config.mlflow_url}" in up.stdout
    assert str(config.logs_dir) in up.stdout
    assert len(recorded) == 4
    assert status_up.stdout.count(" up ") == 4, status_up.stdout
    assert "already up" in up_again.stdout
    assert recorded_after_refusal == recorded, "a refused `up` must not touch the running stack"
    assert down.returncode == 0
    assert "Stopped: event-pump, bedrock-emulator, mlflow, moto" in down.stdout
    assert all(_gone(process) for process in recorded)
    assert " up " not in status_down.stdout
    assert status_down.stdout.count(" down ") == 4


def test_given_a_pids_file_whose_pid_was_recycled_when_down_runs_then_the_stranger_is_not_touched(
    tmp_path: Path,
) -> None:
    """Given pids.json naming a pid that now belongs to another process (different start time),
    when the stack is stopped, then that process keeps running and pids.json is removed."""
    config = _config(tmp_path / "state")
    config.state_dir.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        impostor = ManagedProcess(
            name="moto",
            pid=stranger.pid,
            pgid=stranger.pid,
            start_ticks=ticks - 1,
            log_path=tmp_path / "x.log",
        )
        (config.state_dir / PIDS_FILE).write_text(json.dumps({"services": [impostor.to_json()]}))

        stop_stack(config, grace_seconds=0.5)

        assert stranger.poll() is None
        assert not (config.state_dir / PIDS_FILE).exists()
    finally:
        stranger.kill()
        stranger.wait()
