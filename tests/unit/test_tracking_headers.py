"""MLflow asks whether it runs on Databricks once per process, not before every tracking request."""

from __future__ import annotations

import pytest
from mlflow.tracking.request_header import registry
from mlflow.tracking.request_header.databricks_request_header_provider import (
    DatabricksRequestHeaderProvider,
)
from mlflow.utils import databricks_utils

from bedrock_pipeline import mlflow_internals
from bedrock_pipeline.mlflow_internals.request_headers import ask_databricks_context_once


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """MLflow's provider list as it ships (a handler built earlier in this process may have replaced its
    Databricks provider), restored after the test."""
    providers = [
        DatabricksRequestHeaderProvider()
        if isinstance(provider, DatabricksRequestHeaderProvider)
        else provider
        for provider in registry._request_header_provider_registry._registry
    ]
    monkeypatch.setattr(registry._request_header_provider_registry, "_registry", providers)
    return providers


def test_the_databricks_checks_run_once_however_many_requests_resolve_headers(
    own_registry: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    real_is_in_cluster = databricks_utils.is_in_cluster

    def counted_is_in_cluster() -> bool:
        checks.append("is_in_cluster")
        return bool(real_is_in_cluster())

    monkeypatch.setattr(databricks_utils, "is_in_cluster", counted_is_in_cluster)
    registry.resolve_request_headers()
    assert checks == ["is_in_cluster"]  # MLflow as shipped: once per request

    assert ask_databricks_context_once() is True
    assert ask_databricks_context_once() is True  # idempotent: one replacement, not a wrapper of it
    for _ in range(3):
        headers = registry.resolve_request_headers()
    assert checks == ["is_in_cluster", "is_in_cluster"]  # once more in all, not three times
    assert "User-Agent" in headers  # the other providers still answer
    kinds = [type(provider) for provider in own_registry]
    assert DatabricksRequestHeaderProvider not in kinds and len(kinds) == len(set(kinds))


def test_on_an_unverified_mlflow_the_registry_is_left_as_mlflow_ships_it(
    own_registry: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mlflow_internals, "installed_mlflow_version", lambda: "0.0.1")
    mlflow_internals.private_paths_enabled.cache_clear()
    try:
        before = list(own_registry)
        assert ask_databricks_context_once() is False
        assert own_registry == before  # the same provider objects: MLflow asks before every request
    finally:
        mlflow_internals.private_paths_enabled.cache_clear()
