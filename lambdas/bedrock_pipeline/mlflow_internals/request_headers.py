"""MLflow's request-header provider registry: the "on Databricks?" check answered once per process.

Entry 4 of the package's docstring. Before every tracking request MLflow asks whether it runs on
Databricks: three checks, each trying imports that fail off Databricks (``dbruntime``, ``pyspark``), and
Python does not remember a failed import, so each request searches the import path again: ~9 % of a
runner's CPU (py-spy, docs/PERFORMANCE.md). The answer cannot change within a process.
"""

from __future__ import annotations

import functools
from typing import Any

from bedrock_pipeline.mlflow_internals import private_paths_enabled


@functools.cache
def _asked_once_type() -> type[Any]:
    """MLflow's Databricks header provider, with its ``in_context`` answered once (a class built on first
    use: its base is imported only on a verified MLflow)."""
    from mlflow.tracking.request_header.databricks_request_header_provider import (
        DatabricksRequestHeaderProvider,
    )

    class DatabricksContextAskedOnce(DatabricksRequestHeaderProvider):  # type: ignore[misc]
        def __init__(self) -> None:
            self._in_context: bool | None = None

        def in_context(self) -> bool:
            if self._in_context is None:
                self._in_context = bool(super().in_context())
            return self._in_context

    return DatabricksContextAskedOnce


def ask_databricks_context_once() -> bool:
    """Replace MLflow's Databricks header provider with one that asks once (idempotent). False, and the
    registry untouched (MLflow asks before every request), on an unverified MLflow or if its registry
    no longer has this shape."""
    if not private_paths_enabled():
        return False
    try:
        from mlflow.tracking.request_header import registry
        from mlflow.tracking.request_header.databricks_request_header_provider import (
            DatabricksRequestHeaderProvider,
        )
    except ImportError:
        return False
    providers = getattr(getattr(registry, "_request_header_provider_registry", None), "_registry", None)
    if not isinstance(providers, list):
        return False
    for index, provider in enumerate(providers):
        if type(provider) is DatabricksRequestHeaderProvider:
            providers[index] = _asked_once_type()()
    return True
