"""What the event pump pumps: one route per SQS event source mapping, read from the function catalogue.

The routes of the local stack are the catalogue's queue consumers (handler, batch size, maximum
concurrency as pollers, timeout, memory), the same table the CDK stack deploys from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline.function_catalogue import FunctionSpec
from local_stack.lambda_sqs import Handler
from local_stack.resources import LocalResources

SQS_MAX_BATCH = catalogue.SQS_MAX_BATCH_SIZE


@dataclass
class QueueRoute:
    """One SQS event source mapping: a queue, the function it feeds and how."""

    queue_url: str
    handler: Handler | str  # a callable or a dotted path such as "handlers.ingest.handler"
    batch_size: int = 10
    wait_time_seconds: int = 1
    function_timeout_seconds: float = 60.0
    function_name: str | None = None
    memory_limit_in_mb: int = 1024
    concurrency: int = 1  # pollers (and so concurrent invocations) for this queue

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= SQS_MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{SQS_MAX_BATCH}, got {self.batch_size}")
        if not 0 <= self.wait_time_seconds <= 20:
            raise ValueError("wait_time_seconds must be 0..20 (the SQS long-poll limit)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")

    @property
    def resolved_function_name(self) -> str:
        if self.function_name:
            return self.function_name
        if isinstance(self.handler, str):
            return self.handler.rsplit(".", 1)[0].replace(".", "-")
        return getattr(self.handler, "__name__", "handler")

    @classmethod
    def for_function(
        cls,
        spec: FunctionSpec,
        queue_url: str,
        *,
        wait_time_seconds: int = 1,
        handler: Handler | str | None = None,
    ) -> QueueRoute:
        """The route of a catalogued queue consumer, as Lambda's event source mapping runs it."""
        if spec.event_source is None:
            raise ValueError(f"{spec.name} is not fed by a queue")
        return cls(
            queue_url,
            handler or spec.handler,
            batch_size=spec.event_source.batch_size,
            wait_time_seconds=wait_time_seconds,
            function_timeout_seconds=spec.timeout_seconds,
            function_name=spec.name,
            memory_limit_in_mb=spec.memory_mib,
            concurrency=spec.event_source.max_concurrency,
        )


def default_routes(
    resources: LocalResources, *, wait_time_seconds: int = 1, handler_paths: Mapping[str, str] | None = None
) -> list[QueueRoute]:
    """The deployed pipeline's event source mappings, pointed at the local queues.

    ``handler_paths``: a handler per queue role ("ingest", "work", "evaluation") instead of the catalogue's.
    """
    paths = handler_paths or {}
    routes = []
    for spec in catalogue.queue_consumers():
        assert spec.queue is not None
        url = _queue_url(resources, spec.queue.role)
        if not url:  # resources made without the batch-events queue: nothing to pump for the collector
            continue
        routes.append(
            QueueRoute.for_function(
                spec, url, wait_time_seconds=wait_time_seconds, handler=paths.get(spec.queue.role)
            )
        )
    return routes


def _queue_url(resources: LocalResources, role: str) -> str:
    """The local queue of a role. The batch-events queue is not one of ``resources.queues``: the local
    stack creates it with the EventBridge rule that targets it (resources.ensure_batch_events_rule)."""
    if role == catalogue.BATCH_EVENTS_QUEUE.role:
        return resources.batch_events_queue_url
    return resources.queues[role].url
