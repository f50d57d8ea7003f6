"""Every use of MLflow's private API, in one place, behind a version guard.

The pipeline leans on MLflow internals in a few places where MLflow's public behaviour costs a traced
run server time or a cold start time (docs/PERFORMANCE.md measures each). They are all here, and only
here (tests/unit/test_mlflow_internals.py fails on a private MLflow import elsewhere). Each is
verified against the MLflow versions in ``VERIFIED_MLFLOW_VERSIONS``. The installed version is read
from package metadata (``mlflow-skinny``, which the Lambda bundle ships, else ``mlflow``) without
importing MLflow, once per process; on any other version every entry below takes its fallback, which
is MLflow's public behaviour, and one warning says so. An upgrade fails
``test_the_installed_mlflow_is_one_the_adapter_was_verified_against``: re-check each entry, then add
the version.

What is reached, where, why, and the fallback:

1. ``span_export.install_exporter_wrapper`` (used by ``trace_export.export_traces_at_once``, at the
   runner's set-up): ``mlflow.tracing.provider._get_tracer`` / ``_get_span_processor`` and the
   processor's ``span_exporter``, replaced by ``TraceAtOnceExporter``. Why: a trace's spans in one
   post, and a batch's traces held and posted together (3.00 -> ~1.1 trace requests per record).
   Fallback: nothing installed; MLflow exports span by span.
2. ``span_export.installed_exporter`` (``trace_export.holding_finished_traces``, per runner batch):
   ``mlflow.tracing.provider._get_trace_exporter``. Fallback: no wrapper found, a no-op hold scope.
3. ``span_export.export_info_first`` (``TraceAtOnceExporter``, when a held set goes out):
   ``InMemoryTraceManager`` (``mlflow.tracing.trace_manager``: ``get_instance``,
   ``get_mlflow_trace_id_from_otel_id``, ``get_trace``, ``pop_trace``; the manager trace's
   ``prompts``, ``is_remote_trace``, ``workspace``, ``span_dict`` and each span's ``_attachments``),
   ``mlflow.tracing.utils.add_size_stats_to_trace_metadata``, ``mlflow.utils.uri.is_databricks_uri``,
   ``mlflow.tracing.constant.TraceTagKey``, and MLflow's span exporter's
   ``_collect_mlflow_spans_for_export``, ``_should_log_async``, ``_store_supports_log_spans`` and
   ``_client`` (``TracingClient.start_trace``, ``log_spans``, ``_upload_trace_data``). Why: StartTrace
   before the spans is one INSERT on the server instead of its merge path (97 -> 41 ms of server and
   database CPU per trace). Fallback: the set goes to MLflow's exporter's public ``export`` (MLflow's
   order); also whenever one of these raises before a trace was taken from the manager.
4. ``request_headers.ask_databricks_context_once`` (called by ``handlers/runtime.py`` at set-up):
   ``mlflow.tracking.request_header.registry._request_header_provider_registry._registry`` and
   ``DatabricksRequestHeaderProvider``, replaced by a subclass that answers ``in_context`` once. Why:
   MLflow re-tries failing imports (``dbruntime``, ``pyspark``) before every tracking request, ~9 % of
   a runner's CPU. Fallback: the registry untouched; MLflow asks before every request.
5. ``deferred_init.DeferredInitFinder`` (``handlers.cold_start.lean_imports``, around the handlers'
   imports): a ``sys.meta_path`` finder that knows ``mlflow.gateway``'s ``__init__`` only re-exports
   two names (and imports fastapi for them), and defers it to the first lookup of a name (PEP 562).
   Why: 0.10-0.12 s of every runner cold start. Fallback: the finder leaves MLflow's packages alone
   (it still defers a package a caller names outside MLflow); the guard is read only when
   ``mlflow.gateway`` is being imported, so a handler that imports no MLflow (ingest) never reads it.

Process-wide state, as before the move: the span exporter wrapper and the header provider replace
objects in MLflow's own process-wide registries; ``span_export`` keeps one small thread pool for
StartTrace calls; the guard's decision is cached (``private_paths_enabled.cache_clear()`` in tests).

Judged public, and used outside this package: ``mlflow.entities.trace_location.MlflowExperimentLocation``
(documented in MLflow's ``mlflow.entities`` API reference; ``mlflow.start_span``'s
``trace_destination``) and two constant modules whose values are documented contracts:
``mlflow.tracing.constant.SpanAttributeKey`` (``CHAT_USAGE`` is ``mlflow.chat.tokenUsage``, in MLflow's
tracing attribute reference) and ``mlflow.utils.mlflow_tags`` (``mlflow.parentRunId``,
``mlflow.runName``: MLflow's documented system tags). Their values are pinned by the same test file.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

# Re-check every entry of the docstring before adding a version.
VERIFIED_MLFLOW_VERSIONS = frozenset({"3.17.2"})
# The distribution that installs the ``mlflow`` package's code: the Lambda bundle ships mlflow-skinny;
# full ``mlflow`` 3.x depends on it at the same version.
MLFLOW_DISTRIBUTIONS = ("mlflow-skinny", "mlflow")


def installed_mlflow_version() -> str | None:
    """The installed MLflow's version, from package metadata (MLflow itself is not imported)."""
    from importlib import metadata  # here: a handler that never asks does not import it

    for name in MLFLOW_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def private_paths_enabled() -> bool:
    """Whether this package may use MLflow's private API: decided once per process."""
    version = installed_mlflow_version()
    if version in VERIFIED_MLFLOW_VERSIONS:
        return True
    logger.warning(
        "MLflow %s is not a version bedrock_pipeline.mlflow_internals was verified against (%s): "
        "using MLflow's public behaviour (span-by-span trace export, header checks per request, "
        "mlflow.gateway imported eagerly)",
        version,
        ", ".join(sorted(VERIFIED_MLFLOW_VERSIONS)),
    )
    return False
