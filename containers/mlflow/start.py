"""Entrypoint of the MLflow server image: migrate the database, then exec `mlflow server`.

Environment contract (the ECS task definition sets these; secrets arrive as ECS secrets):

- ``DB_HOST``, ``DB_PORT`` (5432), ``DB_NAME``, ``DB_USERNAME``, ``DB_PASSWORD``: the PostgreSQL
  backend store (``MLFLOW_BACKEND_STORE_URI`` overrides them all). The basic-auth tables live in the
  same database under their own Alembic version table (``alembic_version_auth``).
- ``MLFLOW_ARTIFACTS_DESTINATION``: e.g. ``s3://bucket/mlflow-artifacts``; the server proxies
  artifacts, so clients need no S3 rights (``MLFLOW_S3_ENDPOINT_URL`` points boto3 elsewhere).
- ``MLFLOW_ALLOWED_HOSTS``: comma-separated Host headers (MLflow rejects others; /health is exempt).
- ``MLFLOW_AUTH_ADMIN_USERNAME``, ``MLFLOW_AUTH_ADMIN_PASSWORD``: the admin user (people).
- ``MLFLOW_PIPELINE_USERNAME``, ``MLFLOW_PIPELINE_PASSWORD`` (optional): the pipeline Lambdas' own user,
  not an admin. Both users are reconciled on every start: created if missing, their password and admin
  flag set to what the secrets say (MLflow itself reads the admin password only into an empty user store,
  so a replaced secret would otherwise lock every client out).
- ``MLFLOW_FLASK_SERVER_SECRET_KEY``: shared by every worker and task (CSRF tokens must verify anywhere).
- ``MLFLOW_WORKERS`` (1), ``MLFLOW_PORT`` (5000), ``MLFLOW_HOST`` (0.0.0.0),
  ``MLFLOW_AUTH_DEFAULT_PERMISSION`` (READ).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

# Any stable 64-bit number: every task agrees on it, so only one migrates at a time.
_MIGRATION_LOCK_ID = 0x4D4C_464C_4F57  # "MLFLOW"


class ConfigError(RuntimeError):
    """The environment contract is not met."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} must be set")
    return value


def backend_store_uri(env: Mapping[str, str]) -> str:
    if env.get("MLFLOW_BACKEND_STORE_URI"):
        return env["MLFLOW_BACKEND_STORE_URI"]
    user = quote(_required(env, "DB_USERNAME"), safe="")
    password = quote(_required(env, "DB_PASSWORD"), safe="")
    host = _required(env, "DB_HOST")
    port = env.get("DB_PORT", "5432")
    name = _required(env, "DB_NAME")
    return f"postgresql+psycopg://{user}:{password}@{host}:{port}/{name}"


def allowed_hosts(env: Mapping[str, str]) -> str:
    # Browsers lower-case the Host header while the ALB's DNS name arrives mixed-case from
    # CloudFormation, and MLflow compares case-sensitively: accept both spellings.
    hosts = [h.strip() for h in _required(env, "MLFLOW_ALLOWED_HOSTS").split(",") if h.strip()]
    return ",".join(dict.fromkeys([*hosts, *(h.lower() for h in hosts)]))


def write_auth_config(database_uri: str, default_permission: str, directory: str) -> str:
    """The basic-auth ini file (it holds the database URI, so only this user may read it)."""
    fd, path = tempfile.mkstemp(prefix="basic_auth-", suffix=".ini", dir=directory)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "[mlflow]\n"
            f"default_permission = {default_permission}\n"
            f"database_uri = {database_uri.replace('%', '%%')}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Account:
    """A basic-auth user whose password lives in a Secrets Manager secret (the source of truth)."""

    username: str
    password: str
    is_admin: bool


