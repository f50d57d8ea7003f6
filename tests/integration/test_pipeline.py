"""Prompt files through the real handlers on the local stack, checked through MLflow's own client.

moto (S3, SQS, DynamoDB) and MLflow on PostgreSQL run as servers on loopback; the Bedrock emulator
answers through boto3; the event pump feeds the handlers Lambda's SQS event shapes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracing.attachments import Attachment
from mlflow.tracing.utils.artifact_utils import get_artifact_uri_for_trace

from local_stack.demo import experiment_names
from tests.images import b64, png
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "batch_prompts" / "demo"

# Published Bedrock on-demand prices (USD per 1M tokens, us-east-1), written here by hand so the
# test does not check the code's price table against itself.
CLAUDE_3_HAIKU_IN, CLAUDE_3_HAIKU_OUT = 0.25, 1.25
NOVA_MICRO_IN, NOVA_MICRO_OUT = 0.035, 0.14


def _runs_of(stack: Stack, job_id: str, role: str) -> list[Any]:
    return stack.mlflow.search_runs(
        [e.experiment_id for e in stack.mlflow.search_experiments()],
        filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = '{role}'",
        max_results=1000,
    )


def test_a_prompt_file_becomes_one_traced_run_per_record_and_model(stack: Stack) -> None:
    """Given the demo questions file (3 job models, 11 good records, 1 broken line, 1 streaming and
    1 tool-use record), when it lands in incoming/, then every (record, model) is one child run with
    the fixed MLflow names, a linked trace carrying token usage, and a results line."""
    job_id = stack.upload(DEMO / "questions.jsonl")
    stack.wait(job_id)

    calls = _runs_of(stack, job_id, "call")
    assert len(calls) == 11 * 3
    (parent,) = _runs_of(stack, job_id, "job")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["records"] == 33 and parent.data.metrics["rejected_lines"] == 1
    experiment = stack.mlflow.get_experiment(parent.info.experiment_id)
    assert experiment.name == "demo/questions"
    assert experiment_names(stack.ledger, stack.mlflow, [job_id]) == [
        "demo/questions"
    ]  # what the demo prints

    for run in calls:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["pipeline.kind"] == "batch"
        assert (
            run.data.tags["pipeline.source"]
            == f"s3://{stack.resources.bucket}/incoming/tests/questions.jsonl"
        )
        assert run.data.tags["pipeline.source_etag"]
        assert set(run.data.params) >= {"model_id", "stream"}
        metrics = run.data.metrics
        assert metrics["total_tokens"] == metrics["input_tokens"] + metrics["output_tokens"]
        assert metrics["input_tokens"] > 0 and metrics["output_tokens"] > 0 and metrics["latency_ms"] >= 0
        assert metrics["cost_usd"] == pytest.approx(metrics["input_cost_usd"] + metrics["output_cost_usd"])

    by_key = {(r.data.tags["pipeline.record_id"], r.data.params["model_id"]): r for r in calls}
    haiku = by_key[("capital-france", "anthropic.claude-3-haiku-20240307-v1:0")]
    m = haiku.data.metrics
    assert m["cost_usd"] == pytest.approx(
        m["input_tokens"] * CLAUDE_3_HAIKU_IN / 1e6 + m["output_tokens"] * CLAUDE_3_HAIKU_OUT / 1e6
    )
    assert haiku.data.params["max_tokens"] == "256" and haiku.data.params["temperature"] == "0.2"
    assert haiku.data.tags["topic"] == "capital"  # the record's own tag, beside the pipeline's
    streamed = [r for r in calls if r.data.params["stream"] == "True"]
    assert {r.data.tags["pipeline.record_id"] for r in streamed} == {"stream-story"}
    # Time to first token: on streamed calls only (a whole answer has no first token).
    assert all(r.data.metrics["time_to_first_token_ms"] > 0 for r in streamed)
    assert not any("time_to_first_token_ms" in r.data.metrics for r in calls if r not in streamed)

    # The trace of a call is linked to its run and carries the model call's token usage.
    trace_id = haiku.data.tags["pipeline.trace_id"]
    trace = stack.mlflow.get_trace(trace_id)
    assert trace.info.request_metadata.get("mlflow.sourceRun") == haiku.info.run_id
    # Stored trace info first, spans after (trace_export.py): tags, state and previews all kept.
    assert trace.info.tags["pipeline.job_id"] == job_id and trace.info.state.value == "OK"
    assert trace.info.request_preview and trace.info.response_preview
    assert trace.info.trace_location.mlflow_experiment.experiment_id == parent.info.experiment_id
    usage = trace.info.token_usage
    assert usage is not None and usage["input_tokens"] == m["input_tokens"]
    assert usage["output_tokens"] == m["output_tokens"]
    # Whole: the record span and, under it, the model call autolog traced (posted together).
    (record_span,) = [span for span in trace.data.spans if span.parent_id is None]
    assert record_span.name == "record capital-france"
    (call_span,) = [span for span in trace.data.spans if span.parent_id == record_span.span_id]
    assert call_span.span_type == "CHAT_MODEL"

    # Results: one line per call in Bedrock's batch output shape; the tool-use record asked for its tool.
    lines = stack.results(job_id)
    assert len(lines) == 33
    assert all({"recordId", "modelInput", "modelOutput", "usage", "mlflow"} <= line.keys() for line in lines)
    tool_line = next(line for line in lines if line["recordId"] == "weather-tool")
    assert tool_line["modelOutput"]["stopReason"] == "tool_use"
    tool_use = next(
        b["toolUse"] for b in tool_line["modelOutput"]["output"]["message"]["content"] if "toolUse" in b
    )
    assert tool_use["name"] == "get_weather" and "city" in tool_use["input"]
    stream_line = next(line for line in lines if line["recordId"] == "stream-story")
    assert stream_line["modelOutput"]["output"]["message"]["content"][0]["text"]

    # The broken line is reported with its line number and reason; it stopped nothing.
    (error,) = stack.results(job_id, "errors.jsonl")
    assert error["lineNumber"] == 7 and "JSON" in error["reason"]


def test_a_bedrock_batch_inference_file_runs_unchanged_and_is_priced_by_hand(stack: Stack) -> None:
    """Given records in Bedrock's batch-inference shape, then each modelInput is sent as is."""
    source = DEMO / "bedrock-batch-format.jsonl"
    job_id = stack.upload(source)
    stack.wait(job_id)
    records = [json.loads(line) for line in source.read_text().splitlines()[1:]]
    lines = stack.results(job_id)
    assert len(lines) == len(records) * 2
    for line in lines:
        original = next(r for r in records if r["recordId"] == line["recordId"])
        assert line["modelInput"] == original["modelInput"]
    micro = next(line for line in lines if line["modelId"] == "amazon.nova-micro-v1:0")
    usage = micro["usage"]
    assert micro["costUsd"] == pytest.approx(
        usage["inputTokens"] * NOVA_MICRO_IN / 1e6 + usage["outputTokens"] * NOVA_MICRO_OUT / 1e6
    )


