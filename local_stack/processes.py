"""Detached service processes: spawn, health-wait, identify and stop exactly what was started.

Every service runs in its own session (process group), so stopping it reaches its children too
(``mlflow server`` forks a uvicorn worker) and nothing else. A pid is recorded together with the
process start time from ``/proc`` so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_stack.config import LOOPBACK

VENV_BIN = Path(sys.executable).parent


class ServiceStartError(RuntimeError):
    """A service did not become healthy in time, or exited while starting."""


def port_in_use(port: int) -> bool:
    """True while a socket listens on the loopback port.

    SO_REUSEADDR, as every service here sets it: the TIME_WAIT connections a stopped server leaves
    behind (hundreds after a demo) do not stop a new server from listening, so they must not count
    (without it `make down && make up` saw the ports it had just freed as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def wait_until_ports_free(ports: Sequence[int], timeout: float = 10.0) -> list[int]:
    """Wait until no socket listens on any of ``ports``; returns those still held at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [port for port in ports if port_in_use(port)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.05)


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on the TCP port, if this user can see it.

    Read from /proc: the listening socket's inode in /proc/net/tcp{,6}, then the process holding it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return int(entry.name), command.strip()
        except OSError:  # gone, or another user's
            continue
    return None


def free_port() -> int:
    """A currently free TCP port on loopback (bind port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One detached service: enough to find it again from another process (see pids.json)."""

    name: str
    pid: int
    pgid: int
    start_ticks: int | None
    log_path: Path
    port: int | None = None
    url: str | None = None
    # How it was started, so `restart` can start it again from another shell.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready_file: str | None = None  # a service without a port says it is ready by creating this file
    # Found running on its port (started by hand) and used as it is: never stopped or restarted by us.
    adopted: bool = False
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "pgid": self.pgid,
            "start_ticks": self.start_ticks,
            "log_path": str(self.log_path),
            "port": self.port,
            "url": self.url,
            "argv": self.argv,
            "env": self.env,
            "cwd": self.cwd,
            "ready_file": self.ready_file,
            "adopted": self.adopted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManagedProcess:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            start_ticks=data.get("start_ticks"),
            log_path=Path(data["log_path"]),
            port=data.get("port"),
            url=data.get("url"),
            argv=list(data.get("argv") or []),
            env=dict(data.get("env") or {}),
            cwd=data.get("cwd"),
            ready_file=data.get("ready_file"),
            adopted=bool(data.get("adopted", False)),
        )

    def running(self) -> bool:
        """True while the process or what it started still runs: killing only ``mlflow server`` (the
        recorded pid, a wrapper) leaves its uvicorn worker serving the port."""
        return self.is_alive() or (self._group_is_ours() and self.group_alive())

    def is_alive(self) -> bool:
        """True while the recorded process itself still runs (same pid *and* same start time)."""
        if self.popen is not None and self.popen.poll() is not None:
            return False
        ticks = process_start_ticks(self.pid)
        return ticks is not None and (self.start_ticks is None or ticks == self.start_ticks)

    def group_alive(self) -> bool:
        """True while any process of the service's process group remains."""
        if self.popen is not None:
            self.popen.poll()  # reap our own child so it does not linger as a zombie
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _group_has_live_member(self.pgid)

    def stop(self, grace_seconds: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period. Touches nothing else."""
        if self.adopted or (not self.is_alive() and not self._group_is_ours()):
            return
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not self.group_alive():
                return
            time.sleep(0.05)
        _signal_group(self.pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self.group_alive():
            time.sleep(0.05)

    def _group_is_ours(self) -> bool:
        # The leader may have exited while its children (same group, set by us at spawn) live on.
        # The group id equals the leader's pid; if that pid now belongs to another process, the
        # group is not ours any more.
        return self.start_ticks is not None and process_start_ticks(self.pgid) in (None, self.start_ticks)


def _group_has_live_member(pgid: int) -> bool:
    # killpg(0) succeeds while only zombies remain; look for a member that is not a zombie.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    url: str | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start a detached service in its own session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # own process group: stop reaches its children and only them
        )
    return ManagedProcess(
        name=name,
        pid=popen.pid,
        pgid=popen.pid,
        start_ticks=process_start_ticks(popen.pid),
        log_path=log_path,
        port=port,
        url=url,
        argv=list(argv),
        env=dict(env or {}),
        cwd=str(cwd) if cwd is not None else None,
        popen=popen,
    )


def respawn(process: ManagedProcess) -> ManagedProcess:
    """The same service started again as it was recorded (command, extra environment, folder)."""
    if process.adopted or not process.argv:
        raise ServiceStartError(f"{process.name} was not started by the local stack; restart it yourself")
    restarted = spawn(
        process.name,
        process.argv,
        process.log_path,
        env=process.env,
        port=process.port,
        url=process.url,
        cwd=Path(process.cwd) if process.cwd else None,
    )
    restarted.ready_file = process.ready_file
    return restarted


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True if GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_healthy(
    process: ManagedProcess,
    health_url: str | None,
    timeout: float,
    *,
    ready_file: Path | None = None,
) -> float:
    """Wait until ``health_url`` answers 200 (or ``ready_file`` exists); returns seconds waited.

    Raises ServiceStartError with the log tail if the process exits or the timeout passes.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if health_url is not None and http_ok(health_url):
            return time.monotonic() - started
        if ready_file is not None and ready_file.exists():
            return time.monotonic() - started
        if not process.is_alive():
            raise ServiceStartError(
                f"{process.name} exited while starting; log {process.log_path}:\n{log_tail(process.log_path)}"
            )
        time.sleep(0.1)
    raise ServiceStartError(
        f"{process.name} not healthy after {timeout:.0f} s "
        f"({health_url or ready_file}); log {process.log_path}:\n{log_tail(process.log_path)}"
    )


def start_moto(port: int, log_path: Path, *, timeout: float = 30.0) -> ManagedProcess:
    """moto in server mode on loopback (S3, SQS, DynamoDB...), waited until it answers."""
    url = f"http://{LOOPBACK}:{port}"
    process = spawn(
        "moto",
        [sys.executable, "-m", "local_stack.moto_server", "-H", LOOPBACK, "-p", str(port)],
        log_path,
        port=port,
        url=url,
    )
    try:
        wait_until_healthy(process, moto_health_url(url), timeout)
    except ServiceStartError:
        process.stop(grace_seconds=1)
        raise
    return process


def moto_health_url(url: str) -> str:
    # moto's own management API answers 200 once the server routes requests.
    return f"{url}/moto-api/"
