"""A traced call's spans reach a real MLflow server in one span post, and the trace is whole there."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
from mlflow.entities import SpanType
from mlflow.entities.trace_location import MlflowExperimentLocation
from mlflow.tracing.client import TracingClient
from mlflow.tracking import MlflowClient

from bedrock_pipeline.trace_export import TraceAtOnceExporter, export_traces_at_once, holding_finished_traces

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


def test_a_batch_of_traces_held_together_is_posted_once_and_each_trace_is_stored_whole(
    held_set_experiment: tuple[MlflowClient, str], inline_export: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, experiment_id = held_set_experiment
    uploads = _count_artifact_uploads(monkeypatch)
    calls: list[str] = []
    for name in ("start_trace", "log_spans"):
        monkeypatch.setattr(TracingClient, name, _recording(getattr(TracingClient, name), name, calls))
    trace_ids = _three_traces(experiment_id, inline_export)
    assert inline_export == [6]  # then one post with the six spans of three traces
    # Trace info first: StartTrace inserts each trace, and the span post completes them (one INSERT
    # each instead of the server's merge path; trace_export.py).
    assert calls == ["start_trace"] * 3 + ["log_spans"]
    assert uploads == []  # the spans are stored in the database, not as artifacts
    _assert_all_whole(client, trace_ids)


def test_when_the_span_post_of_a_held_batch_fails_each_trace_keeps_its_spans_as_an_artifact(
    held_set_experiment: tuple[MlflowClient, str], inline_export: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, experiment_id = held_set_experiment
    uploads = _count_artifact_uploads(monkeypatch)

    refused_posts: list[int] = []

    def refused(self: TracingClient, experiment_id: str, spans: list[Any]) -> Any:
        refused_posts.append(len(spans))
        raise ConnectionError("span post refused")  # the server is reachable: StartTrace went through

    monkeypatch.setattr(TracingClient, "log_spans", refused)
    trace_ids = _three_traces(experiment_id, refused_posts)
    assert refused_posts == [6] and len(uploads) == 3
    _assert_all_whole(client, trace_ids)


def test_the_start_traces_of_a_held_set_run_concurrently_not_one_after_another(
    held_set_experiment: tuple[MlflowClient, str], inline_export: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow or unreachable server must cost a batch one request's wait, not one per trace: the three
    StartTrace calls meet at a barrier, which only opens if all three are in flight at once."""
    client, experiment_id = held_set_experiment
    barrier = threading.Barrier(3, timeout=30)
    real_start_trace = TracingClient.start_trace

    def meeting_start_trace(self: TracingClient, trace_info: Any) -> Any:
        barrier.wait()  # BrokenBarrierError (and an incomplete trace) if the calls were serial
        return real_start_trace(self, trace_info)

    monkeypatch.setattr(TracingClient, "start_trace", meeting_start_trace)
    trace_ids = _three_traces(experiment_id, inline_export)
    assert inline_export == [6] and not barrier.broken
    _assert_all_whole(client, trace_ids)


