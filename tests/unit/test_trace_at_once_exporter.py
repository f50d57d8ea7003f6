"""TraceAtOnceExporter: a trace's child spans wait for its root and go out with it, never longer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bedrock_pipeline.trace_export import TraceAtOnceExporter


@dataclass(frozen=True)
class _Context:
    trace_id: int


@dataclass(frozen=True)
class _Span:
    """The two fields of an OTel ReadableSpan the wrapper reads."""

    name: str
    trace_id: int
    root: bool

    @property
    def context(self) -> _Context:
        return _Context(self.trace_id)

    @property
    def parent(self) -> object | None:
        return None if self.root else object()


@dataclass
class _Recorder:
    """Stands in for MLflow's exporter: records what it is handed, in order."""

    batches: list[list[str]] = field(default_factory=list)
    flushed: int = 0
    shut: bool = False

    def export(self, spans: Any) -> None:
        self.batches.append([s.name for s in spans])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut = True


def test_children_wait_for_their_root_and_go_out_with_it_in_one_export() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    exporter.export([_Span("call-1", 1, root=False)])
    exporter.export([_Span("call-2", 2, root=False)])
    assert inner.batches == [] and exporter.pending_spans() == 2
    exporter.export([_Span("record-1", 1, root=True)])
    assert inner.batches == [["call-1", "record-1"]]
    assert exporter.pending_spans() == 1  # trace 2 still open


def test_a_child_ending_after_its_root_is_exported_at_once() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    exporter.export([_Span("record", 7, root=True)])
    exporter.export([_Span("background", 7, root=False)])
    assert inner.batches == [["record"], ["background"]]
    assert exporter.pending_spans() == 0


def test_when_roots_never_end_the_oldest_held_spans_are_released() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner, max_pending_traces=2)
    for trace_id in (1, 2, 3):
        exporter.export([_Span(f"child-{trace_id}", trace_id, root=False)])
    assert inner.batches == [["child-1"]]
    assert exporter.pending_spans() == 2


def test_flush_and_shutdown_release_what_is_held_then_reach_the_inner_exporter() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    exporter.export([_Span("child", 1, root=False)])
    assert exporter.force_flush() is True
    assert inner.batches == [["child"]] and inner.flushed == 1
    exporter.export([_Span("other", 2, root=False)])
    exporter.shutdown()
    assert inner.batches == [["child"], ["other"]] and inner.shut