def test_a_batch_record_with_a_base64_image_reaches_the_model_once_encoded(stack: Stack) -> None:
    """Given a Bedrock batch-format record with a PNG as base64 (as batch files carry media) and a
    broken one, when the file runs, then the good one is answered (the emulator refuses an image whose
    bytes are not a PNG, as Bedrock does), its results line keeps the base64 as written, the trace keeps
    the image (not its bytes inline), and the broken one is a line error."""
    picture = png(16, 16)
    content = [
        {"text": "What colour is this square?"},
        {"image": {"format": "png", "source": {"bytes": b64(picture)}}},
    ]
    model_input = {"messages": [{"role": "user", "content": content}], "inferenceConfig": {"maxTokens": 64}}
    broken = {
        "messages": [
            {"role": "user", "content": [content[0], {"image": {"format": "png", "source": {"bytes": "%%"}}}]}
        ]
    }
    body = "\n".join(
        json.dumps(line)
        for line in (
            {"job": {"models": ["amazon.nova-lite-v1:0"]}},
            {"recordId": "IMG0001", "modelInput": model_input},
            {"recordId": "IMG0002", "modelInput": broken},
        )
    ).encode()
    job_id = stack.upload(key="incoming/tests/images.jsonl", body=body)
    stack.wait(job_id)

    (line,) = stack.results(job_id)
    assert line["recordId"] == "IMG0001" and "modelOutput" in line, line.get("error")
    assert line["modelInput"] == model_input
    (error,) = stack.results(job_id, "errors.jsonl")
    assert error["lineNumber"] == 3
    assert error["reason"] == "message 1 content 2: image bytes are not valid base64"
    nova = stack.emulator.stats()["models"]["amazon.nova-lite-v1:0"]
    assert (nova["ok"], nova["validation"]) == (1, 0)

    trace = stack.mlflow.get_trace(line["mlflow"]["traceId"])
    (record_span,) = [span for span in trace.data.spans if span.parent_id is None]
    (call_span,) = [span for span in trace.data.spans if span.parent_id == record_span.span_id]
    # MLflow (3.17+) stores a Converse image's base64 in span inputs as a trace attachment: the record
    # span links the PNG itself; the model span, given raw bytes, shows the adapter's placeholder.
    ref = record_span.inputs["messages"][0]["content"][1]["image"]["source"]["bytes"]
    attachment = Attachment.parse_ref(ref)
    assert attachment is not None and attachment["content_type"] == "image/png"
    repository = get_artifact_repository(get_artifact_uri_for_trace(trace.info))
    with tempfile.TemporaryDirectory() as folder:
        stored = repository.download_artifacts(f"attachments/{attachment['attachment_id']}", folder)
        assert Path(stored).read_bytes() == picture
    assert (
        call_span.inputs["messages"][0]["content"][1]["image"]["source"]["bytes"] == f"<{len(picture)} bytes>"
    )


