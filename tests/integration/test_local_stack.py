"""The local stack starts every service detached, reports them, and stops exactly what it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from local_stack.config import LocalStackConfig
from local_stack.event_pump import queue_backlog
from local_stack.processes import ManagedProcess, free_port, http_ok, port_in_use, process_start_ticks
from local_stack.resources import aws_client
from local_stack.running import PIDS_FILE, read_pids, stack_status, stop_stack
from local_stack.stack import LocalStack, emulator_available

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(state_dir: Path) -> LocalStackConfig:
    return LocalStackConfig(
        moto_port=free_port(), mlflow_port=free_port(), emulator_port=free_port(), state_dir=state_dir
    )


def _cli(config: LocalStackConfig) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m local_stack <args>`` on this config's ports and state folder."""
    env = {
        **os.environ,
        "LOCAL_MOTO_PORT": str(config.moto_port),
        "LOCAL_MLFLOW_PORT": str(config.mlflow_port),
        "LOCAL_BEDROCK_PORT": str(config.emulator_port),
        "LOCAL_STATE_DIR": str(config.state_dir),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "local_stack", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


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


def test_given_a_running_stack_when_mlflow_restarts_or_is_orphaned_then_down_frees_every_port_for_up(
    tmp_path: Path,
) -> None:
    """Given the CLI's stack, when `restart mlflow` runs, then MLflow is a new process group and
    healthy; when only its recorded pid (the `mlflow server` wrapper) is killed, `status` says its
    worker is orphaned; `down` then stops everything and returns only once every port is free, so
    an `up` right after it starts on the same ports (hundreds of TIME_WAIT connections do not count)."""
    config = _config(tmp_path / "state")
    cli = _cli(config)
    assert cli("up").returncode == 0
    try:
        old = {p.name: p for p in read_pids(config.state_dir)}["mlflow"]
        restart = cli("restart", "mlflow")
        new = {p.name: p for p in read_pids(config.state_dir)}["mlflow"]
        healthy_after_restart = http_ok(f"{config.mlflow_url}/health")
        for _ in range(50):  # connections the server closes: TIME_WAIT on its port after it stops
            http_ok(f"{config.mlflow_url}/health")
        os.kill(new.pid, signal.SIGKILL)  # the wrapper only; its uvicorn worker keeps serving
        time.sleep(0.5)
        serving_orphan = http_ok(f"{config.mlflow_url}/health")
        status_orphaned = cli("status")
    finally:
        down = cli("down")
    ports_after_down = [
        port_in_use(port) for port in (config.moto_port, config.mlflow_port, config.emulator_port)
    ]
    up_again = cli("up")
    cli("down")

    assert restart.returncode == 0, restart.stderr
    assert new.pid != old.pid and _gone(old)
    assert healthy_after_restart
    assert serving_orphan
    assert "orphaned" in status_orphaned.stdout
    assert down.returncode == 0, down.stderr
    assert "mlflow" in down.stdout
    assert ports_after_down == [False, False, False]
    assert up_again.returncode == 0, up_again.stderr


def test_given_services_started_by_hand_on_the_ports_when_up_runs_then_it_adopts_or_names_them(
    tmp_path: Path,
) -> None:
    """Given a Bedrock emulator started by hand on the emulator port, `up` adopts it (uses it, says
    so) and `down` leaves it running; given a process that is not moto on the moto port, `up`
    refuses and names that process's pid."""
    config = _config(tmp_path / "state")
    cli = _cli(config)
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local_stack.bedrock_emulator",
            "--port",
            str(config.emulator_port),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"{config.emulator_url}/_emulator/health") and time.monotonic() < deadline:
            time.sleep(0.1)
        up = cli("up")
        try:
            status = cli("status")
        finally:
            down = cli("down")
        emulator_survived = emulator.poll() is None and http_ok(f"{config.emulator_url}/_emulator/health")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the stack's TIME_WAITs
        squatter.bind(("127.0.0.1", config.moto_port))
        squatter.listen()
        refused = cli("up")
    cli("down")

    assert up.returncode == 0, up.stderr
    assert "adopted" in up.stdout
    assert "started by hand" in status.stdout
    assert status.stdout.count(" up ") == 4, status.stdout
    assert "Left running (started by hand, adopted by `make up`): bedrock-emulator" in down.stdout
    assert emulator_survived
    assert refused.returncode == 1
    assert f"moto port {config.moto_port}" in refused.stderr
    assert f"held by pid {os.getpid()}" in refused.stderr
