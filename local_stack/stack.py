"""The local stack: moto, MLflow, the Bedrock emulator and the event pump as detached processes.

``LocalStack(config).start()`` spawns each service in its own session, logging to
``<state>/logs/<name>.log``, records them in ``<state>/pids.json`` (pid, process group and process
start time, so ``down`` from another shell stops exactly these and nothing else), waits until every
one is healthy, and creates the pipeline's resources on moto.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_stack.config import LOOPBACK, REGION, REPO_ROOT, LocalStackConfig
from local_stack.event_pump import queue_backlog
from local_stack.mlflow_server import DEFAULT_STARTUP_TIMEOUT, MlflowServerOptions, start_mlflow_server
from local_stack.processes import (
    ManagedProcess,
    ServiceStartError,
    http_ok,
    moto_health_url,
    port_holder,
    port_in_use,
    process_start_ticks,
    respawn,
    spawn,
    wait_until_healthy,
    wait_until_ports_free,
)
from local_stack.resources import LocalResources, aws_client, ensure_resources, handler_environment

PIDS_FILE = "pids.json"
EMULATOR_MODULE = "local_stack.bedrock_emulator"
# Start order; stopped in reverse (the pump first, so nothing is mid-call when its peers go).
SERVICE_ORDER = ("moto", "mlflow", "bedrock-emulator", "event-pump")


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


def read_pids(state_dir: Path) -> list[ManagedProcess]:
    """The services recorded by a running (or crashed) stack; empty if there is no pids.json."""
    path = state_dir / PIDS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [ManagedProcess.from_json(item) for item in data.get("services", [])]


def _write_pids(state_dir: Path, processes: list[ManagedProcess]) -> None:
    path = state_dir / PIDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"started_at": time.time(), "services": [p.to_json() for p in processes]}, indent=2)
    )
    tmp.replace(path)  # atomic: `down` never reads half a file


def service_health_url(name: str, url: str) -> str | None:
    """The URL that answers 200 only when that kind of service serves ``url``."""
    if name == "moto":
        return moto_health_url(url)
    if name == "mlflow":
        return f"{url}/health"
    if name == "bedrock-emulator":
        return f"{url}/_emulator/health"
    return None


def health_url(process: ManagedProcess) -> str | None:
    return None if process.url is None else service_health_url(process.name, process.url)


def _service_ports(config: LocalStackConfig) -> dict[str, int]:
    return {"moto": config.moto_port, "mlflow": config.mlflow_port, "bedrock-emulator": config.emulator_port}


def _holder_text(port: int) -> str:
    holder = port_holder(port)
    if holder is None:
        return "a process this user cannot see"
    pid, command = holder
    return f"pid {pid} ({command[:120]})"


def adopt_or_refuse(name: str, port: int, log_path: Path) -> ManagedProcess:
    """The service already listening on ``port``: adopted if it answers as that service (a server
    started by hand), otherwise ServiceStartError naming what holds the port."""
    url = f"http://{LOOPBACK}:{port}"
    health = service_health_url(name, url)
    if health is None or not http_ok(health):
        raise ServiceStartError(
            f"{name} port {port} on {LOOPBACK} is held by {_holder_text(port)}, which does not answer "
            f"as {name} ({health}); stop it or choose another port "
            "(LOCAL_MOTO_PORT / LOCAL_MLFLOW_PORT / LOCAL_BEDROCK_PORT)"
        )
    holder = port_holder(port)
    pid = holder[0] if holder else 0
    return ManagedProcess(
        name=name,
        pid=pid,
        pgid=0,
        start_ticks=process_start_ticks(pid) if pid else None,
        log_path=log_path,
        port=port,
        url=url,
        adopted=True,
    )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "up", "unhealthy" (process alive, health check failing) or "down"
    pid: int | None
    port: int | None
    url: str | None
    adopted: bool = False


def stack_status(config: LocalStackConfig) -> list[ServiceStatus]:
    """Each recorded service with its state; services never started are listed as down."""
    recorded = {process.name: process for process in read_pids(config.state_dir)}
    ports = {
        "moto": config.moto_port,
        "mlflow": config.mlflow_port,
        "bedrock-emulator": config.emulator_port,
        "event-pump": None,
    }
    statuses = []
    for name in SERVICE_ORDER:
        process = recorded.get(name)
        if process is None:
            if name == "bedrock-emulator" and recorded and name not in recorded:
                continue  # a stack started without the emulator
            statuses.append(ServiceStatus(name, "down", None, ports[name], None))
            continue
        url = health_url(process)
        if process.adopted:
            state = "up" if url is not None and http_ok(url) else "down"
        elif not process.running():
            state = "down"
        elif not process.is_alive():
            state = "orphaned"  # the recorded process exited, what it started still runs: `make down`
        else:
            state = "up" if url is None or http_ok(url) else "unhealthy"
        statuses.append(ServiceStatus(name, state, process.pid, process.port, process.url, process.adopted))
    return statuses


def stack_is_up(config: LocalStackConfig) -> bool:
    return any(process.running() for process in read_pids(config.state_dir) if not process.adopted)


@dataclass(frozen=True)
class StopReport:
    stopped: list[str]  # services that were still running
    left_running: list[str]  # adopted services (started by hand): not ours to stop
    busy_ports: list[int]  # ports of stopped services something still listens on


def stop_stack(
    config: LocalStackConfig, grace_seconds: float = 5.0, port_timeout: float = 10.0
) -> StopReport:
    """Stop what pids.json lists (pump first), wait until their ports are free, remove pids.json."""
    processes = read_pids(config.state_dir)
    stopped = []
    for process in sorted(processes, key=lambda p: -SERVICE_ORDER.index(p.name)):
        if process.adopted:
            continue
        if process.running():
            stopped.append(process.name)
        process.stop(grace_seconds)
    owned_ports = [p.port for p in processes if p.port is not None and not p.adopted]
    busy = wait_until_ports_free(owned_ports, port_timeout)
    (config.state_dir / PIDS_FILE).unlink(missing_ok=True)
    return StopReport(stopped, [p.name for p in processes if p.adopted], busy)


def restart_service(
    config: LocalStackConfig, name: str, timeout: float = DEFAULT_STARTUP_TIMEOUT
) -> ManagedProcess:
    """Stop one recorded service, wait until its port is free, start it again as it was and wait until
    it is healthy. The others keep running (the pump retries what fails meanwhile)."""
    processes = read_pids(config.state_dir)
    old = next((p for p in processes if p.name == name), None)
    if old is None:
        raise ServiceStartError(f"{name} is not part of the running local stack (see `make status`)")
    if old.adopted or not old.argv:
        why = (
            "was started by hand (adopted)" if old.adopted else "has no recorded command (an older `make up`)"
        )
        raise ServiceStartError(f"{name} {why}: restart it yourself, or `make down && make up`")
    old.stop()
    if old.port is not None and (busy := wait_until_ports_free([old.port])):
        raise ServiceStartError(
            f"{name} stopped, but port {busy[0]} is still held by {_holder_text(busy[0])}"
        )
    if old.ready_file:
        Path(old.ready_file).unlink(missing_ok=True)
    new = respawn(old)
    _write_pids(config.state_dir, [new if p is old else p for p in processes])
    url = health_url(new)
    ready = Path(new.ready_file) if new.ready_file else None
    wait_until_healthy(new, url, timeout, ready_file=ready)
    if name == "moto":  # moto keeps everything in memory: the bucket, queues and tables are new
        ensure_resources(config.moto_url)
    return new


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
        ports = _service_ports(config)
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
        _write_pids(self.config.state_dir, self.processes)  # at once: `down` can clean up a failed start
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
                "local_stack.event_pump",
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