def test_if_mlflows_internals_change_a_held_set_goes_out_in_mlflows_order_whole(
    held_set_experiment: tuple[MlflowClient, str], inline_export: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter

    client, experiment_id = held_set_experiment
    real_collect = MlflowV3SpanExporter._collect_mlflow_spans_for_export
    calls = {"collect": 0}

    def changed_once(self: MlflowV3SpanExporter, spans: Any) -> Any:
        calls["collect"] += 1
        if calls["collect"] == 1:  # the runner's path asks first: it finds a changed MLflow
            raise AttributeError("no longer there")
        return real_collect(self, spans)

    monkeypatch.setattr(MlflowV3SpanExporter, "_collect_mlflow_spans_for_export", changed_once)
    trace_ids = _three_traces(experiment_id, inline_export)
    assert calls["collect"] >= 2  # then MLflow's own export ran
    _assert_all_whole(client, trace_ids)


@pytest.fixture
def held_set_experiment(mlflow_server: str) -> tuple[MlflowClient, str]:
    """A client of the test server and a fresh experiment for one test's held set of traces."""
    client = MlflowClient(mlflow_server)
    return client, client.create_experiment(f"trace-batch-{time.time_ns()}")


TAGS = {"pipeline.job_id": "job-1", "pipeline.record_id": "q"}


def _three_traces(experiment_id: str, posts_so_far: list[int]) -> list[str]:
    from bedrock_pipeline.trace_export import holding_finished_traces

    trace_ids = []
    with holding_finished_traces():
        for index in range(3):
            with mlflow.start_span(
                name=f"record q{index}",
                span_type=SpanType.CHAIN,
                trace_destination=MlflowExperimentLocation(experiment_id=experiment_id),
            ) as record:
                mlflow.update_current_trace(tags={**TAGS, "index": str(index)})
                record.set_inputs({"question": f"q{index}"})
                with mlflow.start_span(name="Converse", span_type=SpanType.CHAT_MODEL) as call:
                    call.set_outputs({"text": f"answer {index}"})
                record.set_outputs({"text": f"answer {index}"})
            trace_ids.append(record.trace_id)
        assert posts_so_far == []  # nothing leaves before the batch ends
    return trace_ids


def _assert_all_whole(client: MlflowClient, trace_ids: list[str]) -> None:
    for index, trace_id in enumerate(trace_ids):
        _assert_whole(client.get_trace(trace_id), index)


def _assert_whole(trace: Any, index: int) -> None:
    spans = {span.name: span for span in trace.data.spans}
    assert set(spans) == {f"record q{index}", "Converse"}
    assert spans["Converse"].parent_id == spans[f"record q{index}"].span_id
    assert spans["Converse"].outputs == {"text": f"answer {index}"}
    assert trace.info.state.value == "OK"
    assert trace.info.tags["pipeline.job_id"] == "job-1" and trace.info.tags["index"] == str(index)
    assert f"answer {index}" in (trace.info.response_preview or "")
    assert trace.info.execution_duration is not None


def _recording(method: Any, name: str, calls: list[str]) -> Any:
    def recorded(self: TracingClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return method(self, *args, **kwargs)

    return recorded


def _count_artifact_uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    uploads: list[str] = []
    real_upload = TracingClient._upload_trace_data

    def counting_upload(self: TracingClient, trace_info: Any, trace_data: Any) -> Any:
        uploads.append(trace_info.trace_id)
        return real_upload(self, trace_info, trace_data)

    monkeypatch.setattr(TracingClient, "_upload_trace_data", counting_upload)
    return uploads


def test_on_an_unverified_mlflow_nothing_is_installed_and_mlflow_exports_each_span_whole(
    held_set_experiment: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracing import provider

    from bedrock_pipeline import mlflow_internals

    client, experiment_id = held_set_experiment
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    monkeypatch.setattr(mlflow_internals, "installed_mlflow_version", lambda: "0.0.1")
    mlflow_internals.private_paths_enabled.cache_clear()
    mlflow.tracing.reset()
    posts: list[int] = []
    real_log_spans = TracingClient.log_spans

    def counting_log_spans(self: TracingClient, experiment_id: str, spans: list[Any]) -> Any:
        posts.append(len(spans))
        return real_log_spans(self, experiment_id, spans)

    monkeypatch.setattr(TracingClient, "log_spans", counting_log_spans)
    try:
        assert export_traces_at_once() is False
        provider._get_tracer(__name__)
        assert not isinstance(provider._get_trace_exporter(), TraceAtOnceExporter)
        with holding_finished_traces():  # a no-op scope: each span is posted as it ends, as MLflow does
            with mlflow.start_span(
                name="record q0",
                span_type=SpanType.CHAIN,
                trace_destination=MlflowExperimentLocation(experiment_id=experiment_id),
            ) as record:
                mlflow.update_current_trace(tags={**TAGS, "index": "0"})
                with mlflow.start_span(name="Converse", span_type=SpanType.CHAT_MODEL) as call:
                    call.set_outputs({"text": "answer 0"})
                record.set_outputs({"text": "answer 0"})
            assert posts == [1, 1]
        _assert_whole(client.get_trace(record.trace_id), 0)
    finally:
        mlflow_internals.private_paths_enabled.cache_clear()
        mlflow.tracing.reset()
