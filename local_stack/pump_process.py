"""The event pump as the local stack runs it: its own process, pumping the running stack's queues.

`make up` starts ``python -m local_stack.pump_process``; the pump itself is local_stack/event_pump.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from bedrock_pipeline import settings
from local_stack.config import LOCAL_BATCH_ROLE_ARN, LocalStackConfig
from local_stack.event_pump import EventPump
from local_stack.pump_routes import default_routes
from local_stack.resources import handler_environment, lookup_resources

logger = logging.getLogger("local_stack.event_pump")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m local_stack.pump_process``: pump the running stack's queues until SIGTERM/Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m local_stack.pump_process", description=main.__doc__)
    parser.add_argument("--ready-file", type=Path, help="touched once the pollers run (for the stack)")
    parser.add_argument("--without-emulator", action="store_true", help="no Bedrock emulator endpoint")
    parser.add_argument("--log-level", default=os.environ.get("LOCAL_PUMP_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--prewarm",
        action="store_true",
        help="import every handler before reporting ready (the first batch pays no import)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = LocalStackConfig()
    resources = lookup_resources(config.moto_url)
    # The handlers run in this process and read their configuration from the environment, as on Lambda.
    os.environ.update(
        handler_environment(
            moto_url=config.moto_url,
            mlflow_url=config.mlflow_url,
            emulator_url=None if args.without_emulator else config.emulator_url,
            resources=resources,
        )
    )
    if not args.without_emulator:  # the emulator runs batch jobs: batch and auto files may use them
        os.environ[settings.ENV_BATCH_ROLE_ARN] = LOCAL_BATCH_ROLE_ARN
    routes = default_routes(resources)
    pump = EventPump(routes, endpoint_url=config.moto_url)
    if args.prewarm:
        logger.info("prewarm: handlers imported in %.1f s", pump.prewarm())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pump.start()
    logger.info(
        "pumping %s",
        ", ".join(
            f"{r.queue_url} -> {r.handler} (batch {r.batch_size}, {r.concurrency} pollers)" for r in routes
        ),
    )
    if args.ready_file:
        args.ready_file.parent.mkdir(parents=True, exist_ok=True)
        args.ready_file.write_text(str(os.getpid()))
    last = pump.counters
    while not stop.wait(30.0):
        if pump.counters != last:  # a heartbeat only when something happened
            last = pump.counters
            logger.info("counters: %s", last)
    pump.stop()
    logger.info("stopped; counters: %s", pump.counters)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