def test_a_permanent_model_error_is_a_failure_result_not_a_retry(stack: Stack) -> None:
    """Given a record whose model answers with a permanent error (ModelErrorException), then it ends
    once as a failed run and an error line, and the rest of the job still succeeds. (A model the
    account does not offer never gets this far: ingest reports it as a line error.)"""
    failing = "amazon.nova-micro-v1:0"
    stack.emulator.configure(failing, faults={"ModelErrorException": 1.0})
    body = (
        json.dumps({"id": "good", "prompt": "hello", "model": "amazon.nova-lite-v1:0"})
        + "\n"
        + json.dumps({"id": "bad-model", "prompt": "hello", "model": failing})
        + "\n"
    ).encode()
    job_id = stack.upload(key="incoming/tests/model-error.jsonl", body=body)
    stack.wait(job_id)
    lines = {line["recordId"]: line for line in stack.results(job_id)}
    assert "modelOutput" in lines["good"]
    assert lines["bad-model"]["error"]["errorCode"] == "ModelErrorException"
    failed = [r for r in _runs_of(stack, job_id, "call") if r.info.status == "FAILED"]
    assert [r.data.tags["pipeline.record_id"] for r in failed] == ["bad-model"]
    assert "ModelErrorException" in failed[0].data.tags["pipeline.error"]
    counts = stack.ledger.counts(job_id)
    assert counts is not None and (counts.succeeded, counts.failed) == (1, 1)
    assert stack.emulator.stats()["models"][failing]["calls"] == 1  # not retried


def test_a_file_over_its_budget_is_rejected_before_any_call(stack: Stack) -> None:
    """Given a job budget below the pre-flight estimate, then no model is called and the reason is reported."""
    body = (
        json.dumps({"job": {"models": ["anthropic.claude-3-haiku-20240307-v1:0"], "budget_usd": 0.0000001}})
        + "\n"
        + json.dumps({"id": "a", "prompt": "Write a long essay about queues.", "max_tokens": 4000})
        + "\n"
    ).encode()
    job_id = stack.upload(key="incoming/tests/over-budget.jsonl", body=body)
    stack.wait(job_id)
    (error,) = stack.results(job_id, "errors.jsonl")
    assert "budget" in error["reason"]
    assert stack.emulator.stats()["total_calls"] == 0


def test_a_binary_file_is_rejected_whole_and_status_says_so(
    stack: Stack, moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a binary file, then one rejection (not one error per 'line'), summary.json says `rejected`
    and why, and `status` prints it and exits 1, against the real servers."""
    from pipeline_cli.status import print_status
    from pipeline_cli.target import Target

    job_id = stack.upload(key="incoming/tests/photo.jsonl", body=bytes(range(256)) * 16)
    stack.wait(job_id)

    (error,) = stack.results(job_id, "errors.jsonl")
    assert error["reason"].startswith("file rejected: the file is binary")
    body = stack.s3.get_object(Bucket=stack.resources.bucket, Key=f"results/{job_id}/summary.json")["Body"]
    summary = json.loads(body.read())
    assert summary["status"] == "rejected" and summary["reason"] == error["reason"].removeprefix(
        "file rejected: "
    )
    (parent,) = _runs_of(stack, job_id, "job")
    assert parent.info.status == "FAILED" and parent.data.tags["pipeline.error"] == summary["reason"]

    target = Target(
        name="local",
        bucket=stack.resources.bucket,
        jobs_table=stack.resources.jobs_table,
        mlflow_uri="",
        client_kwargs={"endpoint_url": moto_server},
    )
    assert print_status(target, job_id) == 1
    assert f"job {job_id}: rejected: the file is binary" in capsys.readouterr().out
    assert stack.emulator.stats()["total_calls"] == 0
