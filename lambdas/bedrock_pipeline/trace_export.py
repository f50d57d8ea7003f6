"""Export each trace's spans in one request when its root span ends, instead of one request per span.

With MLflow's async trace queue off (handlers/runtime.py says why), MLflow exports through OTel's
SimpleSpanProcessor: every span is posted to the tracking server (OTLP ``/v1/traces``) as it ends,
then StartTrace when the root ends. A runner item's trace has two spans (the record and the model
call), so that is three requests per record. This exporter sits between the processor and MLflow's
exporter and hands a trace's finished child spans over together with its root: one span post and
one StartTrace, the same data (docs/PERFORMANCE.md: 3.00 -> 2.00 trace requests and ~7 % less
server CPU per record).

Inside ``holding_finished_traces()`` (the runner wraps each SQS batch in it) finished traces are not
exported when their root ends but together when the scope ends: one StartTrace per trace (all at
once, on a small pool), then one span post for the whole set (about 1.1 trace requests per record
for a batch of 10, against 2). The scope is process-wide and counted, so invocations sharing a
process (the local event pump) keep holding until the last one ends, and each exit exports
everything finished so far. At most ``max_held_traces`` finished traces wait: the one that completes
the set exports them all.

A held set goes out **trace info first** (``export_info_first``), the reverse of MLflow's order.
Posted after its spans, StartTrace finds the row the span post created and takes the server's merge
path: a failed INSERT rolled back, the row re-read under a lock, then one SELECT-and-write per tag and
per metadata key. Posted first, it is one INSERT. Measured on the throughput run's server (PostgreSQL, 2-span
traces with the runner's 9 tags): 97 -> 41 ms of server and database CPU per trace
(docs/PERFORMANCE.md). The server's span post then completes the trace (it marks the spans as stored
in the database); if that post fails, each trace's spans are uploaded as its artifact instead, which
is where MLflow itself keeps spans for a server without span storage. Traces that are not plain
(prompts linked, attachments, an evaluation's request id, a workspace, spans still open) go through
MLflow's own export unchanged.

Nothing else is held past its trace: a child ending after its root (a background thread's span) goes
out with the next export, and if roots never end (a halted trace) the oldest held spans go out once
more than ``max_pending_traces`` traces are waiting, so the worst case is MLflow's own behaviour.

This module uses OpenTelemetry's span exporter interface only; what reaches into MLflow (installing the
wrapper, finding it, the trace-info-first export) is in ``bedrock_pipeline.mlflow_internals``, which
falls back to MLflow's span-by-span export on an MLflow version it was not verified against.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.mlflow_internals import span_export
from bedrock_pipeline.mlflow_internals.span_export import export_info_first

# Traces whose root has ended, remembered so their late children are not held (bounded: ids only).
_ENDED_TRACES_REMEMBERED = 10_000


class TraceAtOnceExporter:
    """A SpanExporter wrapper: child spans wait for their trace's root, then all are exported at once;
    inside a hold scope, finished traces also wait for the scope's end (or for a full set)."""

    def __init__(self, inner: Any, max_pending_traces: int = 1_000, max_held_traces: int = 10) -> None:
        self.inner = inner
        self._max_pending = max_pending_traces
        self._max_held = max(1, max_held_traces)
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, list[Any]] = OrderedDict()
        self._ended: OrderedDict[int, None] = OrderedDict()
        self._holds = 0  # open hold scopes, process-wide
        self._held: list[Any] = []  # spans of finished traces waiting for the scope's end
        self._held_traces = 0

    def export(self, spans: Sequence[Any]) -> Any:
        ready: list[Any] = []
        full_set: list[Any] = []
        with self._lock:
            for span in spans:
                trace_id = span.context.trace_id
                if span.parent is None:
                    finished = [*self._pending.pop(trace_id, []), span]
                    if self._holds:
                        self._held += finished
                        self._held_traces += 1
                    else:
                        ready += finished
                    self._ended[trace_id] = None
                    if len(self._ended) > _ENDED_TRACES_REMEMBERED:
                        self._ended.popitem(last=False)
                elif trace_id in self._ended:
                    (self._held if self._holds else ready).append(span)
                else:
                    self._pending.setdefault(trace_id, []).append(span)
            while len(self._pending) > self._max_pending:
                ready += self._pending.popitem(last=False)[1]
            if self._held_traces >= self._max_held:
                full_set = self._take_held()
        if full_set:
            export_info_first(self.inner, full_set)
        if ready:
            return self.inner.export(ready)
        return None

    @contextlib.contextmanager
    def holding_finished_traces(self) -> Iterator[None]:
        """Finished traces wait until the scope ends, then go out together (see the module's doc)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                held = self._take_held()
            if held:
                export_info_first(self.inner, held)

    def pending_spans(self) -> int:
        with self._lock:
            return sum(len(spans) for spans in self._pending.values())

    def held_traces(self) -> int:
        with self._lock:
            return self._held_traces

    def _take_held(self) -> list[Any]:  # under self._lock
        held, self._held, self._held_traces = self._held, [], 0
        return held

    def _release_all(self) -> None:
        with self._lock:
            held = self._take_held()
            pending = [span for spans in self._pending.values() for span in spans]
            self._pending.clear()
        if held:
            export_info_first(self.inner, held)
        if pending:
            self.inner.export(pending)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self._release_all()
        return bool(self.inner.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self._release_all()
        self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:  # everything else is MLflow's exporter's own
        return getattr(self.inner, name)


def export_traces_at_once() -> bool:
    """Put the wrapper in front of MLflow's span exporter (idempotent); False if it could not be (an
    MLflow version the adapter was not verified against, or a changed tracing provider: then MLflow
    exports span by span, as before)."""
    return span_export.install_exporter_wrapper(
        lambda exporter: TraceAtOnceExporter(exporter, max_held_traces=settings.TRACE_EXPORT_MAX_HELD_TRACES),
        TraceAtOnceExporter,
    )


def holding_finished_traces() -> contextlib.AbstractContextManager[None]:
    """The installed wrapper's hold scope (export_traces_at_once), or a no-op scope without it."""
    exporter = span_export.installed_exporter()
    if isinstance(exporter, TraceAtOnceExporter):
        return exporter.holding_finished_traces()
    return contextlib.nullcontext()
