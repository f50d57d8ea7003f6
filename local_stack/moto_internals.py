"""Every use of moto's internals in the twin, in one place, behind a version guard.

moto is the twin's AWS (S3, SQS, DynamoDB); ``local_stack/moto_server.py`` launches it. What that
launcher needs beyond moto's public entry point (``moto.server.main``, the ``moto_server`` command) is
here, verified against the moto versions in ``VERIFIED_MOTO_VERSIONS``. The installed version is read
from package metadata once per process; on any other version each entry takes its fallback, which is
moto as it ships, and one warning says so. An upgrade fails
``test_the_installed_moto_is_one_the_twin_was_verified_against``: re-check each entry, then add it.

What is reached, why (py-spy on moto under make throughput's pipeline phase), and the fallback:

1. ``serve``: moto's WSGI app (``moto.server.DomainDispatcherApplication(create_backend_app)``, with
   ``debug`` on, as moto's own ``main`` builds it) served by werkzeug with a subclass of
   ``moto.server.MotoRequestHandler``. Why: the launcher wraps the app (it serializes DynamoDB requests,
   moto_server.py says why), and the handler logs only 4xx/5xx unless ``LOCAL_MOTO_ACCESS_LOG=1``
   (17 % of moto's busy time went to one access-log line per request). Fallback: ``moto.server.main``,
   moto as ``moto_server`` runs it: every request logged, DynamoDB requests not serialized (concurrent
   conditional writes to one item can then both pass; tests/integration/test_ledger.py would show it).
2. ``install_sqs_shortcuts``, retention: ``SQSBackend.is_message_valid_based_on_retention_period``
   replaced by ``message_within_retention`` (reads ``backend.get_queue``, ``Queue.
   message_retention_period``, ``Message.sent_timestamp``, ``moto.core.utils.unix_time``). Why: moto
   read every queue attribute, counting every message in the queue, for each message it returned
   (14 %). Fallback: moto's own check.
3. ``install_sqs_shortcuts``, send: ``SQSBackend.send_message`` and ``send_message_batch`` wrapped to flag
   the send path, and the ``Queue.attributes`` property replaced so that inside it ``.get(
   "ContentBasedDeduplication")`` reads ``Queue.fifo_queue`` / ``content_based_deduplication`` instead
   of every attribute (moto's original property is kept from ``Queue.__dict__``). Why: enqueueing a
   job's n items cost O(n^2) (29 %; 1,500 sends into one queue: 44.2 s of moto CPU, 1.0 s after).
   Fallback: moto's own send path.

Process-wide state: the patches change moto's classes for the process (moto's server runs alone in
its process); ``_sending`` is a thread-local flag of the send path; the guard's decision is cached.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# Re-check every entry of the docstring before adding a version.
VERIFIED_MOTO_VERSIONS = frozenset({"5.2.5"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def installed_moto_version() -> str | None:
    """The installed moto's version, from package metadata (moto itself is not imported)."""
    from importlib import metadata

    try:
        return metadata.version("moto")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def private_paths_enabled() -> bool:
    """Whether the twin may use moto's internals: decided once per process."""
    version = installed_moto_version()
    if version in VERIFIED_MOTO_VERSIONS:
        return True
    logger.warning(
        "moto %s is not a version local_stack.moto_internals was verified against (%s): moto runs as it "
        "ships (moto.server.main: DynamoDB requests not serialized, SQS unpatched, every request logged)",
        version,
        ", ".join(sorted(VERIFIED_MOTO_VERSIONS)),
    )
    return False


def serve(host: str, port: int, wrap: Callable[[WsgiApp], WsgiApp]) -> None:
    """Serve moto's app wrapped by ``wrap``, threaded (entry 1); moto's own server if unverified."""
    if not private_paths_enabled():
        from moto.server import main as moto_main

        moto_main(["-H", host, "-p", str(port)])
        return
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    class RequestHandler(MotoRequestHandler):  # type: ignore[misc]
        log_successes = os.environ.get("LOCAL_MOTO_ACCESS_LOG", "") == "1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if self.log_successes or not str(code).startswith(("1", "2", "3")):
                super().log_request(code, size)

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto's own entry point: errors keep their detail
    run_simple(host, port, wrap(app), threaded=True, request_handler=RequestHandler)


def message_within_retention(backend: Any, queue_name: str, message: Any) -> bool:
    """moto's retention check, reading the one setting it needs instead of every queue attribute."""
    from moto.core.utils import unix_time

    queue = backend.get_queue(queue_name)
    sent_at = float(message.sent_timestamp or 0) / 1000
    return int(queue.message_retention_period) + sent_at > unix_time()


_sending = threading.local()


class _SendPathAttributes:
    """A queue's attributes as moto's send path reads them (``.get`` of one FIFO setting), answered
    without counting the queue's messages; any other name gets moto's full answer."""

    def __init__(self, queue: Any, all_attributes: property) -> None:
        self._queue = queue
        self._all = all_attributes

    def get(self, name: str, default: Any = None) -> Any:
        if name != "ContentBasedDeduplication":
            return self._all.fget(self._queue).get(name, default)  # type: ignore[misc]
        if not self._queue.fifo_queue:
            return default  # moto lists the FIFO settings for FIFO queues only
        return str(self._queue.content_based_deduplication).lower()


def _queue_attributes(all_attributes: property) -> property:
    """moto's ``Queue.attributes``, except inside SendMessage (see _SendPathAttributes)."""

    def attributes(queue: Any) -> Any:
        if getattr(_sending, "active", False):
            return _SendPathAttributes(queue, all_attributes)
        return all_attributes.fget(queue)  # type: ignore[misc]

    prop = property(attributes)
    prop.fget._motos_own = all_attributes  # type: ignore[union-attr]
    return prop


def send_without_counting(send: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's SQSBackend.send_message or send_message_batch (the batch validates each entry first,
    then calls send_message for it: nested, so the flag is restored, not cleared)."""

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(_sending, "active", False)
        _sending.active = True
        try:
            return send(self, *args, **kwargs)
        finally:
            _sending.active = outer

    wrapped._without_counting = True  # type: ignore[attr-defined]
    return wrapped


def install_sqs_shortcuts() -> bool:
    """Apply entries 2 and 3 to moto's classes (idempotent); False (moto untouched) if unverified."""
    if not private_paths_enabled():
        return False
    from moto.sqs.models import Queue, SQSBackend

    SQSBackend.is_message_valid_based_on_retention_period = message_within_retention  # type: ignore[method-assign]
    for name in ("send_message", "send_message_batch"):
        if not getattr(getattr(SQSBackend, name), "_without_counting", False):
            setattr(SQSBackend, name, send_without_counting(getattr(SQSBackend, name)))
    current = Queue.__dict__["attributes"]
    motos_own = getattr(current.fget, "_motos_own", current)  # installed already: wrap moto's, not ours
    Queue.attributes = _queue_attributes(motos_own)  # type: ignore[assignment,method-assign]
    return True
