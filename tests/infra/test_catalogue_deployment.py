"""The deployed functions, queues and event sources are the function catalogue's, value for value."""

from __future__ import annotations

from typing import Any

import pytest

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline.function_catalogue import FunctionSpec
from tests.infra.conftest import Synthesized


def _handler(function: dict[str, Any]) -> str | None:
    """A zip function's Handler, or the command of a container-image function."""
    props = function["Properties"]
    return props.get("Handler") or (props.get("ImageConfig", {}).get("Command") or [None])[0]


def _function(synth: Synthesized, spec: FunctionSpec) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (lid, res)
        for lid, res in synth.resources("pipeline", "AWS::Lambda::Function").items()
        if _handler(res) == spec.handler
    ]
    return found


def _mappings_of(synth: Synthesized, function_id: str) -> list[dict[str, Any]]:
    return [
        mapping["Properties"]
        for mapping in synth.resources("pipeline", "AWS::Lambda::EventSourceMapping").values()
        if mapping["Properties"]["FunctionName"] == {"Ref": function_id}
    ]


@pytest.mark.parametrize("spec", catalogue.FUNCTIONS, ids=lambda spec: spec.name)
def test_given_a_catalogued_function_when_synthesized_then_its_timeout_and_memory_are_the_catalogues(
    synthesized: Synthesized, spec: FunctionSpec
) -> None:
    _, function = _function(synthesized, spec)
    props = function["Properties"]
    assert props["Timeout"] == spec.timeout_seconds
    assert props["MemorySize"] == spec.memory_mib
    assert (props.get("PackageType") == "Image") == (spec.image_dockerfile is not None)
    assert props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == spec.name


@pytest.mark.parametrize("spec", catalogue.FUNCTIONS, ids=lambda spec: spec.name)
def test_given_a_catalogued_function_when_synthesized_then_its_event_source_is_the_catalogues(
    synthesized: Synthesized, spec: FunctionSpec
) -> None:
    """Batch size, maximum concurrency and partial batch responses, as the event pump runs them."""
    function_id, _ = _function(synthesized, spec)
    mappings = _mappings_of(synthesized, function_id)
    if spec.event_source is None:
        assert mappings == []
        return
    (mapping,) = mappings
    assert mapping["BatchSize"] == spec.event_source.batch_size
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == spec.event_source.max_concurrency
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("spec", catalogue.queue_consumers(), ids=lambda spec: spec.name)
def test_given_a_consumed_queue_when_synthesized_then_visibility_and_redrive_follow_its_consumer(
    synthesized: Synthesized, spec: FunctionSpec
) -> None:
    assert spec.queue is not None
    resources = synthesized.json("pipeline")["Resources"]
    function_id, _ = _function(synthesized, spec)
    (mapping,) = _mappings_of(synthesized, function_id)
    queue = resources[mapping["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
    assert queue["VisibilityTimeout"] == spec.visibility_timeout_seconds
    assert queue["RedrivePolicy"]["maxReceiveCount"] == spec.queue.max_receive_count


def test_given_the_catalogue_when_synthesized_then_every_queue_feeds_exactly_its_consumer(
    synthesized: Synthesized,
) -> None:
    mappings = synthesized.resources("pipeline", "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == len(catalogue.queue_consumers())
    queues = {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings.values()}
    assert len(queues) == len(catalogue.ALL_QUEUES)


@pytest.mark.parametrize("spec", catalogue.FUNCTIONS, ids=lambda spec: spec.name)
def test_given_a_catalogued_function_when_synthesized_then_its_async_retries_are_the_catalogues(
    synthesized: Synthesized, spec: FunctionSpec
) -> None:
    """The schedule does not retry the benchmark; Lambda's own async retries must not either."""
    function_id, _ = _function(synthesized, spec)
    configs = [
        config["Properties"]
        for config in synthesized.resources("pipeline", "AWS::Lambda::EventInvokeConfig").values()
        if config["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    if spec.async_retry_attempts is None:
        assert configs == []
    else:
        (config,) = configs
        assert config["MaximumRetryAttempts"] == spec.async_retry_attempts
