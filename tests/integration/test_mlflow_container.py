"""The MLflow image's entrypoint (containers/mlflow/start.py) against real PostgreSQL and moto S3.

The same script the Fargate task runs: it migrates a fresh database, starts `mlflow server` with
basic auth and proxied artifacts, and must honour the environment contract the CDK stack sets.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import boto3
import psycopg
import pytest
import requests

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO_ROOT / "containers" / "mlflow" / "start.py"
POSTGRES_ADMIN_URI = os.environ.get(
    "PIPELINE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN = ("admin", "Integration-Test-Passw0rd-1234")
PIPELINE = ("bedrock-pipeline", "Pipeline-Test-Passw0rd-5678")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Server:
    url: str
    database: str
    s3_url: str
    bucket: str
    log: Path


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"mlflow_container_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/moto-api/", process, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def _container_env(database: str, s3_url: str, bucket: str, port: int) -> dict[str, str]:
    postgres = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN_URI)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))},
        **AWS_ENV,
        "DB_HOST": str(postgres.get("host", "127.0.0.1")),
        "DB_PORT": str(postgres.get("port", 5432)),
        "DB_NAME": database,
        "DB_USERNAME": str(postgres.get("user", "postgres")),
        # Loopback PostgreSQL here trusts local connections; the value only has to be present.
        "DB_PASSWORD": str(postgres.get("password") or "trust-auth-ignores-this"),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow-artifacts",
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "MLFLOW_ALLOWED_HOSTS": f"127.0.0.1:{port},MLflow.Bedrock-Mlflow.Internal:5000",
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_PIPELINE_USERNAME": PIPELINE[0],
        "MLFLOW_PIPELINE_PASSWORD": PIPELINE[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "integration-test-flask-secret",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }


@pytest.fixture(scope="module")
def server(database: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bucket = "mlflow-artifacts-test"
    boto3.client("s3", endpoint_url=moto_s3, **_boto_credentials()).create_bucket(Bucket=bucket)
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(START_SCRIPT)],
            env=_container_env(database, moto_s3, bucket, port),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/health", process, timeout=120)
        yield Server(url, database, moto_s3, bucket, log)
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        _stop(process)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


def test_given_a_fresh_database_when_the_entrypoint_starts_then_both_schemas_are_migrated(
    server: Server,
) -> None:
    conninfo = psycopg.conninfo.make_conninfo(POSTGRES_ADMIN_URI, dbname=server.database)
    with psycopg.connect(conninfo) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        head = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"experiments", "runs", "alembic_version", "users", "alembic_version_auth"} <= tables
    assert head is not None


def test_given_the_server_when_health_is_polled_without_credentials_then_it_answers_200(
    server: Server,
) -> None:
    response = requests.get(f"{server.url}/health", timeout=5)
    assert response.status_code == 200


def test_given_basic_auth_when_requests_lack_or_have_credentials_then_401_or_200(server: Server) -> None:
    api = f"{server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(api, params={"max_results": 1}, timeout=5).status_code == 401
    assert (
        requests.get(api, params={"max_results": 1}, auth=(ADMIN[0], "wrong-password"), timeout=5).status_code
        == 401
    )
    assert requests.get(api, params={"max_results": 1}, auth=ADMIN, timeout=5).status_code == 200


def test_given_an_unlisted_host_header_when_calling_the_api_then_it_is_rejected(server: Server) -> None:
    api = f"{server.url}/api/2.0/mlflow/experiments/search"
    listed = requests.get(api, params={"max_results": 1}, auth=ADMIN, timeout=5,
                          headers={"Host": "mlflow.bedrock-mlflow.internal:5000"})  # fmt: skip
    unlisted = requests.get(
        api, params={"max_results": 1}, auth=ADMIN, timeout=5, headers={"Host": "evil.example"}
    )
    assert listed.status_code == 200  # lower-cased spelling of a mixed-case allowed host
    assert unlisted.status_code in (400, 403)


def test_given_a_client_without_s3_rights_when_it_logs_an_artifact_then_the_server_writes_it_to_s3(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # the client only talks HTTP to the server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    client = MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment(f"container-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    artifact = tmp_path / "answer.txt"
    artifact.write_text("forty-two")
    client.log_artifact(run.info.run_id, str(artifact))

    objects = boto3.client("s3", endpoint_url=server.s3_url, **_boto_credentials()).list_objects_v2(
        Bucket=server.bucket, Prefix="mlflow-artifacts/"
    )
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/answer.txt") for key in keys), keys


def test_given_a_missing_artifact_destination_when_the_entrypoint_starts_then_it_exits_with_a_config_error(
    database: str,
) -> None:
    env = _container_env(database, "http://127.0.0.1:9", "unused", _free_port())
    del env["MLFLOW_ARTIFACTS_DESTINATION"]
    result = subprocess.run([sys.executable, str(START_SCRIPT)], env=env, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert b"MLFLOW_ARTIFACTS_DESTINATION must be set" in result.stderr


def _start_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlflow_start", START_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _database_uri(database: str) -> str:
    env = _container_env(database, "http://127.0.0.1:9", "unused", 5000)
    return str(_start_module().backend_store_uri(env))


def _status(server: Server, auth: tuple[str, str]) -> int:
    api = f"{server.url}/api/2.0/mlflow/experiments/search"
    return requests.get(api, params={"max_results": 1}, auth=auth, timeout=5).status_code


def test_given_the_pipeline_user_when_it_logs_then_it_writes_its_own_runs_but_cannot_administer(
    server: Server,
) -> None:
    api = f"{server.url}/api/2.0/mlflow"
    created = requests.post(f"{api}/experiments/create", json={"name": f"pipe-{uuid.uuid4().hex[:8]}"},
                            auth=PIPELINE, timeout=5)  # fmt: skip
    assert created.status_code == 200, created.text
    run = requests.post(f"{api}/runs/create", json={"experiment_id": created.json()["experiment_id"]},
                        auth=PIPELINE, timeout=5)  # fmt: skip
    assert run.status_code == 200, run.text
    # Not an admin: it cannot create users, nor write into an experiment a person (the admin) created.
    new_user = requests.post(f"{api}/users/create", json={"username": "mallory", "password": "x" * 16},
                             auth=PIPELINE, timeout=5)  # fmt: skip
    assert new_user.status_code == 403
    theirs = requests.post(f"{api}/experiments/create", json={"name": f"people-{uuid.uuid4().hex[:8]}"},
                           auth=ADMIN, timeout=5).json()["experiment_id"]  # fmt: skip
    denied = requests.post(f"{api}/runs/create", json={"experiment_id": theirs}, auth=PIPELINE, timeout=5)
    assert denied.status_code == 403


def test_given_secrets_replaced_when_the_entrypoint_reconciles_then_the_stored_passwords_follow_them(
    server: Server,
) -> None:
    """What a recreated stack or a rotated secret does: the user store keeps the old passwords until the
    start-up script sets them from the secrets; a second start changes nothing."""
    start = _start_module()
    uri = _database_uri(server.database)
    admin2 = (ADMIN[0], "Rotated-Admin-Passw0rd-0001")
    pipeline2 = (PIPELINE[0], "Rotated-Pipeline-Passw0rd-0002")
    wanted = [start.Account(*admin2, True), start.Account(*pipeline2, False)]
    try:
        changes = start.migrate(uri, wanted)
        assert changes == [f"password of {ADMIN[0]} set from its secret",
                           f"password of {PIPELINE[0]} set from its secret"]  # fmt: skip
        assert _status(server, admin2) == 200 and _status(server, pipeline2) == 200
        assert _status(server, ADMIN) == 401 and _status(server, PIPELINE) == 401
        assert start.migrate(uri, wanted) == []  # idempotent
    finally:  # the other tests of this module use the original passwords
        start.migrate(uri, [start.Account(*ADMIN, True), start.Account(*PIPELINE, False)])
    assert _status(server, ADMIN) == 200 and _status(server, PIPELINE) == 200


def test_given_a_pipeline_user_promoted_by_hand_when_the_entrypoint_reconciles_then_it_is_plain_again(
    server: Server,
) -> None:
    start = _start_module()
    uri = _database_uri(server.database)
    promote = requests.patch(f"{server.url}/api/2.0/mlflow/users/update-admin",
                             json={"username": PIPELINE[0], "is_admin": True}, auth=ADMIN, timeout=5)  # fmt: skip
    assert promote.status_code == 200
    changes = start.migrate(uri, [start.Account(*ADMIN, True), start.Account(*PIPELINE, False)])
    assert changes == [f"admin flag of {PIPELINE[0]} set to False"]


def test_given_the_same_name_for_admin_and_pipeline_when_the_entrypoint_starts_then_it_refuses(
    database: str,
) -> None:
    env = _container_env(database, "http://127.0.0.1:9", "unused", _free_port())
    env["MLFLOW_PIPELINE_USERNAME"] = ADMIN[0]
    result = subprocess.run([sys.executable, str(START_SCRIPT)], env=env, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert b"MLFLOW_PIPELINE_USERNAME must differ" in result.stderr
