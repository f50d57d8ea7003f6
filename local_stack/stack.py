"""The local stack: moto, MLflow, the Bedrock emulator and the event pump as detached processes.

``LocalStack(config).start()`` spawns each service in its own session, logging to
``<state>/logs/<name>.log``, records them in ``<state>/pids.json`` (pid, process group and process
start time, so ``down`` from another shell stops exactly these and nothing else), waits until every
one is healthy, and creates the pipeline's resources on moto.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_stack.config import LOOPBACK, REGION, REPO_ROOT, LocalStackConfig
from local_stack.event_pump import queue_backlog
from local_stack.mlflow_server import DEFAULT_STARTUP_TIMEOUT, MlflowServerOptions, start_mlflow_server
from local_stack.processes import (
    ManagedProcess,
    moto_health_url,
    port_in_use,
    spawn,
    wait_until_healthy,
    wait_until_ports_free,
)
from local_stack.resources import LocalResources, aws_client, ensure_resources, handler_environment
from local_stack.running import PIDS_FILE, adopt_or_refuse, service_ports, stack_is_up, write_pids

EMULATOR_MODULE = "local_stack.bedrock_emulator"


class StackAlreadyRunning(RuntimeError):
    pass


def emulator_available() -> bool:
    """True once the Bedrock emulator package has its entry point (``python -m`` can start it)."""
    return (REPO_ROOT / "local_stack" / "bedrock_emulator" / "__main__.py").exists()


def _child_env(config: LocalStackConfig) -> dict[str, str]:
    # Children see the same configuration as this process (they import the project from the venv).
    env = {
        "LOCAL_MOTO_PORT": str(config.moto_port),
        "LOCAL_MLFLOW_PORT": str(config.mlflow_port),
        "LOCAL_BEDROCK_PORT": str(config.emulator_port),
        "LOCAL_STATE_DIR": str(config.state_dir),
        "PYTHONUNBUFFERED": "1",  # logs reach the file as they happen
    }
    if config.mlflow_backend_uri:
        env["LOCAL_MLFLOW_BACKEND_URI"] = config.mlflow_backend_uri
    return env


class LocalStack:
    """The offline AWS twin. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        config: LocalStackConfig | None = None,
        *,
        with_emulator: bool | None = None,
        with_pump: bool = True,
        visibility_timeouts: int | Mapping[str, int] | None = None,
        emulator_seed: int = 0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        self.config = config or LocalStackConfig()
        self.with_emulator = emulator_available() if with_emulator is None else with_emulator
        self.with_pump = with_pump
        self.visibility_timeouts = visibility_timeouts
        self.emulator_seed = emulator_seed
        self.startup_timeout = startup_timeout
        self.processes: list[ManagedProcess] = []
        self.adopted: dict[str, ManagedProcess] = {}
        self._resources: LocalResources | None = None
        self.startup_seconds: float | None = None

    # --- public surface ---

    @property
    def moto_url(self) -> str:
        return self.config.moto_url

    @property
    def mlflow_url(self) -> str:
        return self.config.mlflow_url

    @property
    def emulator_url(self) -> str | None:
        return self.config.emulator_url if self.with_emulator else None

    @property
    def logs_dir(self) -> Path:
        return self.config.logs_dir

    @property
    def resources(self) -> LocalResources:
        if self._resources is None:
            raise RuntimeError("the stack is not started")
        return self._resources

    @property
    def env(self) -> dict[str, str]:
        """The handlers' environment for this stack (see resources.handler_environment)."""
        return handler_environment(
            moto_url=self.moto_url,
            mlflow_url=self.mlflow_url,
            emulator_url=self.emulator_url,
            resources=self.resources,
            region=REGION,
        )

    def start(self) -> LocalStack:
        config = self.config
        if stack_is_up(config):
            raise StackAlreadyRunning(
                f"a local stack is already running (see {config.state_dir / PIDS_FILE})"
            )
        ports = service_ports(config)
        if not self.with_emulator:
            del ports["bedrock-emulator"]
        # A service already on its port is used if it is that service (started by hand), or named.
        self.adopted = {
            name: adopt_or_refuse(name, port, config.logs_dir / f"{name}.log")
            for name, port in ports.items()
            if port_in_use(port)
        }
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self._start_services()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop exactly the processes this stack started (reverse order) and remove pids.json."""
        for process in reversed(self.processes):
            process.stop(grace_seconds)
        wait_until_ports_free([p.port for p in self.processes if p.port is not None and not p.adopted])
        self.processes = []
        (self.config.state_dir / PIDS_FILE).unlink(missing_ok=True)

    def wait_until_idle(self, timeout: float = 120.0) -> None:
        """Block until the stack's pump has emptied the ingest, work and evaluation queues.

        The pump runs in its own process, so this watches SQS: a message being handled is still
        counted (not visible) until the pump deletes it, after the handler has sent any follow-up
        messages. Raises TimeoutError.
        """
        sqs = aws_client("sqs", self.moto_url)
        urls = [queue.url for queue in self.resources.queues.values()]
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        while quiet_checks < 2:  # twice in a row, as EventPump.drain
            backlog = queue_backlog(sqs, urls)
            quiet_checks = quiet_checks + 1 if backlog == 0 else 0
            if quiet_checks < 2 and time.monotonic() > deadline:
                raise TimeoutError(f"local stack not idle after {timeout} s: {backlog} message(s) queued")
            time.sleep(0.2)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ---

    def _record(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)
        write_pids(self.config.state_dir, self.processes)  # at once: `down` can clean up a failed start
        return process

    def _start_services(self) -> None:
        config = self.config
        logs = config.logs_dir
        child_env = _child_env(config)
        # Spawn everything first, then wait: the slow MLflow start overlaps the others.
        moto = self.adopted.get("moto") or self._record(
            spawn(
                "moto",
                [
                    sys.executable,
                    "-m",
                    "local_stack.moto_server",
                    "-H",
                    LOOPBACK,
                    "-p",
                    str(config.moto_port),
                ],
                logs / "moto.log",
                port=config.moto_port,
                url=config.moto_url,
            )
        )
        mlflow = self.adopted.get("mlflow") or self._record(
            start_mlflow_server(
                MlflowServerOptions(
                    port=config.mlflow_port,
                    state_dir=config.state_dir,
                    backend_store_uri=config.mlflow_backend_uri,
                ),
                logs / "mlflow.log",
                wait=False,
            )
        )
        emulator = None
        if self.with_emulator:
            emulator = self.adopted.get("bedrock-emulator") or self._record(
                spawn(
                    "bedrock-emulator",
                    [
                        sys.executable,
                        "-m",
                        EMULATOR_MODULE,
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(config.emulator_port),
                        "--seed",
                        str(self.emulator_seed),
                        "--aws-endpoint",  # batch jobs read and write S3 and send events on moto
                        config.moto_url,
                        "--quiet",
                    ],
                    logs / "bedrock-emulator.log",
                    env=child_env,
                    port=config.emulator_port,
                    url=config.emulator_url,
                    cwd=REPO_ROOT,
                )
            )
        for adopted in self.adopted.values():
            self._record(adopted)  # in pids.json, so `status` shows it and `down` knows to leave it
        wait_until_healthy(moto, moto_health_url(config.moto_url), self.startup_timeout)
        self._resources = ensure_resources(config.moto_url, visibility_timeouts=self.visibility_timeouts)
        pump = None
        ready_file = config.state_dir / "event-pump.ready"
        if self.with_pump:
            ready_file.unlink(missing_ok=True)
            # Prewarmed: a handler's first batch imports nothing (the import overlaps MLflow's start),
            # which kept `make demo`'s first files waiting ~9 s (docs/PERFORMANCE.md, "The demo").
            argv = [
                sys.executable,
                "-m",
                "local_stack.pump_process",
                "--ready-file",
                str(ready_file),
                "--prewarm",
            ]
            if not self.with_emulator:
                argv.append("--without-emulator")
            pump = spawn("event-pump", argv, logs / "event-pump.log", env=child_env, cwd=REPO_ROOT)
            pump.ready_file = str(ready_file)
            self._record(pump)
        wait_until_healthy(mlflow, f"{config.mlflow_url}/health", self.startup_timeout)
        if emulator is not None:
            wait_until_healthy(emulator, f"{config.emulator_url}/_emulator/health", self.startup_timeout)
        if pump is not None:
            wait_until_healthy(pump, None, self.startup_timeout, ready_file=ready_file)

    def describe(self) -> dict[str, Any]:
        """Services, ports and log folder, for the CLI."""
        return {
            "services": [
                {"name": p.name, "pid": p.pid, "port": p.port, "url": p.url, "log": str(p.log_path)}
                for p in self.processes
            ],
            "logs": str(self.logs_dir),
        }
