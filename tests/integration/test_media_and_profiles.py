"""Attachments, items by reference and application inference profiles through the real handlers on the
local stack (moto S3/SQS/DynamoDB, the Bedrock emulator, MLflow on PostgreSQL), read back through
MLflow's own client and the results files."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from bedrock_pipeline.domain import job_id_for
from tests.images import noise_png, pdf, png
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
# Published Bedrock on-demand prices (USD per 1M tokens, us-east-1), by hand: not the code's table.
CLAUDE_3_HAIKU_IN, CLAUDE_3_HAIKU_OUT = 0.25, 1.25


def _calls(stack: Stack, job_id: str) -> dict[str, Any]:
    runs = stack.mlflow.search_runs(
        [e.experiment_id for e in stack.mlflow.search_experiments()],
        filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
        max_results=100,
    )
    return {f"{r.data.tags['pipeline.record_id']}@{r.data.params['model_id']}": r for r in runs}


def _lines(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_attachments_by_s3_reference_reach_each_model_as_it_takes_them(stack: Stack) -> None:
    """Given a picture and a PDF beside a prompt file and a record attaching both on Nova (which reads
    S3 links) and on Claude (which does not: the emulator refuses an s3Location there, as Bedrock does),
    when the file runs, then both are answered, the results keep the links as written, a missing
    attachment is a line error, and the estimate counted the picture."""
    bucket = stack.resources.bucket
    picture = png(320, 240)
    put = stack.s3.put_object(Bucket=bucket, Key="incoming/tests/media/chart.png", Body=picture)
    stack.s3.put_object(Bucket=bucket, Key="incoming/tests/media/report.pdf", Body=pdf(2))
    attachments = [{"path": "media/chart.png"}, {"s3": f"s3://{bucket}/incoming/tests/media/report.pdf"}]
    body = _lines(
        {"job": {"models": [NOVA, HAIKU]}},
        {"id": "chart", "prompt": "What does the chart show?", "attachments": attachments, "max_tokens": 64},
        {"id": "gone", "prompt": "And this?", "attachments": [{"path": "media/missing.png"}]},
    )
    job_id = stack.upload(key="incoming/tests/attachments.jsonl", body=body)
    stack.wait(job_id)

    lines = {(line["recordId"], line["modelId"]): line for line in stack.results(job_id)}
    assert set(lines) == {("chart", NOVA), ("chart", HAIKU)}
    for line in lines.values():
        assert "modelOutput" in line, line.get("error")
        content = line["modelInput"]["messages"][0]["content"]
        assert content[0] == {
            "image": {
                "format": "png",
                "source": {"s3Location": {"uri": f"s3://{bucket}/incoming/tests/media/chart.png"}},
            }
        }
        assert content[1]["document"]["name"] == "report" and content[2] == {
            "text": "What does the chart show?"
        }
    stats = stack.emulator.stats()["models"]
    assert (stats[NOVA]["ok"], stats[HAIKU]["ok"], stats[HAIKU]["validation"]) == (1, 1, 0)
    (error,) = stack.results(job_id, "errors.jsonl")
    assert error == {
        "lineNumber": 3,
        "reason": f"attachment s3://{bucket}/incoming/tests/media/missing.png: does not exist",
        "excerpt": "",
    }
    # The picture's own S3 event was no job: ingest skips attachments by their extension.
    assert stack.ledger.counts(job_id_for("incoming/tests/media/chart.png", put["ETag"].strip('"'))) is None
    # The trace keeps the link, not the bytes: the record span's inputs are the item's request.
    calls = _calls(stack, job_id)
    trace = stack.mlflow.get_trace(calls[f"chart@{HAIKU}"].data.tags["pipeline.trace_id"])
    (record_span,) = [span for span in trace.data.spans if span.parent_id is None]
    assert "s3Location" in json.dumps(record_span.inputs)


def test_an_item_larger_than_a_queue_message_travels_by_reference(stack: Stack) -> None:
    """Given a batch-format record with a 180 KB picture inline (over 200 KiB as base64 JSON: more than
    one SQS message may carry), when the file runs, then the item's body is stored under its job's
    items/bodies/, the runner reads it from there, and the answer and results are as for any item."""
    picture = noise_png(300, 200, seed=4)
    content = [
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(picture).decode()}}},
        {"text": "?"},
    ]
    model_input = {"messages": [{"role": "user", "content": content}], "inferenceConfig": {"maxTokens": 32}}
    body = _lines(
        {"job": {"models": [HAIKU]}},
        {"recordId": "BIG", "modelInput": model_input},
        {"recordId": "SMALL", "modelInput": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}},
    )
    job_id = stack.upload(key="incoming/tests/big.jsonl", body=body)
    stack.wait(job_id)

    lines = {line["recordId"]: line for line in stack.results(job_id)}
    assert "modelOutput" in lines["BIG"] and "modelOutput" in lines["SMALL"], lines
    assert lines["BIG"]["modelInput"] == model_input
    stored = stack.s3.list_objects_v2(Bucket=stack.resources.bucket, Prefix=f"results/{job_id}/items/bodies/")
    (body_object,) = stored["Contents"]  # only the large item went by reference
    kept = json.loads(
        stack.s3.get_object(Bucket=stack.resources.bucket, Key=body_object["Key"])["Body"].read()
    )
    assert kept["record_id"] == "BIG" and kept["request"] == model_input
    assert stack.emulator.stats()["models"][HAIKU]["ok"] == 2


def test_an_application_profile_is_priced_as_its_model_and_tagged_with_both_ids(stack: Stack) -> None:
    """Given an application inference profile created on the emulator's control plane (Bedrock's
    CreateInferenceProfile) from Claude 3 Haiku, and a record on its ARN, when the file runs, then the
    call goes to the ARN as written, is priced at Haiku's published prices, and its run carries
    pipeline.inference_profile (the ARN) and pipeline.resolved_model_id; a cross-region profile id is
    tagged too."""
    control = boto3.client("bedrock", endpoint_url=stack.emulator.url)
    arn = control.create_inference_profile(
        inferenceProfileName="team-support",
        modelSource={"copyFrom": f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"},
    )["inferenceProfileArn"]
    body = _lines(
        {"id": "billed", "prompt": "Summarise our refund policy.", "model": arn, "max_tokens": 64},
        {"id": "cross", "prompt": "Hello", "model": f"us.{NOVA}", "max_tokens": 16},
    )
    job_id = stack.upload(key="incoming/tests/profiles.jsonl", body=body)
    stack.wait(job_id)

    calls = _calls(stack, job_id)
    run = calls[f"billed@{arn}"]
    assert run.data.params["model_id"] == arn
    assert run.data.tags["pipeline.inference_profile"] == arn
    assert run.data.tags["pipeline.resolved_model_id"] == HAIKU
    m = run.data.metrics
    assert m["cost_usd"] == pytest.approx(
        m["input_tokens"] * CLAUDE_3_HAIKU_IN / 1e6 + m["output_tokens"] * CLAUDE_3_HAIKU_OUT / 1e6
    )
    cross = calls[f"cross@us.{NOVA}"]
    assert cross.data.tags["pipeline.inference_profile"] == f"us.{NOVA}"
    assert "pipeline.resolved_model_id" not in cross.data.tags
    assert stack.emulator.stats()["models"][arn]["ok"] == 1
    (line,) = [line for line in stack.results(job_id) if line["recordId"] == "billed"]
    assert line["modelId"] == arn and line["costUsd"] == pytest.approx(m["cost_usd"])
