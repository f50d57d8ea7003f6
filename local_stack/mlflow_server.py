"""A real ``mlflow server`` subprocess, lean enough for a laptop or a 2-core CI machine.

Measured here (MLflow 3.17, 2 cores): ~7 s from spawn to ``/health`` 200, on a fresh or an
existing SQLite store alike (most of it is importing MLflow twice: the CLI, then its uvicorn
worker); ~0.25 GB RSS with ``--workers 1`` and job execution off (defaults: 15 processes, ~3 GB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.config import LOOPBACK
from local_stack.processes import VENV_BIN, ManagedProcess, ServiceStartError, spawn, wait_until_healthy

DEFAULT_STARTUP_TIMEOUT = 90.0
ENV_WORKERS = "LOCAL_MLFLOW_WORKERS"  # uvicorn worker processes when not given explicitly
ENV_DB_POOL_SIZE = "LOCAL_MLFLOW_DB_POOL_SIZE"
ENV_DB_MAX_OVERFLOW = "LOCAL_MLFLOW_DB_MAX_OVERFLOW"


def _optional_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


@dataclass(frozen=True)
class MlflowServerOptions:
    port: int
    state_dir: Path
    backend_store_uri: str | None = None  # None: sqlite:///<state>/mlflow.db; or postgresql://...
    # One worker keeps tests and laptops at ~0.25 GB; `make throughput` measures more (docs/PERFORMANCE.md).
    workers: int = field(default_factory=lambda: int(os.environ.get(ENV_WORKERS, "1")))
    # SQLAlchemy pool per worker process. MLflow's default (5 + 10 overflow) closes every connection
    # beyond 5 after use, so under concurrent clients each burst reconnects (docs/PERFORMANCE.md).
    # None keeps MLflow's default.
    db_pool_size: int | None = field(default_factory=lambda: _optional_int(ENV_DB_POOL_SIZE))
    db_max_overflow: int | None = field(default_factory=lambda: _optional_int(ENV_DB_MAX_OVERFLOW))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    def resolved_backend_store_uri(self) -> str:
        if self.backend_store_uri:
            return self.backend_store_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"


def mlflow_server_argv(options: MlflowServerOptions) -> list[str]:
    """The ``mlflow server`` command line: loopback only, artifacts proxied by the server."""
    options.artifacts_dir.mkdir(parents=True, exist_ok=True)
    allowed_hosts = ",".join(f"{host}:{options.port}" for host in (LOOPBACK, "localhost"))
    return [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        LOOPBACK,
        "--port",
        str(options.port),
        "--workers",
        str(options.workers),
        "--backend-store-uri",
        options.resolved_backend_store_uri(),
        # Clients upload and download artifacts through the server (mlflow-artifacts:/), so they
        # need no storage rights of their own; on AWS the destination is the S3 bucket.
        "--serve-artifacts",
        "--artifacts-destination",
        str(options.artifacts_dir.resolve()),
        # MLflow 3.x rejects unknown Host headers; loopback names only.
        "--allowed-hosts",
        allowed_hosts,
    ]


# The server runs its Flask handlers on anyio's worker threads (40). With MLflow's SQLite pool (5 + 10)
# the local pump's 100 concurrent runner items starved it: requests waited 30 s for a connection and
# failed (QueuePool timeout), and `make demo` took minutes instead of seconds (docs/PERFORMANCE.md,
# "The demo"). Two connections per thread cannot run out; SQLite opens them lazily, so an idle
# stack pays nothing. PostgreSQL keeps MLflow's default (its server limits connections).
SQLITE_POOL_SIZE = 40
SQLITE_MAX_OVERFLOW = 40


def mlflow_server_env(options: MlflowServerOptions | None = None) -> dict[str, str]:
    # The job runner (huey consumers) costs processes and memory and nothing here uses it.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if options is None:
        return env
    sqlite = options.resolved_backend_store_uri().startswith("sqlite:")
    pool_size = (
        options.db_pool_size if options.db_pool_size is not None else (SQLITE_POOL_SIZE if sqlite else None)
    )
    overflow = (
        options.db_max_overflow
        if options.db_max_overflow is not None
        else (SQLITE_MAX_OVERFLOW if sqlite else None)
    )
    if pool_size is not None:
        env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] = str(pool_size)
    if overflow is not None:
        env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] = str(overflow)
    return env


def start_mlflow_server(
    options: MlflowServerOptions,
    log_path: Path | None = None,
    *,
    timeout: float = DEFAULT_STARTUP_TIMEOUT,
    wait: bool = True,
) -> ManagedProcess:
    """Spawn ``mlflow server`` detached; with ``wait`` block until ``GET /health`` is 200."""
    options.state_dir.mkdir(parents=True, exist_ok=True)
    log = log_path or options.state_dir / "logs" / "mlflow.log"
    process = spawn(
        "mlflow",
        mlflow_server_argv(options),
        log,
        env=mlflow_server_env(options),
        port=options.port,
        url=options.url,
        cwd=options.state_dir,  # keeps stray files (e.g. mlruns/) out of the repository
    )
    if wait:
        wait_for_mlflow(process, timeout=timeout)
    return process


def wait_for_mlflow(process: ManagedProcess, *, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> float:
    """Block until the server's /health is 200; stop it and raise with its log tail otherwise."""
    assert process.url is not None
    try:
        return wait_until_healthy(process, f"{process.url}/health", timeout)
    except ServiceStartError:
        process.stop(grace_seconds=2)
        raise


def run_mlflow_foreground(options: MlflowServerOptions) -> int:
    """Run ``mlflow server`` in the foreground (for ``python -m local_stack ui``) until Ctrl-C."""
    import subprocess

    options.state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **mlflow_server_env(options)}
    process = subprocess.Popen(mlflow_server_argv(options), env=env, cwd=options.state_dir)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0  # Ctrl-C is how this server is meant to end
