"""`make throughput` pins the machine's PostgreSQL with the MLflow server, and gives it its own mask back."""

from __future__ import annotations

import os

import psycopg

from throughput.services import postgres_pinned


def _backend_pid(connection: psycopg.Connection) -> int:
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_given_postgres_when_pinned_then_old_and_new_backends_run_there_until_released(
    postgres_admin_uri: str,
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        raise AssertionError("needs 2 CPUs to tell a pinned mask from the default one")
    target = {min(os.sched_getaffinity(0))}
    with psycopg.connect(postgres_admin_uri) as before:
        old_backend = _backend_pid(before)
        original = os.sched_getaffinity(old_backend)
        assert original != target
        with postgres_pinned(postgres_admin_uri, target) as pinned:
            assert pinned, "this user may not re-pin PostgreSQL (make throughput runs as root here)"
            assert os.sched_getaffinity(old_backend) == target
            with psycopg.connect(postgres_admin_uri) as during:  # forked from the pinned postmaster
                assert os.sched_getaffinity(_backend_pid(during)) == target
        assert os.sched_getaffinity(old_backend) == original
    with psycopg.connect(postgres_admin_uri) as after:
        assert os.sched_getaffinity(_backend_pid(after)) == original
