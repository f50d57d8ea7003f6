"""The emulator refuses what Bedrock refuses: requests checked against botocore's service model and
Bedrock's documented media rules, and application inference profiles on its control plane. Through
real boto3 clients on loopback (the ``raw`` ones skip botocore's own client-side checks, as other SDKs
and hand-written HTTP do)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from local_stack.bedrock_emulator import EmulatorServer
from tests.images import b64, png

pytestmark = pytest.mark.integration

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
HAIKU_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"


def _client(service: str, url: str, **config: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(seed=3) as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer) -> EmulatorServer:
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def runtime(emulator: EmulatorServer) -> Any:
    return _client("bedrock-runtime", emulator.url)


@pytest.fixture(scope="module")
def raw(emulator: EmulatorServer) -> Any:
    return _client("bedrock-runtime", emulator.url, parameter_validation=False)


@pytest.fixture(scope="module")
def control(emulator: EmulatorServer) -> Any:
    return _client("bedrock", emulator.url)


@pytest.fixture(scope="module")
def raw_control(emulator: EmulatorServer) -> Any:
    return _client("bedrock", emulator.url, parameter_validation=False)


def _user(*content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(content)}


TEXT = {"text": "hi"}
# boto3 takes raw bytes for a blob and base64-encodes it on the wire.
IMAGE = {"image": {"format": "png", "source": {"bytes": png(4, 4)}}}


# --- the service model --------------------------------------------------------------------------------
SHAPE_VIOLATIONS = [
    (
        {"messages": [_user(TEXT)], "inferenceConfig": {"temperature": 1.5}},
        "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature' failed to satisfy "
        "constraint: Member must have value less than or equal to 1",
    ),
    (
        {"messages": [_user({"image": {"format": "bmp", "source": {"bytes": b64(png(4, 4))}}})]},
        "1 validation error detected: Value 'bmp' at 'messages.1.member.content.1.member.image.format' "
        "failed to satisfy constraint: Member must satisfy enum value set: [png, jpeg, gif, webp]",
    ),
    (
        {"messages": [{"role": "user"}]},
        "1 validation error detected: Value null at 'messages.1.member.content' failed to satisfy "
        "constraint: Member must not be null",
    ),
    (
        {"messages": [_user(TEXT)], "toolConfig": {"tools": []}},
        "1 validation error detected: Value '[]' at 'toolConfig.tools' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    ),
    (
        {"messages": [_user(TEXT)], "requestMetadata": {"team": "a" * 300}},
        "Member must have length less than or equal to 256",
    ),
    (
        {"messages": [_user({"toolUse": {"toolUseId": "bad id!", "name": "x", "input": {}}})]},
        "at 'messages.1.member.content.1.member.toolUse.toolUseId' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: [a-zA-Z0-9_.:-]+",
    ),
    (
        {"messages": [_user(TEXT)], "serviceTier": {}},
        "Value null at 'serviceTier.type' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"messages": [_user(TEXT, {"text": "a", "image": {"format": "png", "source": {"bytes": b"x"}}})]},
        "at 'messages.1.member.content.2.member' failed to satisfy constraint: Member must have exactly one "
        "member set (a union)",
    ),
]


@pytest.mark.parametrize(("body", "message"), SHAPE_VIOLATIONS, ids=[m[-40:] for _, m in SHAPE_VIOLATIONS])
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_given_a_request_the_service_model_forbids_then_validation_exception_in_aws_words(
    emu: EmulatorServer, raw: Any, body: dict[str, Any], message: str, operation: str
) -> None:
    with pytest.raises(raw.exceptions.ValidationException) as raised:
        getattr(raw, operation)(modelId=HAIKU, **body)
    assert message in raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert emu.stats()["models"][HAIKU]["validation"] == 1


def test_given_several_violations_then_one_answer_counts_and_lists_them(
    emu: EmulatorServer, raw: Any
) -> None:
    body = {"messages": [_user(TEXT)], "inferenceConfig": {"temperature": 2, "topP": -1, "maxTokens": 0}}
    with pytest.raises(raw.exceptions.ValidationException) as raised:
        raw.converse(modelId=HAIKU, **body)
    message = raised.value.response["Error"]["Message"]
    assert message.startswith("3 validation errors detected: Value ")
    assert message.count("; Value ") == 2


def test_given_every_member_botocore_accepts_then_the_shape_check_passes(
    emu: EmulatorServer, runtime: Any
) -> None:
    """A request using many members, valid by botocore's own client-side validation, is answered."""
    body = {
        "messages": [
            _user({"text": "look"}, IMAGE, {"cachePoint": {"type": "default"}}),
            {"role": "assistant", "content": [{"text": "ok"}]},
            _user(TEXT),
        ],
        "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "requestMetadata": {"team": "search"},
        "additionalModelRequestFields": {"top_k": 5, "anything": [1, {"nested": True}]},
        "performanceConfig": {"latency": "standard"},
    }
    reply = runtime.converse(modelId=HAIKU, **body)
    assert reply["output"]["message"]["content"][0]["text"]


