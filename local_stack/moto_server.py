"""moto in server mode, with DynamoDB's per-item atomicity.

    python -m local_stack.moto_server -H 127.0.0.1 -p 4566

moto's server is threaded and its DynamoDB backend takes no lock: a conditional write checks its
condition and then writes, so two concurrent writers can both pass the same condition (measured:
4 concurrent deliveries of each of 150 items ended 153 "first", tests/integration/test_ledger.py),
and a transaction deep-copies tables that other threads are changing (HTTP 500 "dictionary changed
size during iteration" under load). DynamoDB applies each write to an item atomically. Here one lock
serializes DynamoDB requests; their cost is moto's Python under the GIL, so the lock costs almost no
throughput. Other services (S3, SQS) are served as moto serves them.

Costs of the twin that AWS does not have are cut (py-spy on moto under make throughput's pipeline phase:
14 %, 17 % and 29 % of moto's busy time): SQS receive read every queue attribute, counting every
message in the queue, for each message it returned, to check one setting (the retention period);
SQS send did the same for each message it took, to read one FIFO setting (content-based
deduplication), so enqueueing a job's n items cost O(n^2); and every request wrote an access-log
line. Successful requests are not logged unless LOCAL_MOTO_ACCESS_LOG=1; 4xx and 5xx always are.

This module keeps the launcher's own part; what reaches into moto (building its app, the request
handler, the SQS patches) is in ``local_stack/moto_internals.py``, which runs moto as it ships on a
moto version it was not verified against.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from local_stack.moto_internals import WsgiApp, install_sqs_shortcuts, serve


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
    serve(args.host, args.port, serialize_dynamodb)


if __name__ == "__main__":
    main()
