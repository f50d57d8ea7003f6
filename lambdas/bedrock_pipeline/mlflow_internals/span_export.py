"""MLflow's tracing provider and span exporter, reached into for the runner's trace export.

Entries 1-3 of the package's docstring: installing a wrapper in front of MLflow's span exporter, finding
it again, and posting a held set of traces trace info first (``bedrock_pipeline/trace_export.py`` says
why). Every function here takes MLflow's public path when ``private_paths_enabled()`` is False.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.mlflow_internals import private_paths_enabled

logger = logging.getLogger(__name__)


def install_exporter_wrapper(wrap: Callable[[Any], Any], wrapper_type: type) -> bool:
    """Put ``wrap(MLflow's span exporter)`` in MLflow's span processor, unless a ``wrapper_type`` is there
    already; False (nothing changed: MLflow exports span by span) on an unverified MLflow or if its
    tracing provider no longer has this shape."""
    if not private_paths_enabled():
        return False
    from mlflow.tracing import provider

    try:
        provider._get_tracer(__name__)  # the provider is created lazily; create it now
        processor = provider._get_span_processor()
        exporter = getattr(processor, "span_exporter", None)
    except Exception:  # a change there must not break tracing
        logger.warning("MLflow's span processor was not found: spans are exported one by one", exc_info=True)
        return False
    if exporter is None:
        logger.warning("MLflow's span processor has no exporter: spans are exported one by one")
        return False
    if not isinstance(exporter, wrapper_type):
        processor.span_exporter = wrap(exporter)
    return True


def installed_exporter() -> Any | None:
    """The span exporter MLflow's provider currently uses (None on an unverified MLflow or if not found)."""
    if not private_paths_enabled():
        return None
    from mlflow.tracing import provider

    try:
        return provider._get_trace_exporter()
    except Exception:  # a change there: the caller acts as if nothing were installed
        return None


def export_info_first(inner: Any, spans: Sequence[Any]) -> None:
    """Export finished traces StartTrace first, then all their spans in one post (trace_export.py: why).

    ``inner`` is MLflow's span exporter; its client and span grouping are used as MLflow uses them.
    Anything this does not handle goes to ``inner.export``, MLflow's own order. Never raises: it runs
    when a runner batch ends, and a trace export failing must not fail the batch (MLflow's own
    export only logs too)."""
    try:
        if private_paths_enabled():
            _export_info_first(inner, spans)
        else:
            inner.export(spans)
    except Exception:
        logger.warning("traces of a batch could not be exported", exc_info=True)


def _export_info_first(inner: Any, spans: Sequence[Any]) -> None:
    try:
        plain, other = _split_plain(inner, spans)
    except Exception:  # a change in MLflow's internals must not lose traces
        logger.warning("traces are exported in MLflow's order", exc_info=True)
        plain, other = [], list(spans)
    if other:
        inner.export(other)
    if plain:
        _export_plain(inner, plain)
        # MLflow flushes the roots it deferred (background spans still open) only inside its export:
        # give it that chance, since plain traces do not pass through it.
        inner.export([])


def _export_plain(inner: Any, plain: list[Any]) -> None:
    try:
        from mlflow.tracing.trace_manager import InMemoryTraceManager
        from mlflow.tracing.utils import add_size_stats_to_trace_metadata

        manager = InMemoryTraceManager.get_instance()
        by_experiment = inner._collect_mlflow_spans_for_export(plain)  # needs the traces: before pop
        roots = [span for span in plain if span.parent is None]
    except Exception:  # nothing popped yet: MLflow's own export still has every trace
        logger.warning("traces are exported in MLflow's order", exc_info=True)
        inner.export(plain)
        return

    def start_trace(root: Any) -> tuple[str, Any, Any] | None:
        manager_trace = manager.pop_trace(root.context.trace_id)
        if manager_trace is None:
            return None
        trace = manager_trace.trace
        try:
            add_size_stats_to_trace_metadata(trace)
            return trace.info.trace_id, inner._client.start_trace(trace.info), trace
        except Exception as exc:  # as MLflow does: warn; the span post below still stores the spans
            logger.warning("Failed to send trace %s to MLflow: %s", trace.info.trace_id, exc)
            return None

    # Concurrently, as each item exported its own trace before: a slow or unreachable server costs
    # the batch one request's timeout, not one per trace.
    stored = {found[0]: found[1:] for found in _export_pool().map(start_trace, roots) if found is not None}
    for (experiment_id, _workspace), mlflow_spans in by_experiment.items():
        try:
            inner._client.log_spans(experiment_id, mlflow_spans)
        except Exception as exc:
            if _no_span_storage(exc):  # as MLflow does: stop posting spans to this server
                inner._store_supports_log_spans = False
            logger.warning("Span post failed (%s): each trace's spans are stored as its artifact", exc)
            kept = [
                stored[trace_id]
                for trace_id in dict.fromkeys(s.trace_id for s in mlflow_spans)
                if trace_id in stored
            ]
            list(_export_pool().map(lambda pair: _upload_spans(inner, *pair), kept))


def _upload_spans(inner: Any, info: Any, trace: Any) -> None:
    try:
        inner._client._upload_trace_data(info, trace.data)
    except Exception:
        logger.warning("trace %s lost its spans", info.trace_id, exc_info=True)


def _no_span_storage(exc: Exception) -> bool:
    """MLflow's own test for a server that does not store spans (then it keeps them as artifacts)."""
    return isinstance(exc, NotImplementedError) or "REST OTLP span logging is not supported" in str(exc)


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _export_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=settings.TRACE_EXPORT_MAX_HELD_TRACES, thread_name_prefix="trace"
            )
        return _POOL


def _split_plain(inner: Any, spans: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The spans of whole, plain traces (handled here), and the rest (MLflow's own export)."""
    from mlflow.tracing.constant import TraceTagKey
    from mlflow.tracing.trace_manager import InMemoryTraceManager
    from mlflow.utils.uri import is_databricks_uri

    if (
        not inner._store_supports_log_spans
        or inner._should_log_async()
        or is_databricks_uri(inner._client.tracking_uri)
    ):
        return [], list(spans)
    manager = InMemoryTraceManager.get_instance()
    by_trace: dict[int, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    plain: list[Any] = []
    other: list[Any] = []
    for otel_id, trace_spans in by_trace.items():
        mlflow_id = manager.get_mlflow_trace_id_from_otel_id(otel_id)
        is_plain = False
        if mlflow_id is not None and any(span.parent is None for span in trace_spans):
            with manager.get_trace(mlflow_id) as trace:
                is_plain = (
                    trace is not None
                    and not trace.prompts
                    and not trace.is_remote_trace
                    and trace.workspace is None
                    and TraceTagKey.EVAL_REQUEST_ID not in trace.info.tags
                    and all(
                        span.end_time_ns is not None and not span._attachments
                        for span in trace.span_dict.values()
                    )
                )
        (plain if is_plain else other).extend(trace_spans)
    return plain, other
