"""A traced call's spans reach a real MLflow server in one span post, and the trace is whole there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
from mlflow.entities import SpanType
from mlflow.entities.trace_location import MlflowExperimentLocation
from mlflow.tracing.client import TracingClient
from mlflow.tracking import MlflowClient

from bedrock_pipeline.trace_export import TraceAtOnceExporter, export_traces_at_once

pytestmark = pytest.mark.integration


@pytest.fixture
def inline_export(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Tracing set up as the runner sets it up (inline export, the wrapper in front); yields the
    number of spans in each span post the client actually sends."""
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.tracing.reset()  # a provider built now reads the settings above
    posts: list[int] = []
    real_log_spans = TracingClient.log_spans

    def counting_log_spans(self: TracingClient, experiment_id: str, spans: list[Any]) -> Any:
        posts.append(len(spans))
        return real_log_spans(self, experiment_id, spans)

    monkeypatch.setattr(TracingClient, "log_spans", counting_log_spans)
    assert export_traces_at_once() is True
    assert export_traces_at_once() is True  # idempotent: one wrapper, not two
    yield posts
    mlflow.tracing.reset()


def test_a_record_span_and_its_model_span_are_posted_together_and_stored_whole(
    mlflow_server: str, inline_export: list[int]
) -> None:
    from mlflow.tracing import provider

    assert isinstance(provider._get_trace_exporter(), TraceAtOnceExporter)
    assert not isinstance(provider._get_trace_exporter().inner, TraceAtOnceExporter)
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"trace-export-{time.time_ns()}")
    with mlflow.start_span(
        name="record q1",
        span_type=SpanType.CHAIN,
        trace_destination=MlflowExperimentLocation(experiment_id=experiment_id),
    ) as record:
        with mlflow.start_span(name="Converse", span_type=SpanType.CHAT_MODEL) as call:
            call.set_inputs({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
            call.set_outputs({"text": "hello"})
        record.set_outputs({"text": "hello"})
    trace_id = record.trace_id

    assert inline_export == [2]  # one post with both spans, not one post per span
    trace = client.get_trace(trace_id)
    spans = {span.name: span for span in trace.data.spans}
    assert set(spans) == {"record q1", "Converse"}
    assert spans["Converse"].parent_id == spans["record q1"].span_id
    assert spans["Converse"].outputs == {"text": "hello"}
    assert trace.info.state.value == "OK"