def accounts(env: Mapping[str, str]) -> list[Account]:
    """The admin (required) and the pipeline user (when configured), from the environment contract."""
    found = [
        Account(
            _required(env, "MLFLOW_AUTH_ADMIN_USERNAME"), _required(env, "MLFLOW_AUTH_ADMIN_PASSWORD"), True
        )
    ]
    if env.get("MLFLOW_PIPELINE_USERNAME", "").strip():
        pipeline = Account(
            _required(env, "MLFLOW_PIPELINE_USERNAME"), _required(env, "MLFLOW_PIPELINE_PASSWORD"), False
        )
        if pipeline.username == found[0].username:
            raise ConfigError("MLFLOW_PIPELINE_USERNAME must differ from MLFLOW_AUTH_ADMIN_USERNAME")
        found.append(pipeline)
    return found


def reconcile_users(store: object, wanted: Sequence[Account]) -> list[str]:
    """Make each account exist with its secret's password and admin flag; idempotent. Returns what changed.

    The pipeline user is a plain user: MLflow's basic auth gives every user ``default_permission`` (READ)
    on everything and MANAGE on the experiments it creates (``set_can_manage_experiment_permission``), which
    is all the pipeline needs: it creates its own experiments, runs and traces, and reads the rest. It
    cannot manage users or touch experiments people created (mlflow.org, "Authentication with Username
    and Password": READ / EDIT / MANAGE / NO_PERMISSIONS per experiment and registered model).
    """
    changes: list[str] = []
    for account in wanted:
        if not store.has_user(account.username, use_primary=True):  # type: ignore[attr-defined]
            store.create_user(account.username, account.password, is_admin=account.is_admin)  # type: ignore[attr-defined]
            changes.append(f"created {account.username}")
            continue
        if not store.authenticate_user(account.username, account.password, use_primary=True):  # type: ignore[attr-defined]
            store.update_user(account.username, password=account.password)  # type: ignore[attr-defined]
            changes.append(f"password of {account.username} set from its secret")
        if store.get_user(account.username).is_admin != account.is_admin:  # type: ignore[attr-defined]
            store.update_user(account.username, is_admin=account.is_admin)  # type: ignore[attr-defined]
            changes.append(f"admin flag of {account.username} set to {account.is_admin}")
    return changes


def migrate(database_uri: str, wanted: Sequence[Account] = ()) -> list[str]:
    """Bring the tracking and auth schemas to head and reconcile the users, one task at a time (a
    PostgreSQL advisory lock). Returns the user changes made."""
    import sqlalchemy
    from mlflow.db import upgrade
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
    from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(database_uri)  # waits for a starting database
    with engine.connect() as lock:
        lock.execute(sqlalchemy.text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        try:
            upgrade.main(args=[database_uri], standalone_mode=False)
            store = SqlAlchemyStore()
            store.init_db(database_uri)  # runs the auth migrations
            changes = reconcile_users(store, wanted)
            store.engine.dispose()
        finally:
            lock.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
    engine.dispose()
    return changes


def server_command(env: Mapping[str, str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        env.get("MLFLOW_HOST", "0.0.0.0"),
        "--port",
        env.get("MLFLOW_PORT", "5000"),
        "--workers",
        env.get("MLFLOW_WORKERS", "1"),
        "--app-name",
        "basic-auth",
        "--serve-artifacts",
        "--artifacts-destination",
        _required(env, "MLFLOW_ARTIFACTS_DESTINATION"),
        "--allowed-hosts",
        allowed_hosts(env),
    ]


def main() -> None:
    env = dict(os.environ)
    wanted = accounts(env)
    database_uri = backend_store_uri(env)
    command = server_command(env)
    for change in migrate(database_uri, wanted):
        print(f"start.py: {change}", file=sys.stderr)  # names only, never a password
    # MLflow must not see the pipeline's password; the admin variables stay (its auth app reads them).
    for name in ("MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD"):
        env.pop(name, None)
    # The URI goes through the environment, not argv, so the password never shows in `ps`.
    env["MLFLOW_BACKEND_STORE_URI"] = database_uri
    env["MLFLOW_AUTH_CONFIG_PATH"] = write_auth_config(
        database_uri, env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"), tempfile.gettempdir()
    )
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:
        print(f"start.py: {error}", file=sys.stderr)
        sys.exit(2)
