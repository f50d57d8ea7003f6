"""Issue #17 point 11: the local MLflow server on SQLite serves the pump's concurrency without pool waits.

The pump runs up to 100 runner items at once against one server; with MLflow's SQLite pool (5 + 10)
requests queued for a connection and failed after 30 s, which turned `make demo` into minutes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from local_stack.mlflow_server import MlflowServerOptions, start_mlflow_server
from local_stack.processes import free_port

pytestmark = pytest.mark.integration

CLIENTS = 100  # 10 work pollers x 10 item threads, as the pump runs them


def test_given_the_local_server_on_sqlite_when_100_clients_create_runs_at_once_then_none_waits_for_a_connection(
    tmp_path: Path,
) -> None:
    options = MlflowServerOptions(port=free_port(), state_dir=tmp_path)
    server = start_mlflow_server(options, tmp_path / "mlflow.log")
    try:
        api = f"{options.url}/api/2.0/mlflow"
        experiment = requests.post(f"{api}/experiments/create", json={"name": "pool"}, timeout=30).json()

        def create_and_finish(index: int) -> tuple[int, float]:
            started = time.monotonic()
            session = requests.Session()
            run = session.post(
                f"{api}/runs/create", json={"experiment_id": experiment["experiment_id"]}, timeout=60
            )
            if run.status_code != 200:
                return run.status_code, time.monotonic() - started
            run_id = run.json()["run"]["info"]["run_id"]
            params = [{"key": f"p{i}", "value": str(i)} for i in range(5)]
            logged = session.post(
                f"{api}/runs/log-batch", json={"run_id": run_id, "params": params}, timeout=60
            )
            ended = session.post(
                f"{api}/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": 1}, timeout=60
            )
            return max(logged.status_code, ended.status_code), time.monotonic() - started

        def timed(index: int) -> tuple[int, float]:
            started = time.monotonic()
            try:
                return create_and_finish(index)
            except requests.RequestException:  # a read timeout: the server never answered
                return 0, time.monotonic() - started

        with ThreadPoolExecutor(CLIENTS) as pool:
            outcomes = list(pool.map(timed, range(CLIENTS)))
        log = (tmp_path / "mlflow.log").read_text()
    finally:
        server.stop()

    assert [status for status, _ in outcomes if status != 200] == []
    assert max(seconds for _, seconds in outcomes) < 30, "a request waited for a pooled connection"
    assert "'pool_size': 40, 'max_overflow': 40" in log
