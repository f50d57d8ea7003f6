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
    """Stands in for MLflow's exporter: records what it is handed, in order. It says its server has no
    span storage, so held traces go through its own export too (the real order: integration tests)."""

    batches: list[list[str]] = field(default_factory=list)
    _store_supports_log_spans: bool = False
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


def test_inside_a_hold_finished_traces_wait_for_its_end_and_go_out_in_one_export() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    with exporter.holding_finished_traces():
        for trace_id in (1, 2, 3):
            exporter.export([_Span(f"call-{trace_id}", trace_id, root=False)])
            exporter.export([_Span(f"record-{trace_id}", trace_id, root=True)])
        exporter.export([_Span("call-4", 4, root=False)])  # trace 4 still open at the scope's end
        assert inner.batches == [] and exporter.held_traces() == 3
    assert inner.batches == [["call-1", "record-1", "call-2", "record-2", "call-3", "record-3"]]
    assert exporter.held_traces() == 0 and exporter.pending_spans() == 1
    exporter.export([_Span("record-4", 4, root=True)])  # outside a hold: out when its root ends
    assert inner.batches[-1] == ["call-4", "record-4"]


def test_a_full_set_of_held_traces_goes_out_without_waiting_for_the_scope() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner, max_held_traces=2)
    with exporter.holding_finished_traces():
        for trace_id in (1, 2, 3):
            exporter.export([_Span(f"record-{trace_id}", trace_id, root=True)])
        assert inner.batches == [["record-1", "record-2"]]
    assert inner.batches == [["record-1", "record-2"], ["record-3"]]


def test_overlapping_holds_keep_holding_until_the_last_ends_and_each_exit_exports() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    first = exporter.holding_finished_traces()
    second = exporter.holding_finished_traces()
    first.__enter__()
    second.__enter__()
    exporter.export([_Span("record-1", 1, root=True)])
    first.__exit__(None, None, None)  # one invocation ends: what finished so far goes out
    assert inner.batches == [["record-1"]]
    exporter.export([_Span("record-2", 2, root=True)])
    assert inner.batches == [["record-1"]]  # the other invocation's scope still holds
    second.__exit__(None, None, None)
    assert inner.batches == [["record-1"], ["record-2"]]


def test_a_scope_left_by_an_exception_still_exports_what_it_held() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    try:
        with exporter.holding_finished_traces():
            exporter.export([_Span("record", 1, root=True)])
            raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    assert inner.batches == [["record"]]


def test_flush_releases_held_traces_too() -> None:
    inner = _Recorder()
    exporter = TraceAtOnceExporter(inner)
    with exporter.holding_finished_traces():
        exporter.export([_Span("record", 1, root=True)])
        exporter.force_flush()
        assert inner.batches == [["record"]] and exporter.held_traces() == 0


def test_a_failing_export_at_the_end_of_a_hold_does_not_fail_the_batch() -> None:
    class Broken(_Recorder):
        def export(self, spans: Any) -> None:
            raise ConnectionError("tracking server unreachable")

    exporter = TraceAtOnceExporter(Broken())
    with exporter.holding_finished_traces():
        exporter.export([_Span("record", 1, root=True)])
    assert exporter.held_traces() == 0
