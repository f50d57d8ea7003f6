"""Ingest's model check: a record on a model the account does not offer is a line error, never a call.

The use case on in-memory ports with a fake catalogue; the Bedrock adapter on botocore's Stubber, which
checks every request and response against the ``bedrock`` service model."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from bedrock_pipeline.model_catalog import BedrockModelCatalog
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.use_cases.ingest import IngestDeps, ingest_prompt_file
from tests.unit.fakes import (
    MemoryLedger,
    MemoryModelCatalog,
    MemoryQueue,
    MemoryRecorder,
    MemoryResults,
    MemorySource,
)

NOVA = "amazon.nova-lite-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
REGION = "us-east-1"
ACCOUNT = "123456789012"


def _ingest(lines: list[dict[str, Any]], catalog: MemoryModelCatalog | None) -> tuple[Any, Any, Any]:
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
    )
    etag = source.put(
        "prompts", "incoming/f.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()
    )
    report = ingest_prompt_file(deps, "prompts", "incoming/f.jsonl", etag=etag)
    return report, queue, results


def test_given_a_record_on_a_model_the_account_lacks_when_ingested_then_it_is_a_line_error_and_not_enqueued() -> (
    None
):
    catalog = MemoryModelCatalog(offered={NOVA, HAIKU})
    lines = [
        {"prompt": "one"},
        {"prompt": "two", "model": "amazon.nova-typo-v1:0"},
        {"prompt": "three", "model": HAIKU},
    ]

    report, queue, results = _ingest(lines, catalog)

    assert [(item.line_number, item.model_id) for item in queue.received()] == [(1, NOVA), (3, HAIKU)]
    assert report.items == 2 and report.rejected_lines == 1
    [error] = results.errors[report.job_id]
    assert error["lineNumber"] == 2
    assert error["reason"] == "model 'amazon.nova-typo-v1:0': not offered"
    assert catalog.asked == [{NOVA, HAIKU, "amazon.nova-typo-v1:0"}]  # one question per file


def test_given_no_catalogue_when_ingested_then_every_model_is_enqueued_as_before() -> None:
    report, queue, _ = _ingest([{"prompt": "two", "model": "amazon.nova-typo-v1:0"}], None)

    assert [item.model_id for item in queue.received()] == ["amazon.nova-typo-v1:0"]
    assert report.rejected_lines == 0


def test_given_only_unknown_models_when_ingested_then_the_job_ends_at_once_with_its_errors() -> None:
    report, queue, results = _ingest(
        [{"prompt": "x", "model": "nope.model-v1"}], MemoryModelCatalog(offered={NOVA})
    )

    assert queue.received() == []
    assert report.items == 0
    assert results.summaries[report.job_id]["rejectedLines"] == 1


# --- the adapter on Bedrock's control plane ---


def _model(model_id: str, *types: str) -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}",
        "modelId": model_id,
        "inferenceTypesSupported": list(types or ("ON_DEMAND",)),
    }


def _profile(
    profile_id: str, model_id: str, *, kind: str = "SYSTEM_DEFINED", arn: str | None = None
) -> dict[str, Any]:
    return {
        "inferenceProfileName": profile_id,
        "inferenceProfileArn": arn or f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{profile_id}",
        "models": [{"modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}"}],
        "inferenceProfileId": profile_id,
        "status": "ACTIVE",
        "type": kind,
    }


APP_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:application-inference-profile/abc123def456"
SONNET = "anthropic.claude-sonnet-4-20250514-v1:0"


def _stubbed_client() -> tuple[Any, Stubber]:
    client = boto3.client("bedrock", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response(
        "list_foundation_models", {"modelSummaries": [_model(NOVA), _model(SONNET, "INFERENCE_PROFILE")]}
    )
    stubber.add_response(
        "list_inference_profiles",
        {"inferenceProfileSummaries": [_profile(f"us.{NOVA}", NOVA)], "nextToken": "page-2"},
        {"typeEquals": "SYSTEM_DEFINED"},
    )
    stubber.add_response(
        "list_inference_profiles",
        {"inferenceProfileSummaries": [_profile(f"global.{SONNET}", SONNET)]},
        {"typeEquals": "SYSTEM_DEFINED", "nextToken": "page-2"},
    )
    stubber.add_response(
        "list_inference_profiles",
        {"inferenceProfileSummaries": [_profile("team-a", NOVA, kind="APPLICATION", arn=APP_ARN)]},
        {"typeEquals": "APPLICATION"},
    )
    return client, stubber


def test_given_the_accounts_models_and_profiles_when_checked_then_ids_profiles_and_arns_are_known() -> None:
    client, stubber = _stubbed_client()
    catalog = BedrockModelCatalog(lambda: client)

    with stubber:
        unknown = catalog.unknown(
            {
                NOVA,
                f"us.{NOVA}",  # first page
                f"global.{SONNET}",  # second page: the paginator was followed
                APP_ARN,  # an application inference profile
                f"arn:aws:bedrock:{REGION}::foundation-model/{NOVA}",
                f"arn:aws:bedrock:{REGION}:{ACCOUNT}:provisioned-model/xyz",  # not listable: left to the call
                SONNET,  # on-demand not supported: needs its profile
                "amazon.nova-typo-v1:0",
            }
        )
        again = catalog.unknown({"amazon.nova-typo-v1:0"})  # from memory: no further stubbed call
        stubber.assert_no_pending_responses()

    assert set(unknown) == {SONNET, "amazon.nova-typo-v1:0"}
    assert f"global.{SONNET}" in unknown[SONNET]
    assert "not a foundation model or inference profile" in unknown["amazon.nova-typo-v1:0"]
    assert set(again) == {"amazon.nova-typo-v1:0"}


def test_given_an_unreachable_control_plane_when_checked_then_nothing_is_refused_until_the_retry() -> None:
    now = [0.0]
    attempts = []

    def unreachable() -> Any:
        attempts.append(now[0])
        raise EndpointConnectionError(endpoint_url="https://bedrock.us-east-1.amazonaws.com")

    catalog = BedrockModelCatalog(unreachable, retry_after_seconds=300, clock=lambda: now[0])

    first = catalog.unknown({"amazon.nova-typo-v1:0"})
    now[0] = 100.0
    second = catalog.unknown({"amazon.nova-typo-v1:0"})
    now[0] = 301.0
    catalog.unknown({"amazon.nova-typo-v1:0"})

    assert first == {} and second == {}
    assert attempts == [0.0, 301.0]


def test_given_an_endpoint_that_lists_no_models_when_checked_then_the_check_is_off() -> None:
    client = boto3.client("bedrock", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response("list_foundation_models", {"modelSummaries": []})
    with stubber:
        assert BedrockModelCatalog(lambda: client).unknown({NOVA}) == {}
