"""A real MLflow server (SQLite and PostgreSQL backends) round-trips runs and proxied artifacts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from local_stack.mlflow_server import MlflowServerOptions, mlflow_server_argv, start_mlflow_server
from local_stack.processes import ServiceStartError, free_port, http_ok

pytestmark = pytest.mark.integration


def _round_trip(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(f"local-stack-{time.time_ns()}")
    run = client.create_run(experiment_id, tags={"job_id": "job-1"})
    client.log_param(run.info.run_id, "model_id", "amazon.nova-lite-v1:0")
    client.log_metric(run.info.run_id, "total_tokens", 42)
    source = tmp_path / "answer.json"
    source.write_text('{"text": "hello"}')
    client.log_artifact(run.info.run_id, str(source))
    client.set_terminated(run.info.run_id)

    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params == {"model_id": "amazon.nova-lite-v1:0"}
    assert fetched.data.metrics == {"total_tokens": 42}
    assert fetched.data.tags["job_id"] == "job-1"
    assert fetched.info.status == "FINISHED"
    # Proxied: the client sees only the server's mlflow-artifacts scheme, never a local path or S3.
    assert fetched.info.artifact_uri.startswith("mlflow-artifacts:/")
    downloaded = Path(client.download_artifacts(run.info.run_id, "answer.json", str(tmp_path / "down")))
    assert downloaded.read_text() == '{"text": "hello"}'


def test_given_an_mlflow_server_on_sqlite_when_a_run_is_logged_then_params_metrics_and_artifact_round_trip(
    mlflow_server: str, tmp_path: Path
) -> None:
    """Given the session's SQLite-backed server, when a run with a param, a metric and an artifact is
    logged through MlflowClient, then all of it reads back, the artifact through the server."""
    assert http_ok(f"{mlflow_server}/health")
    _round_trip(mlflow_server, tmp_path)


def test_given_an_mlflow_server_on_postgresql_when_a_run_is_logged_then_it_round_trips(
    mlflow_server_postgres: str, tmp_path: Path
) -> None:
    """Given a server on a fresh PostgreSQL database (psycopg 3), when a run is logged, then it round-trips."""
    _round_trip(mlflow_server_postgres, tmp_path)


def test_given_server_options_when_the_command_is_built_then_it_is_lean_loopback_and_proxies_artifacts(
    tmp_path: Path,
) -> None:
    """Given default options, when the command line is built, then it binds loopback with one worker,
    uses SQLite under the state folder and serves artifacts from <state>/artifacts."""
    argv = mlflow_server_argv(MlflowServerOptions(port=5999, state_dir=tmp_path))

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--host") == "127.0.0.1"
    assert value("--workers") == "1"
    assert value("--backend-store-uri") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert value("--artifacts-destination") == str(tmp_path.resolve() / "artifacts")
    assert "--serve-artifacts" in argv
    assert value("--allowed-hosts") == "127.0.0.1:5999,localhost:5999"


def test_given_an_unsupported_backend_when_the_server_starts_then_the_error_carries_the_log_tail(
    tmp_path: Path,
) -> None:
    """Given a backend URI MLflow rejects, when the server is started, then ServiceStartError says it
    exited and quotes MLflow's own complaint from the log."""
    options = MlflowServerOptions(port=free_port(), state_dir=tmp_path, backend_store_uri="bogus://nowhere")
    with pytest.raises(ServiceStartError, match="mlflow exited while starting") as error:
        start_mlflow_server(options, timeout=60)
    assert "bogus://nowhere" in str(error.value)
    assert _processes_listening_on(options.port) == []


def test_given_a_too_short_timeout_when_the_server_starts_then_it_is_stopped_and_the_error_says_so(
    tmp_path: Path,
) -> None:
    """Given a startup timeout shorter than MLflow needs, when the server is started, then
    ServiceStartError names the timeout, and the half-started server (and its workers) is gone."""
    options = MlflowServerOptions(port=free_port(), state_dir=tmp_path)
    with pytest.raises(ServiceStartError, match=r"not healthy after 1 s"):
        start_mlflow_server(options, timeout=1)
    assert _processes_listening_on(options.port) == []


def _processes_listening_on(port: int) -> list[int]:
    """Pids whose command line is an MLflow server (or its uvicorn worker) on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in argv and str(port).encode() in argv and any(b"mlflow" in part for part in argv):
            found.append(int(entry.name))
    return found
