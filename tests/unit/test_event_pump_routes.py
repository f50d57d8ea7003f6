"""The function catalogue is sound, and the event pump's routes are its queue consumers, value for value."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline.function_catalogue import EventSourceSpec
from local_stack.event_pump import QueueRoute, default_routes
from local_stack.resources import LocalResources, QueueInfo


def _resources() -> LocalResources:
    def queue(role: str) -> QueueInfo:
        return QueueInfo(
            name=role,
            url=f"http://sqs.local/000000000000/{role}",
            arn=f"arn:aws:sqs:us-east-1:000000000000:{role}",
            dlq_url=f"http://sqs.local/000000000000/{role}-dlq",
            dlq_arn=f"arn:aws:sqs:us-east-1:000000000000:{role}-dlq",
            visibility_timeout_seconds=30,
            max_receive_count=5,
        )

    return LocalResources(
        bucket="b",
        ingest=queue("ingest"),
        work=queue("work"),
        evaluation=queue("evaluation"),
        idempotency_table="i",
        jobs_table="j",
        batch_events_queue_url="http://sqs.local/000000000000/batch-events",
    )


def _url(resources: LocalResources, role: str) -> str:
    """Where the local stack keeps a role's queue (the batch-events queue comes with its rule)."""
    if role == catalogue.BATCH_EVENTS_QUEUE.role:
        return resources.batch_events_queue_url
    return resources.queues[role].url


def test_given_the_default_routes_when_compared_then_each_is_its_queues_consumer_as_catalogued() -> None:
    """Given the local stack's queues, when the pump's default routes are built,
    then each queue is pumped into the catalogued handler with its batch size, concurrency and timeout."""
    resources = _resources()
    routes = {route.queue_url: route for route in default_routes(resources)}

    expected = {_url(resources, f.queue.role): f for f in catalogue.queue_consumers() if f.queue}
    assert resources.batch_events_queue_url in routes  # the collector is pumped like the others
    assert set(routes) == set(expected)
    for url, spec in expected.items():
        route = routes[url]
        assert spec.event_source is not None
        assert route.handler == spec.handler
        assert route.function_name == spec.name
        assert route.batch_size == spec.event_source.batch_size
        assert route.concurrency == spec.event_source.max_concurrency
        assert route.function_timeout_seconds == spec.timeout_seconds
        assert route.memory_limit_in_mb == spec.memory_mib


def test_given_the_catalogue_when_read_then_each_queue_has_one_consumer_and_names_are_unique() -> None:
    queues = catalogue.ALL_QUEUES
    assert [catalogue.consumer_of(queue).queue for queue in queues] == list(queues)
    assert len({f.name for f in catalogue.FUNCTIONS}) == len(catalogue.FUNCTIONS)
    assert len({f.handler for f in catalogue.FUNCTIONS}) == len(catalogue.FUNCTIONS)


@pytest.mark.parametrize(("batch_size", "max_concurrency"), [(0, 2), (11, 2), (1, 1)])
def test_given_limits_aws_rejects_when_an_event_source_is_declared_then_it_fails_at_once(
    batch_size: int, max_concurrency: int
) -> None:
    with pytest.raises(ValueError):
        EventSourceSpec(catalogue.WORK_QUEUE, batch_size=batch_size, max_concurrency=max_concurrency)


def test_given_a_handler_override_when_routes_are_built_then_only_that_queues_handler_changes() -> None:
    resources = _resources()
    routes = {route.queue_url: route for route in default_routes(resources, handler_paths={"work": "x.y"})}
    assert routes[resources.work.url].handler == "x.y"
    assert routes[resources.work.url].batch_size == catalogue.RUNNER.event_source.batch_size  # type: ignore[union-attr]
    assert routes[resources.ingest.url].handler == catalogue.INGEST.handler


def test_given_a_function_no_queue_feeds_when_a_route_is_asked_for_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match="not fed by a queue"):
        QueueRoute.for_function(catalogue.BENCHMARK, "http://sqs.local/q")


def test_given_resources_without_the_batch_events_queue_when_routes_are_built_then_the_collector_is_left_out() -> (
    None
):
    resources = replace(_resources(), batch_events_queue_url="")
    routes = default_routes(resources)
    assert catalogue.COLLECTOR.name not in {route.function_name for route in routes}
    assert len(routes) == len(catalogue.queue_consumers()) - 1
