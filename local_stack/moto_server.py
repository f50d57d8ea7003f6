"""moto in server mode, with DynamoDB's per-item atomicity.

    python -m local_stack.moto_server -H 127.0.0.1 -p 4566

moto's server is threaded and its DynamoDB backend takes no lock: a conditional write checks its
condition and then writes, so two concurrent writers can both pass the same condition (measured:
4 concurrent deliveries of each of 150 items ended 153 "first", tests/integration/test_ledger.py),
and a transaction deep-copies tables that other threads are changing (HTTP 500 "dictionary changed
size during iteration" under load). DynamoDB applies each write to an item atomically. Here one lock
serializes DynamoDB requests; their cost is moto's Python under the GIL, so the lock costs almost no
throughput. Other services (S3, SQS) are served as moto serves them.

Costs of the twin that AWS does not have are cut (py-spy on moto under make bench's pipeline phase:
14 %, 17 % and 29 % of moto's busy time): SQS receive read every queue attribute, counting every
message in the queue, for each message it returned, to check one setting (the retention period);
SQS send did the same for each message it took, to read one FIFO setting (content-based
deduplication), so enqueueing a job's n items cost O(n^2); and every request wrote an access-log
line. Successful requests are not logged unless LOCAL_MOTO_ACCESS_LOG=1; 4xx and 5xx always are.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.core.utils import unix_time
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import Message, Queue, SQSBackend
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_dynamodb_request(environ: dict[str, Any]) -> bool:
    # Every DynamoDB API call is a POST whose X-Amz-Target names the operation: DynamoDB_20120810.<Op>.
    return str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_")


def serialize_dynamodb(app: WsgiApp) -> WsgiApp:
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_dynamodb_request(environ):
            return app(environ, start_response)
        with lock:
            # The body too is produced under the lock: a WSGI response may be computed lazily.
            return [b"".join(app(environ, start_response))]

    return wrapped


def message_within_retention(backend: SQSBackend, queue_name: str, message: Message) -> bool:
    """moto's retention check, reading the one setting it needs instead of every queue attribute."""
    queue = backend.get_queue(queue_name)
    sent_at = float(message.sent_timestamp or 0) / 1000
    return int(queue.message_retention_period) + sent_at > unix_time()


_ALL_QUEUE_ATTRIBUTES = Queue.__dict__["attributes"]  # moto's property: every attribute, counts included
_sending = threading.local()


class _SendPathAttributes:
    """A queue's attributes as moto's send path reads them (``.get`` of one FIFO setting), answered
    without counting the queue's messages; any other name gets moto's full answer."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def get(self, name: str, default: Any = None) -> Any:
        if name != "ContentBasedDeduplication":
            return _ALL_QUEUE_ATTRIBUTES.fget(self._queue).get(name, default)
        if not self._queue.fifo_queue:
            return default  # moto lists the FIFO settings for FIFO queues only
        return str(self._queue.content_based_deduplication).lower()


def queue_attributes(queue: Queue) -> Any:
    """moto's ``Queue.attributes``, except inside SendMessage (see _SendPathAttributes)."""
    if getattr(_sending, "active", False):
        return _SendPathAttributes(queue)
    return _ALL_QUEUE_ATTRIBUTES.fget(queue)


def send_without_counting(send: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's SQSBackend.send_message or send_message_batch (the batch validates each entry first,
    then calls send_message for it: nested, so the flag is restored, not cleared)."""

    def wrapped(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(_sending, "active", False)
        _sending.active = True
        try:
            return send(self, *args, **kwargs)
        finally:
            _sending.active = outer

    wrapped._without_counting = True  # type: ignore[attr-defined]
    return wrapped


def install_sqs_shortcuts() -> None:
    """Apply the two SQS cuts above to moto's classes (idempotent)."""
    SQSBackend.is_message_valid_based_on_retention_period = message_within_retention  # type: ignore[method-assign]
    for name in ("send_message", "send_message_batch"):
        if not getattr(getattr(SQSBackend, name), "_without_counting", False):
            setattr(SQSBackend, name, send_without_counting(getattr(SQSBackend, name)))
    Queue.attributes = property(queue_attributes)  # type: ignore[assignment,method-assign]


class RequestHandler(MotoRequestHandler):
    log_successes = os.environ.get("LOCAL_MOTO_ACCESS_LOG", "") == "1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.log_successes or not str(code).startswith(("1", "2", "3")):
            super().log_request(code, size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    args = parser.parse_args(argv)
    # As moto's own entry point does: some backends build URLs (SQS queue URLs) from this.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    install_sqs_shortcuts()
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as moto's own entry point: errors keep their detail
    run_simple(
        args.host,
        args.port,
        serialize_dynamodb(app),
        threaded=True,
        request_handler=RequestHandler,
    )


if __name__ == "__main__":
    main()
