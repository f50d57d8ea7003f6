"""Attachments of simple records (S3 objects as image/document blocks), image-token estimates and
application inference profiles: the parser, ingest's checks and the runner's call, on in-memory ports."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from bedrock_pipeline.domain import JobRef
from bedrock_pipeline.estimate import estimate_items
from bedrock_pipeline.image_size import image_size
from bedrock_pipeline.media_tokens import MediaFacts, document_tokens, image_tokens
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import read_prompt_file
from bedrock_pipeline.run_names import TAG_INFERENCE_PROFILE, TAG_RESOLVED_MODEL_ID
from bedrock_pipeline.tracking import call_tags
from bedrock_pipeline.use_cases.ingest import IngestDeps, ingest_prompt_file
from bedrock_pipeline.use_cases.run_item import CallDeps, RunnerDeps, run_item
from tests.images import png
from tests.unit.fakes import (
    MemoryAnswers,
    MemoryLedger,
    MemoryMediaStore,
    MemoryModelCatalog,
    MemoryQueue,
    MemoryRecorder,
    MemoryResults,
    MemorySource,
    ScriptedGateway,
)

BUCKET = "prompts"
KEY = "incoming/team/cases.jsonl"
SOURCE = f"s3://{BUCKET}/{KEY}"
NOVA = "amazon.nova-lite-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123def456"
PDF = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type /Page>>\n%%EOF"


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 8


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little")
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBPVP8L"
        + struct.pack("<I", len(payload))
        + payload
    )


def _parse(*records: dict[str, Any], source_uri: str | None = SOURCE) -> Any:
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    return read_prompt_file(body, default_models=[NOVA], source_uri=source_uri)


# --- parser ------------------------------------------------------------------------------------------
def test_given_attachments_when_parsed_then_each_is_an_s3_block_of_its_format_before_the_prompt() -> None:
    parsed = _parse(
        {
            "prompt": "Compare them.",
            "attachments": [
                {"path": "img/cat.JPG"},
                {"s3": "s3://other-bucket/docs/Q3 report (final).pdf"},
                {"path": "clips/demo.3gp"},
            ],
        }
    )
    assert not parsed.errors
    (item,) = parsed.items
    content = item.request["messages"][0]["content"]
    assert content == [
        {
            "image": {
                "format": "jpeg",
                "source": {"s3Location": {"uri": f"s3://{BUCKET}/incoming/team/img/cat.JPG"}},
            }
        },
        {
            "document": {
                "format": "pdf",
                "name": "Q3 report (final)",
                "source": {"s3Location": {"uri": "s3://other-bucket/docs/Q3 report (final).pdf"}},
            }
        },
        {
            "video": {
                "format": "three_gp",
                "source": {"s3Location": {"uri": f"s3://{BUCKET}/incoming/team/clips/demo.3gp"}},
            }
        },
        {"text": "Compare them."},
    ]


@pytest.mark.parametrize(
    ("attachments", "reason"),
    [
        ([{"path": "../secret.png"}], "attachments.0: \"path\" '../secret.png' must be relative"),
        ([{"path": "/abs.png"}], "must be relative"),
        ([{"s3": "s3://my-bucket/a.bmp"}], "cannot tell the format from the extension 'bmp'"),
        ([{"s3": "https://example.com/a.png"}], "is not an S3 object URI"),
        ([{"s3": "s3://my-bucket/a.png", "path": "a.png"}], 'an attachment is {"s3"'),
        ([{"path": f"p{i}.png"} for i in range(21)], "21 images in one request; Bedrock's limit is 20"),
        ([{"path": f"d{i}.txt"} for i in range(6)], "6 documents in one request; Bedrock's limit is 5"),
    ],
)
def test_given_a_bad_attachment_when_parsed_then_its_line_is_an_error(
    attachments: list[dict[str, str]], reason: str
) -> None:
    parsed = _parse({"prompt": "x", "attachments": attachments}, {"prompt": "fine"})
    assert len(parsed.items) == 1 and len(parsed.errors) == 1
    assert parsed.errors[0].line_number == 1 and reason in parsed.errors[0].reason, parsed.errors[0].reason


def test_given_no_source_location_then_a_path_attachment_says_to_use_s3() -> None:
    parsed = _parse({"prompt": "x", "attachments": [{"path": "a.png"}]}, {"prompt": "y"}, source_uri=None)
    assert 'needs the prompt file\'s S3 location: use "s3" here' in parsed.errors[0].reason


def test_given_a_batch_record_over_the_image_count_then_it_is_a_line_error() -> None:
    image = {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://my-bucket/a.png"}}}}
    model_input = {"messages": [{"role": "user", "content": [image] * 21 + [{"text": "x"}]}]}
    parsed = _parse({"modelInput": model_input}, {"prompt": "y"})
    assert "modelInput: 21 images in one request; Bedrock's limit is 20" in parsed.errors[0].reason


def test_given_an_inline_image_over_the_old_item_limit_then_it_parses_and_is_not_refused() -> None:
    picture = png(8, 8) + b"\x00" * 300_000  # a PNG header and 300 KB: over the 200 KiB queue message
    content = [
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(picture).decode()}}},
        {"text": "?"},
    ]
    parsed = _parse({"modelInput": {"messages": [{"role": "user", "content": content}]}})
    assert not parsed.errors and len(parsed.items) == 1


# --- image sizes and tokens ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(31, 17), (31, 17)),
        (_gif(640, 480), (640, 480)),
        (_jpeg(1024, 768), (1024, 768)),
        (_webp_lossless(300, 200), (300, 200)),
        (b"not an image", None),
        (b"\x89PNG\r\n\x1a\n", None),
    ],
)
def test_image_sizes_come_from_the_file_header(data: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(data) == size


def test_image_tokens_follow_each_familys_published_rule() -> None:
    # Anthropic: width*height/750 (1000x1000 -> 1334), scaled to a 1568 px edge and ~1,600 tokens.
    assert image_tokens(HAIKU, (1000, 1000)) == 1334
    assert image_tokens(HAIKU, (200, 200)) == 54
    assert image_tokens(HAIKU, (4000, 3000)) == 1600
    # Nova: the guide's own example (800x400 -> 900x450 -> ~800), and the table's other rows.
    assert image_tokens("us.amazon.nova-lite-v1:0", (800, 400)) == 800
    assert image_tokens(NOVA, (2000, 1000)) == 2400
    assert image_tokens(NOVA, (1400, 900)) == 1800
    assert image_tokens(NOVA, (1200, 1200)) == 2600
    assert image_tokens(NOVA, None) == 2600  # unknown size: the largest
    assert document_tokens("pdf", PDF) == 6000  # two pages at 3,000
    assert document_tokens("txt", b"hello world") == 2


def test_the_estimate_counts_inline_and_s3_images() -> None:
    content = [
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(png(1000, 1000)).decode()}}},
        {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://my-bucket/a.png"}}}},
        {"text": "x"},
    ]
    parsed = _parse({"modelInput": {"messages": [{"role": "user", "content": content}]}, "recordId": "a"})
    (item,) = parsed.items
    claude = item.model_copy(update={"model_id": HAIKU})
    prices = PriceTable.load()
    text_only = estimate_items(
        [claude.model_copy(update={"request": {"messages": [{"role": "user", "content": [{"text": "x"}]}]}})],
        prices,
    )
    facts = {"s3://my-bucket/a.png": MediaFacts(100, 750, 1000)}  # 750x1000 -> 1000 tokens
    with_media = estimate_items([claude], prices, media=facts)
    assert with_media.input_tokens - text_only.input_tokens == 1334 + 1000


# --- ingest ------------------------------------------------------------------------------------------
def _ingest(
    records: list[dict[str, Any]], store: MemoryMediaStore, catalog: MemoryModelCatalog | None = None
) -> tuple[Any, MemoryQueue, MemoryResults, IngestDeps]:
    source, queue, results = MemorySource(), MemoryQueue(), MemoryResults()
    deps = IngestDeps(
        source=source,
        queue=queue,
        ledger=MemoryLedger(),
        recorder=MemoryRecorder(),
        results=results,
        prices=PriceTable.load(),
        default_models=(NOVA,),
        models=catalog,
        media=store,
    )
    etag = source.put(BUCKET, KEY, "".join(json.dumps(r) + "\n" for r in records).encode())
    return ingest_prompt_file(deps, BUCKET, KEY, etag=etag), queue, results, deps


def _folder(name: str) -> str:
    return f"s3://{BUCKET}/incoming/team/{name}"


def test_given_attachments_that_break_bedrocks_limits_when_ingested_then_their_lines_are_errors() -> None:
    store = MemoryMediaStore(
        {
            _folder("ok.png"): png(64, 64),
            _folder("big.png"): png(8, 8) + b"\x00" * int(3.75 * 1024 * 1024),
            _folder("wide.png"): png(8001, 1),
            _folder("fake.png"): b"GIF89a" + b"\x00" * 10,
            _folder("notes.pdf"): PDF,
        }
    )
    records = [
        {"id": "ok", "prompt": "a", "attachments": [{"path": "ok.png"}, {"path": "notes.pdf"}]},
        {"id": "gone", "prompt": "b", "attachments": [{"path": "missing.png"}]},
        {"id": "big", "prompt": "c", "attachments": [{"path": "big.png"}]},
        {"id": "wide", "prompt": "d", "attachments": [{"path": "wide.png"}]},
        {"id": "fake", "prompt": "e", "attachments": [{"path": "fake.png"}]},
    ]
    report, queue, results, _ = _ingest(records, store)
    assert [item.record_id for item in queue.received()] == ["ok"]
    errors = {e["lineNumber"]: e["reason"] for e in results.errors[report.job_id]}
    assert errors == {
        2: f"attachment {_folder('missing.png')}: does not exist",
        3: f"attachment {_folder('big.png')}: is {len(store.objects[_folder('big.png')]):,} bytes; "
        f"Bedrock's limit for a image is {int(3.75 * 1024 * 1024):,}",
        4: f"attachment {_folder('wide.png')}: is 8001x1 px; Bedrock's limit is 8000 px a side",
        5: f"attachment {_folder('fake.png')}: is not a png image",
    }
    # Without a budget nothing needs a document's tokens: headed, not read; images by their header.
    assert store.whole_reads == []


def test_given_a_budget_only_the_images_break_when_ingested_then_the_job_is_rejected() -> None:
    store = MemoryMediaStore({_folder(f"p{i}.png"): png(1000, 1000) for i in range(20)})
    header = {"job": {"models": [HAIKU], "budget_usd": 0.005}}
    record = {
        "prompt": "describe",
        "max_tokens": 10,
        "attachments": [{"path": f"p{i}.png"} for i in range(20)],
    }
    report, queue, _, _ = _ingest([header, record], store)
    # 20 images at 1,334 tokens on Haiku ($0.25/M in) = $0.00667: over $0.005; the text alone is not.
    assert report.rejected_reason is not None and "exceeds the job budget" in report.rejected_reason
    assert queue.received() == []


def test_given_a_budget_then_a_documents_pages_count_toward_it() -> None:
    store = MemoryMediaStore({_folder("notes.pdf"): PDF})
    header = {"job": {"models": [HAIKU], "budget_usd": 0.0015}}
    record = {"prompt": "summarise", "max_tokens": 10, "attachments": [{"path": "notes.pdf"}]}
    report, queue, _, _ = _ingest([header, record], store)
    assert queue.received() == []
    # Two pages at 3,000 tokens on Haiku ($0.25/M in) = $0.0015, plus the prompt: over $0.0015.
    assert report.rejected_reason is not None and "exceeds the job budget" in report.rejected_reason
    assert store.whole_reads == [_folder("notes.pdf")]


# --- the call ------------------------------------------------------------------------------------------
def _run(
    records: list[dict[str, Any]], store: MemoryMediaStore, catalog: MemoryModelCatalog | None = None
) -> tuple[ScriptedGateway, MemoryRecorder, MemoryResults, Any]:
    report, queue, results, deps = _ingest(records, store, catalog)
    gateway = ScriptedGateway()
    calls = CallDeps(gateway, deps.recorder, PriceTable.load(), MemoryAnswers(), media=store)  # type: ignore[arg-type]
    runner = RunnerDeps(call=calls, ledger=deps.ledger, results=results)
    for item in queue.received():
        run_item(runner, item)
    return gateway, deps.recorder, results, report  # type: ignore[return-value]


def test_given_an_s3_image_then_nova_gets_the_link_and_claude_gets_the_bytes() -> None:
    picture = png(32, 32)
    store = MemoryMediaStore({_folder("cat.png"): picture})
    records = [
        {"id": "n", "prompt": "?", "model": NOVA, "attachments": [{"path": "cat.png"}]},
        {"id": "c", "prompt": "?", "model": HAIKU, "attachments": [{"path": "cat.png"}]},
    ]
    gateway, _, results, report = _run(records, store)
    sources = {
        model: request["messages"][0]["content"][0]["image"]["source"]
        for model, request in zip(gateway.calls, gateway.requests, strict=True)
    }
    assert sources[NOVA] == {"s3Location": {"uri": _folder("cat.png")}}
    assert sources[HAIKU] == {"bytes": base64.b64encode(picture).decode()}
    # The results line keeps the request as written (the link), not the bytes.
    lines = {line.record_id: line for line in results.item_results(report.job_id)}
    assert lines["c"].to_dict()["modelInput"]["messages"][0]["content"][0]["image"]["source"] == {
        "s3Location": {"uri": _folder("cat.png")}
    }


def test_given_an_attachment_deleted_after_ingest_then_the_item_fails_once_with_why() -> None:
    store = MemoryMediaStore({_folder("cat.png"): png(4, 4)})
    report, queue, results, deps = _ingest(
        [{"id": "c", "prompt": "?", "model": HAIKU, "attachments": [{"path": "cat.png"}]}], store
    )
    del store.objects[_folder("cat.png")]
    gateway = ScriptedGateway()
    calls = CallDeps(gateway, deps.recorder, PriceTable.load(), MemoryAnswers(), media=store)  # type: ignore[arg-type]
    (item,) = queue.received()
    outcome = run_item(RunnerDeps(call=calls, ledger=deps.ledger, results=results), item)
    assert not outcome.succeeded and gateway.calls == []
    (line,) = results.item_results(report.job_id)
    assert line.to_dict()["error"] == {
        "errorCode": "AttachmentNotFound",
        "errorMessage": f"attachment {_folder('cat.png')} does not exist",
    }


# --- application inference profiles ----------------------------------------------------------------------
def test_given_an_application_profile_then_it_is_priced_as_its_model_and_tagged_with_both_ids() -> None:
    catalog = MemoryModelCatalog(offered={NOVA, HAIKU, PROFILE}, profiles={PROFILE: HAIKU})
    gateway, recorder, results, report = _run(
        [{"id": "p", "prompt": "hello", "model": PROFILE}], MemoryMediaStore(), catalog
    )
    assert gateway.calls == [PROFILE]  # called as written
    (run,) = recorder.call_runs()
    # ScriptedGateway answers 10 in, 5 out: Haiku's published $0.25/$1.25 per 1M tokens.
    assert run.metrics["cost_usd"] == pytest.approx((10 * 0.25 + 5 * 1.25) / 1e6)
    (line,) = results.item_results(report.job_id)
    assert line.model_id == PROFILE


def test_call_tags_name_the_profile_used_and_the_model_it_resolved_to() -> None:
    job = JobRef(
        job_id="j", experiment_id="1", parent_run_id="p", source_bucket="b", source_key="k", source_etag="e"
    )
    (item,) = _parse({"prompt": "x", "model": PROFILE}).items
    tags = call_tags(item.model_copy(update={"resolved_model_id": HAIKU}).bound_to(job))
    assert (tags[TAG_INFERENCE_PROFILE], tags[TAG_RESOLVED_MODEL_ID]) == (PROFILE, HAIKU)
    (cross,) = _parse({"prompt": "x", "model": f"us.{HAIKU}"}).items
    assert call_tags(cross.bound_to(job))[TAG_INFERENCE_PROFILE] == f"us.{HAIKU}"
    (plain,) = _parse({"prompt": "x", "model": HAIKU}).items
    assert TAG_INFERENCE_PROFILE not in call_tags(plain.bound_to(job))


def test_the_catalog_resolves_an_application_profile_once_through_get_inference_profile() -> None:
    """On botocore's Stubber, which checks the request and response against the bedrock service model."""
    import boto3
    from botocore.stub import Stubber

    from bedrock_pipeline.model_catalog import BedrockModelCatalog

    client = boto3.client(
        "bedrock", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    other = PROFILE.replace("abc123def456", "000000000000")
    stubber.add_client_error(
        "get_inference_profile",
        "ResourceNotFoundException",
        expected_params={"inferenceProfileIdentifier": other},
    )
    stubber.add_response(
        "get_inference_profile",
        {
            "inferenceProfileName": "team",
            "inferenceProfileArn": PROFILE,
            "inferenceProfileId": "abc123def456",
            "models": [
                {"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"},
                {"modelArn": f"arn:aws:bedrock:us-west-2::foundation-model/{HAIKU}"},
            ],
            "status": "ACTIVE",
            "type": "APPLICATION",
        },
        expected_params={"inferenceProfileIdentifier": PROFILE},
    )
    catalog = BedrockModelCatalog(lambda: client)
    with stubber:
        assert catalog.resolve_profile(HAIKU) is None  # not a profile: nothing asked
        assert catalog.resolve_profile(other) is None  # unreadable: unpriced, asked again next time
        assert catalog.resolve_profile(PROFILE) == HAIKU  # one model in every region it routes to
        assert catalog.resolve_profile(PROFILE) == HAIKU  # from memory
        stubber.assert_no_pending_responses()


def test_the_cli_estimate_takes_path_attachments_and_counts_an_unread_image_at_its_familys_largest(
    tmp_path: Any,
) -> None:
    import subprocess
    import sys

    path = tmp_path / "pictures.jsonl"
    path.write_text(json.dumps({"prompt": "x", "model": HAIKU, "attachments": [{"path": "a.png"}]}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline_cli", "estimate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith(HAIKU)]
    input_tokens = int(row.split()[2].replace(",", ""))
    assert 1600 < input_tokens < 1610  # the image's 1,600 and the prompt's few


def test_given_an_attachment_uploaded_beside_prompt_files_then_ingest_skips_it() -> None:
    source, queue, results, ledger = MemorySource(), MemoryQueue(), MemoryResults(), MemoryLedger()
    deps = IngestDeps(
        source=source,
        queue=queue,
        ledger=ledger,
        recorder=MemoryRecorder(),
        results=results,
        prices=PriceTable.load(),
    )
    for key, body in (
        ("incoming/team/media/chart.PNG", png(4, 4)),
        ("incoming/team/notes.txt", b"just notes"),
    ):
        etag = source.put(BUCKET, key, body)
        report = ingest_prompt_file(deps, BUCKET, key, etag=etag)
        assert report.skipped is not None and "an attachment (by its extension)" in report.skipped
        assert report.job_id == ""
    assert queue.received() == [] and results.errors == {}
