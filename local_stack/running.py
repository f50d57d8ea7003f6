"""The running local stack as pids.json records it: its status, stopping it, restarting one service,
and adopting a service someone started by hand on one of its ports (`make status`, `down`, `restart`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from local_stack.config import LOOPBACK, LocalStackConfig
from local_stack.mlflow_server import DEFAULT_STARTUP_TIMEOUT
from local_stack.processes import (
    ManagedProcess,
    ServiceStartError,
    http_ok,
    moto_health_url,
    port_holder,
    process_start_ticks,
    respawn,
    wait_until_healthy,
    wait_until_ports_free,
)
from local_stack.resources import ensure_resources

PIDS_FILE = "pids.json"
# Start order; stopped in reverse (the pump first, so nothing is mid-call when its peers go).
SERVICE_ORDER = ("moto", "mlflow", "bedrock-emulator", "event-pump")


def read_pids(state_dir: Path) -> list[ManagedProcess]:
    """The services recorded by a running (or crashed) stack; empty if there is no pids.json."""
    path = state_dir / PIDS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [ManagedProcess.from_json(item) for item in data.get("services", [])]


def write_pids(state_dir: Path, processes: list[ManagedProcess]) -> None:
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


def service_ports(config: LocalStackConfig) -> dict[str, int]:
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
    write_pids(config.state_dir, [new if p is old else p for p in processes])
    url = health_url(new)
    ready = Path(new.ready_file) if new.ready_file else None
    wait_until_healthy(new, url, timeout, ready_file=ready)
    if name == "moto":  # moto keeps everything in memory: the bucket, queues and tables are new
        ensure_resources(config.moto_url)
    return new
