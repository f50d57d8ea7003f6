"""Session-wide real servers on loopback (moto, MLflow on SQLite and on PostgreSQL) and helpers.

Servers start once per session on free ports and are stopped (process group) at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from local_stack.event_pump import EventPump, QueueRoute
from local_stack.mlflow_server import MlflowServerOptions, start_mlflow_server
from local_stack.processes import free_port, start_moto
from local_stack.resources import (
    DUMMY_CREDENTIALS,
    LocalResources,
    ResourceNames,
    delete_resources,
    ensure_resources,
)

DEFAULT_TEST_POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_VISIBILITY_TIMEOUT = 2  # seconds: failed messages come back quickly


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto server (S3, SQS, DynamoDB...) for the whole session."""
    process = start_moto(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        assert process.url is not None
        yield process.url
    finally:
        process.stop(grace_seconds=2)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real MLflow server on SQLite, artifacts proxied by the server."""
    state = tmp_path_factory.mktemp("mlflow-sqlite")
    process = start_mlflow_server(MlflowServerOptions(port=free_port(), state_dir=state))
    try:
        assert process.url is not None
        yield process.url
    finally:
        process.stop(grace_seconds=3)


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_admin_uri() -> str:
    """The PostgreSQL server every machine here runs (PIPELINE_TEST_POSTGRES_URI); fails if unreachable."""
    import psycopg

    uri = os.environ.get("PIPELINE_TEST_POSTGRES_URI", DEFAULT_TEST_POSTGRES_URI)
    try:
        with psycopg.connect(uri, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        where = "in CI" if os.environ.get("CI") else "on this machine"
        pytest.fail(
            f"PostgreSQL is unreachable at {uri} {where}: {error}. It runs on every machine of this "
            "project (`pg_ctlcluster <version> main start`); set PIPELINE_TEST_POSTGRES_URI to use another.",
            pytrace=False,
        )
    return uri


@pytest.fixture(scope="session")
def mlflow_server_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_uri: str
) -> Iterator[str]:
    """URL of a real MLflow server on a fresh PostgreSQL database, dropped at session end."""
    import psycopg

    database = f"mlflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_uri, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    state = tmp_path_factory.mktemp("mlflow-postgres")
    try:
        process = start_mlflow_server(
            MlflowServerOptions(
                port=free_port(),
                state_dir=state,
                backend_store_uri=_with_database(postgres_admin_uri, database),
            )
        )
        try:
            assert process.url is not None
            yield process.url
        finally:
            process.stop(grace_seconds=3)
    finally:
        with psycopg.connect(postgres_admin_uri, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def aws_env(moto_server: str) -> Iterator[dict[str, str]]:
    """Points boto3 (no endpoint arguments) at the session's moto server; restores the environment after."""
    values = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
    }
    # Real credentials or profiles in the environment must not leak into (or override) the test's.
    removed = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN")
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    os.environ.update(values)
    for name in removed:
        os.environ.pop(name, None)
    try:
        yield values
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


ResourcesFactory = Callable[..., LocalResources]


@pytest.fixture
def local_resources_factory(moto_server: str) -> Iterator[ResourcesFactory]:
    """Creates fresh, uniquely named pipeline resources on moto; deletes them after the test.

    Call as ``factory(visibility_timeouts=2, max_receive_count=5)``.
    """
    created: list[LocalResources] = []

    def factory(
        *, visibility_timeouts: int | Mapping[str, int] = TEST_VISIBILITY_TIMEOUT, max_receive_count: int = 5
    ) -> LocalResources:
        resources = ensure_resources(
            moto_server,
            ResourceNames.unique(),
            visibility_timeouts=visibility_timeouts,
            max_receive_count=max_receive_count,
        )
        created.append(resources)
        return resources

    yield factory
    for resources in created:
        delete_resources(moto_server, resources)


@pytest.fixture
def local_resources(local_resources_factory: ResourcesFactory) -> LocalResources:
    """Fresh pipeline resources for one test (visibility timeout 2 s, DLQ after 5 receives)."""
    return local_resources_factory()


PumpFactory = Callable[[Sequence[QueueRoute]], EventPump]


@pytest.fixture
def event_pump(moto_server: str) -> Iterator[PumpFactory]:
    """Factory: ``event_pump(routes)`` returns a started EventPump on the session's moto; stopped after."""
    pumps: list[EventPump] = []

    def factory(routes: Sequence[QueueRoute]) -> EventPump:
        pump = EventPump(routes, endpoint_url=moto_server)
        pump.start()
        pumps.append(pump)
        return pump

    yield factory
    for pump in pumps:
        pump.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
