"""The servers a benchmark runs against, each in its own process (as in the local stack), cleaned up after.

PostgreSQL is the machine's (127.0.0.1:5432, PIPELINE_TEST_POSTGRES_URI to change): a fresh database
per run, dropped at the end, as tests/conftest.py does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from local_stack.config import REPO_ROOT
from local_stack.mlflow_server import MlflowServerOptions, start_mlflow_server
from local_stack.processes import ManagedProcess, free_port, start_moto

DEFAULT_POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_admin_uri() -> str:
    return os.environ.get("PIPELINE_TEST_POSTGRES_URI", DEFAULT_POSTGRES_URI)


@contextmanager
def fresh_database(admin_uri: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (its URI), dropped afterwards even if the benchmark fails."""
    import psycopg

    admin = admin_uri or postgres_admin_uri()
    name = f"mlflow_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class MlflowServer:
    url: str
    log_path: Path
    process: ManagedProcess


@contextmanager
def mlflow_server(
    backend_uri: str,
    state_dir: Path,
    *,
    workers: int,
    db_pool_size: int | None = None,
    db_max_overflow: int | None = None,
) -> Iterator[MlflowServer]:
    options = MlflowServerOptions(
        port=free_port(),
        state_dir=state_dir,
        backend_store_uri=backend_uri,
        workers=workers,
        db_pool_size=db_pool_size,
        db_max_overflow=db_max_overflow,
    )
    log = state_dir / "mlflow.log"
    process = start_mlflow_server(options, log)
    try:
        yield MlflowServer(url=options.url, log_path=log, process=process)
    finally:
        process.stop(grace_seconds=3)


@contextmanager
def moto(state_dir: Path) -> Iterator[ManagedProcess]:
    process = start_moto(free_port(), state_dir / "moto.log")
    try:
        yield process
    finally:
        process.stop(grace_seconds=2)


@contextmanager
def emulator(latency_ms: float = 0.0) -> Iterator[str]:
    """The Bedrock emulator CLI in a child process (its own GIL, as in the local stack)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack.bedrock_emulator", "--port", "0", "--quiet"],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        match = re.search(r"http://[\d.]+:\d+", process.stderr.readline())
        if not match:
            raise RuntimeError("the Bedrock emulator did not start")
        url = match.group(0)
        set_emulator_latency(url, latency_ms)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def set_emulator_latency(url: str, latency_ms: float) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/_emulator/config",
        data=json.dumps({"models": {"*": {"latency_ms": latency_ms}}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes in a process group (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # After the command: state, ppid, pgrp, ... utime is field 14 and stime 15 (1-based, man proc).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def split_cpus(cpus: set[int]) -> tuple[set[int], set[int]] | None:
    """(the tracking server's CPUs, everyone else's): half each, or None on one CPU."""
    ordered = sorted(cpus)
    if len(ordered) < 2:
        return None
    half = len(ordered) // 2
    return set(ordered[:half]), set(ordered[half:])


def pin_process_group(pgid: int, cpus: set[int]) -> int:
    """Every thread of every live process in the group onto ``cpus``; returns how many threads."""
    pinned = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for task in (stat.parent / "task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
                pinned += 1
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # a process or thread that ended meanwhile
    return pinned


def _postmaster_pid(database_uri: str) -> int:
    import psycopg

    with psycopg.connect(database_uri, connect_timeout=5) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(_stat_fields(int(row[0]))[1])  # our backend's parent, while it is alive to be read


def _postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return pids


@contextmanager
def postgres_pinned(database_uri: str, cpus: set[int]) -> Iterator[bool]:
    """The machine's PostgreSQL (postmaster and backends) on ``cpus`` while inside; its own mask after.

    New backends fork from the postmaster and so inherit the mask. Yields False (and pins nothing)
    when the server's processes may not be re-pinned by this user."""
    postmaster = _postmaster_pid(database_uri)
    try:
        original = os.sched_getaffinity(postmaster)
        os.sched_setaffinity(postmaster, cpus)
    except PermissionError:
        yield False
        return
    try:
        for pid in _postgres_pids(postmaster)[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(pid, cpus)
        yield True
    finally:
        for pid in _postgres_pids(postmaster):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(pid, original)


def _stat_fields(pid: int) -> list[str]:
    # After the command: state, ppid, pgrp, ... (man proc; here 0-based from the state).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu_seconds(database_uri: str) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, the backends it has reaped (its children's
    CPU, which the kernel adds to the parent when a child exits), and the backends alive now.

    Counting only the live backends of one database went negative when pooled connections closed
    between two readings. The machine's PostgreSQL serves nothing else while a phase runs."""
    postmaster = _postmaster_pid(database_uri)
    pids = _postgres_pids(postmaster)
    fields = _stat_fields(postmaster)
    total = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for pid in pids[1:]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            child = _stat_fields(pid)
            total += int(child[11]) + int(child[12])
    return total / _TICKS