# --- Bedrock's documented media rules -----------------------------------------------------------------
def _s3(kind: str, fmt: str) -> dict[str, Any]:
    block: dict[str, Any] = {"format": fmt, "source": {"s3Location": {"uri": f"s3://my-bucket/a.{fmt}"}}}
    if kind == "document":
        block["name"] = "a"
    return {kind: block}


MEDIA_RULES = [
    (
        {"messages": [_user(_s3("document", "pdf"))]},
        HAIKU,
        "you must also include a ContentBlock with a text field",
    ),
    (
        {"messages": [_user(TEXT), {"role": "assistant", "content": [IMAGE]}]},
        HAIKU,
        "You can only include images and documents if the role is user.",
    ),
    ({"messages": [_user(*([IMAGE] * 21), TEXT)]}, HAIKU, "You can include up to 20 images."),
    (
        {"messages": [_user(TEXT, _s3("image", "png"))]},
        HAIKU,
        "messages.0.content.1.image.source.type: Field required",
    ),
]


@pytest.mark.parametrize(("body", "model", "message"), MEDIA_RULES, ids=[m for _, _, m in MEDIA_RULES])
def test_given_media_bedrock_refuses_then_validation_exception(
    emu: EmulatorServer, runtime: Any, body: dict[str, Any], model: str, message: str
) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match=message.replace(".", r"\.")):
        runtime.converse(modelId=model, **body)


def test_given_s3_links_then_nova_takes_them(emu: EmulatorServer, runtime: Any) -> None:
    body = {"messages": [_user(_s3("image", "png"), _s3("document", "pdf"), _s3("video", "mp4"), TEXT)]}
    assert runtime.converse(modelId=NOVA, **body)["stopReason"]


# --- application inference profiles --------------------------------------------------------------------
def test_given_a_created_application_profile_then_it_is_listed_read_and_answers_as_its_model(
    emu: EmulatorServer, control: Any, runtime: Any
) -> None:
    created = control.create_inference_profile(
        inferenceProfileName="team-search", description="search team", modelSource={"copyFrom": HAIKU_ARN}
    )
    arn = created["inferenceProfileArn"]
    assert created["status"] == "ACTIVE"
    assert arn.startswith("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/")

    profile = control.get_inference_profile(inferenceProfileIdentifier=arn)
    assert (profile["type"], profile["models"]) == ("APPLICATION", [{"modelArn": HAIKU_ARN}])
    assert (
        control.get_inference_profile(inferenceProfileIdentifier=profile["inferenceProfileId"])[
            "inferenceProfileArn"
        ]
        == arn
    )
    (listed,) = control.list_inference_profiles(typeEquals="APPLICATION")["inferenceProfileSummaries"]
    assert listed["inferenceProfileArn"] == arn
    system = control.list_inference_profiles(typeEquals="SYSTEM_DEFINED")["inferenceProfileSummaries"]
    assert arn not in {p["inferenceProfileArn"] for p in system}

    direct = runtime.converse(modelId=HAIKU, messages=[_user(TEXT)], inferenceConfig={"maxTokens": 32})
    through = runtime.converse(modelId=arn, messages=[_user(TEXT)], inferenceConfig={"maxTokens": 32})
    assert through["output"] == direct["output"] and through["usage"] == direct["usage"]
    assert emu.stats()["models"][arn]["ok"] == 1  # counted (and throttled) under the profile


