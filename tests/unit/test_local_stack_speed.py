"""Issue #17 point 11, the parts that need no server: the pump imports its handlers before it reports
ready, the stack asks it to, and the local MLflow server's pool outlasts its threads on SQLite."""

from __future__ import annotations

import sys
from pathlib import Path

from local_stack.event_pump import EventPump, QueueRoute
from local_stack.mlflow_server import MlflowServerOptions, mlflow_server_env

QUEUE = "http://127.0.0.1:1/123456789012/q"


def test_given_routes_when_the_pump_prewarms_then_handlers_are_imported_and_a_broken_one_waits_for_its_batch() -> (
    None
):
    sys.modules.pop("local_stack.bedrock_emulator.judge", None)
    pump = EventPump(
        [
            QueueRoute(QUEUE, "local_stack.bedrock_emulator.judge.judge_reply"),
            QueueRoute(QUEUE, "local_stack.no_such_module.handler"),
        ]
    )

    pump.prewarm()

    assert "local_stack.bedrock_emulator.judge" in sys.modules
    assert pump.counters.import_errors == 0  # counted when a batch meets it, as before


def test_given_a_sqlite_store_then_the_pool_has_two_connections_per_server_thread(tmp_path: Path) -> None:
    sqlite = mlflow_server_env(
        MlflowServerOptions(port=1, state_dir=tmp_path, db_pool_size=None, db_max_overflow=None)
    )
    postgres = mlflow_server_env(
        MlflowServerOptions(
            port=1,
            state_dir=tmp_path,
            backend_store_uri="postgresql://u@h/db",
            db_pool_size=None,
            db_max_overflow=None,
        )
    )
    chosen = mlflow_server_env(
        MlflowServerOptions(port=1, state_dir=tmp_path, db_pool_size=7, db_max_overflow=3)
    )

    assert (sqlite["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"], sqlite["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) == (
        "40",
        "40",
    )
    assert "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE" not in postgres
    assert (chosen["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"], chosen["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) == (
        "7",
        "3",
    )
