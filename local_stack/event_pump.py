"""Lambda's SQS event source, offline: poll queues, invoke handlers in-process, delete what succeeded.

Semantics follow the SQS event source mapping with ``ReportBatchItemFailures`` on:

- long-poll ``ReceiveMessage`` (up to ``batch_size``), build the exact Lambda SQS event
  (``Records`` with messageId, receiptHandle, body, attributes, messageAttributes in Lambda's
  camelCase shape, md5OfBody, eventSource ``aws:sqs``, eventSourceARN, awsRegion);
- handler returns nothing or no failures: every message of the batch is deleted;
- ``{"batchItemFailures": [{"itemIdentifier": id}, ...]}``: all others are deleted, the listed ones
  stay and reappear after the visibility timeout;
- a response Lambda cannot parse (not JSON-serializable, not an object, an empty, missing or unknown
  itemIdentifier): the whole batch counts as failed, nothing is deleted;
- the handler raises, cannot be imported, or runs past its function timeout: nothing is deleted.

Moving a message to its DLQ after ``maxReceiveCount`` receives is left to SQS itself: moto applies
the queue's RedrivePolicy in server mode (verified by tests/integration/test_event_pump.py).
The routes (which handler, batch size, pollers, timeout) come from the function catalogue
(local_stack/pump_routes.py); the Lambda side of the contract (event, context, response) is
imitated in local_stack/lambda_sqs.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import boto3

from local_stack.config import REGION
from local_stack.lambda_sqs import (
    Handler,
    InvalidBatchResponse,
    LambdaContext,
    failed_message_ids,
    import_handler,
    lambda_message_attribute,
    lambda_sqs_event,
    lambda_sqs_record,
)
from local_stack.pump_routes import SQS_MAX_BATCH, QueueRoute, default_routes
from local_stack.resources import DUMMY_CREDENTIALS

# The pump's public names, wherever they are defined (tests, bench and the CLI import them from here).
__all__ = [
    "SQS_MAX_BATCH",
    "EventPump",
    "Handler",
    "InvalidBatchResponse",
    "LambdaContext",
    "PumpCounters",
    "QueueRoute",
    "default_routes",
    "failed_message_ids",
    "import_handler",
    "lambda_message_attribute",
    "lambda_sqs_event",
    "lambda_sqs_record",
    "queue_backlog",
]

logger = logging.getLogger("local_stack.event_pump")


@dataclass
class PumpCounters:
    invocations: int = 0
    deleted: int = 0
    failed_items: int = 0  # messages left on the queue after an invocation (partial or whole failure)
    handler_errors: int = 0  # invocations that raised, timed out or answered unparseably
    import_errors: int = 0


def queue_backlog(sqs: Any, queue_urls: Sequence[str]) -> int:
    """Messages visible, in flight (received, not deleted) or delayed, summed over the queues."""
    total = 0
    for url in queue_urls:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        total += sum(int(value) for value in attributes.values())
    return total


@dataclass
class _RouteState:
    route: QueueRoute
    counters: PumpCounters = field(default_factory=PumpCounters)
    handler: Handler | None = None
    queue_arn: str | None = None


class EventPump:
    """Pollers (threads) feeding SQS batches to in-process handlers, one or more per route."""

    def __init__(
        self,
        routes: Sequence[QueueRoute],
        *,
        region: str = REGION,
        endpoint_url: str | None = None,
        account_id: str = "123456789012",
    ) -> None:
        self._states = [_RouteState(route) for route in routes]
        self._region = region
        self._endpoint_url = endpoint_url
        self._account_id = account_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0

    # --- lifecycle ---

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        sqs = self._client()
        for state in self._states:
            if state.queue_arn is None:
                state.queue_arn = str(
                    sqs.get_queue_attributes(QueueUrl=state.route.queue_url, AttributeNames=["QueueArn"])[
                        "Attributes"
                    ]["QueueArn"]
                )
        self._threads = [
            threading.Thread(
                target=self._poll,
                args=(state,),
                name=f"pump-{state.route.resolved_function_name}-{index}",
                daemon=True,
            )
            for state in self._states
            for index in range(state.route.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def prewarm(self) -> float:
        """Import every route's handler now, as Lambda's init phase does before the first event;
        returns the seconds it took. A handler that fails to import is left to its first batch, which
        counts the import error as before."""
        started = time.monotonic()
        for state in self._states:
            if not callable(state.route.handler) and state.handler is None:
                try:
                    state.handler = import_handler(state.route.handler)
                except Exception:
                    logger.warning(
                        "prewarm: cannot import %s (its first batch will retry)", state.route.handler
                    )
        return time.monotonic() - started

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling; a batch being handled finishes first (as on Lambda, it is not cut)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def __enter__(self) -> EventPump:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self, timeout: float = 60.0) -> None:
        """Run until every routed queue is empty and no invocation is in flight.

        Counts visible, in-flight (not visible) and delayed messages, so a failed message waiting
        out its visibility timeout keeps the drain going until it succeeds or reaches its DLQ.
        Starts the pollers if needed (and stops them again afterwards). Raises TimeoutError.
        """
        started_here = not self.running
        if started_here:
            self.start()
        sqs = self._client()
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        try:
            while True:
                backlog = self._backlog(sqs)
                if backlog == 0 and self.in_flight == 0:
                    quiet_checks += 1
                    if quiet_checks >= 2:  # twice in a row: a handler may just have enqueued more
                        return
                else:
                    quiet_checks = 0
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"event pump not drained after {timeout} s: {backlog} message(s) on routed queues, "
                        f"{self.in_flight} invocation(s) in flight"
                    )
                time.sleep(0.1)
        finally:
            if started_here:
                self.stop()

    # --- observation ---

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def counters(self) -> PumpCounters:
        """Totals over every route (a snapshot)."""
        total = PumpCounters()
        with self._lock:
            for state in self._states:
                for name in vars(total):
                    setattr(total, name, getattr(total, name) + getattr(state.counters, name))
        return total

    def counters_for(self, queue_url: str) -> PumpCounters:
        with self._lock:
            for state in self._states:
                if state.route.queue_url == queue_url:
                    return replace(state.counters)
        raise KeyError(queue_url)

    # --- internals ---

    def _client(self) -> Any:
        if self._endpoint_url:
            return boto3.client(
                "sqs", endpoint_url=self._endpoint_url, region_name=self._region, **DUMMY_CREDENTIALS
            )
        return boto3.client("sqs", region_name=self._region)  # AWS_ENDPOINT_URL from the environment

    def _backlog(self, sqs: Any) -> int:
        return queue_backlog(sqs, [state.route.queue_url for state in self._states])

    def _count(self, state: _RouteState, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(state.counters, name, getattr(state.counters, name) + value)

    def _poll(self, state: _RouteState) -> None:
        sqs = self._client()
        route = state.route
        while not self._stop.is_set():
            try:
                response = sqs.receive_message(
                    QueueUrl=route.queue_url,
                    MaxNumberOfMessages=route.batch_size,
                    WaitTimeSeconds=route.wait_time_seconds,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("receive from %s failed; retrying", route.queue_url)
                self._stop.wait(1.0)
                continue
            messages = response.get("Messages", [])
            if not messages:
                continue
            with self._lock:
                self._in_flight += 1
            try:
                self._invoke(state, sqs, messages)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _resolve_handler(self, state: _RouteState) -> Handler | None:
        if state.handler is not None:
            return state.handler
        if callable(state.route.handler):
            state.handler = state.route.handler
            return state.handler
        try:
            state.handler = import_handler(state.route.handler)
        except Exception:
            # As Lambda's Runtime.ImportModuleError: the batch fails and is retried, the pump lives on.
            logger.exception("cannot import handler %s", state.route.handler)
            self._count(state, import_errors=1)
            return None
        return state.handler

    def _invoke(self, state: _RouteState, sqs: Any, messages: list[dict[str, Any]]) -> None:
        route = state.route
        assert state.queue_arn is not None
        handler = self._resolve_handler(state)
        if handler is None:
            self._count(state, failed_items=len(messages))
            return
        event = lambda_sqs_event(messages, state.queue_arn, self._region)
        function_name = route.resolved_function_name
        context = LambdaContext(
            function_name=function_name,
            invoked_function_arn=f"arn:aws:lambda:{self._region}:{self._account_id}:function:{function_name}",
            memory_limit_in_mb=route.memory_limit_in_mb,
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=route.function_timeout_seconds,
        )
        self._count(state, invocations=1)
        started = time.monotonic()
        try:
            response = handler(event, context)
        except Exception:
            logger.exception("%s raised; the batch of %d stays on the queue", function_name, len(messages))
            self._count(state, handler_errors=1, failed_items=len(messages))
            return
        elapsed = time.monotonic() - started
        if elapsed > route.function_timeout_seconds:
            # Lambda would have stopped the function here; the batch is not deleted.
            logger.error("%s: task timed out after %.2f s", function_name, elapsed)
            self._count(state, handler_errors=1, failed_items=len(messages))
            return
        try:
            failed = failed_message_ids(response, {message["MessageId"] for message in messages})
        except InvalidBatchResponse as error:
            logger.error("%s: %s; the whole batch is treated as failed", function_name, error)
            self._count(state, handler_errors=1, failed_items=len(messages))
            return
        to_delete = [message for message in messages if message["MessageId"] not in failed]
        deleted = self._delete(sqs, route.queue_url, to_delete)
        self._count(state, deleted=deleted, failed_items=len(failed))

    def _delete(self, sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> int:
        if not messages:
            return 0
        response = sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)
            ],
        )
        for failure in response.get("Failed", []):
            logger.error("delete failed on %s: %s", queue_url, failure)
        return len(response.get("Successful", []))