def test_given_a_profile_copying_a_cross_region_profile_then_it_runs_that_model(
    emu: EmulatorServer, control: Any, runtime: Any
) -> None:
    source = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{NOVA}"
    arn = control.create_inference_profile(
        inferenceProfileName="nova-copy", modelSource={"copyFrom": source}
    )["inferenceProfileArn"]
    profile = control.get_inference_profile(inferenceProfileIdentifier=arn)
    assert profile["models"] == [{"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"}]
    assert runtime.converse(modelId=arn, messages=[_user(TEXT)])["stopReason"]


def test_given_bad_profile_requests_then_bedrocks_errors(
    emu: EmulatorServer, control: Any, raw_control: Any
) -> None:
    control.create_inference_profile(inferenceProfileName="taken", modelSource={"copyFrom": HAIKU_ARN})
    with pytest.raises(control.exceptions.ConflictException):
        control.create_inference_profile(inferenceProfileName="taken", modelSource={"copyFrom": HAIKU_ARN})
    with pytest.raises(control.exceptions.ResourceNotFoundException, match="was not found"):
        control.create_inference_profile(
            inferenceProfileName="ghost",
            modelSource={"copyFrom": "arn:aws:bedrock:us-east-1::foundation-model/no.such-v1:0"},
        )
    with pytest.raises(
        raw_control.exceptions.ValidationException, match="at 'inferenceProfileName' failed to satisfy"
    ):
        raw_control.create_inference_profile(
            inferenceProfileName="bad name!!", modelSource={"copyFrom": HAIKU_ARN}
        )
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.get_inference_profile(inferenceProfileIdentifier="zzzzzzzzzzzz")


def test_given_a_reset_then_the_profiles_are_gone(emulator: EmulatorServer, control: Any) -> None:
    emulator.reset()
    arn = control.create_inference_profile(
        inferenceProfileName="short-lived", modelSource={"copyFrom": HAIKU_ARN}
    )["inferenceProfileArn"]
    emulator.reset()
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.get_inference_profile(inferenceProfileIdentifier=arn)


def test_the_demo_profile_has_the_arn_the_demo_file_names_and_its_media_are_real_files(
    emu: EmulatorServer, control: Any
) -> None:
    from bedrock_pipeline.image_size import image_size
    from bedrock_pipeline.media_tokens import document_tokens
    from local_stack import demo_media

    arn = demo_media.create_profile(control, "us-east-1")
    assert demo_media.create_profile(control, "us-east-1") == arn  # again: kept, same ARN
    assert control.get_inference_profile(inferenceProfileIdentifier=arn)["models"] == [
        {"modelArn": HAIKU_ARN}
    ]
    media = demo_media.demo_media()
    assert image_size(media["media/chart.png"]) == (480, 320)
    assert document_tokens("pdf", media["media/report.pdf"]) == 6000  # two pages


@pytest.mark.parametrize(
    ("model", "size", "image_tokens"), [(HAIKU, (1000, 1000), 1334), (NOVA, (800, 400), 800)]
)
def test_an_inline_image_counts_its_familys_tokens_as_the_estimate_does(
    emu: EmulatorServer, runtime: Any, model: str, size: tuple[int, int], image_tokens: int
) -> None:
    from bedrock_pipeline.domain import WorkItem
    from bedrock_pipeline.estimate import estimate_items
    from bedrock_pipeline.pricing import PriceTable

    picture = png(*size)
    text = runtime.converse(modelId=model, messages=[_user({"text": "What is it?"})])["usage"]["inputTokens"]
    with_image = runtime.converse(
        modelId=model,
        messages=[_user({"image": {"format": "png", "source": {"bytes": picture}}}, {"text": "What is it?"})],
    )["usage"]["inputTokens"]
    assert with_image - text == image_tokens
    request = {
        "messages": [
            _user({"image": {"format": "png", "source": {"bytes": b64(picture)}}}, {"text": "What is it?"})
        ]
    }
    item = WorkItem(record_id="r", line_number=1, model_id=model, request=request)
    assert estimate_items([item], PriceTable.load()).input_tokens == with_image
