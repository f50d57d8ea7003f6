"""The quota phase's runner instances as processes (throughput/quota.py's ``--instances``): on Lambda
every instance has its own process, boto3 clients and so botocore adaptive rate limiter, where the
local event pump runs every poller as a thread of one process."""

from __future__ import annotations

import sys
from typing import Any


class InstancePumps:
    """The work queue's pollers in ``instances`` processes, the other routes in this one. On Lambda every
    instance has its own process and clients; the local pump runs them all as threads of one process,
    sharing one boto3 client (so one botocore adaptive rate limiter) between them."""

    def __init__(self, others: list[Any], work: Any, instances: int) -> None:
        import dataclasses

        from local_stack.event_pump import EventPump

        self._others = EventPump(others)
        per_instance = max(1, work.concurrency // instances)
        self._work = dataclasses.replace(work, concurrency=per_instance)
        self._instances = instances
        self._processes: list[Any] = []

    def start(self) -> None:
        import subprocess

        self._others.start()
        for _ in range(self._instances):
            self._processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "throughput.quota", "pump", "--work-url", self._work.queue_url,
                     "--pollers", str(self._work.concurrency)]
                )
            )  # fmt: skip

    def stop(self, timeout: float) -> None:
        import signal

        for process in self._processes:
            process.send_signal(signal.SIGTERM)
        for process in self._processes:
            process.wait(timeout=timeout)
        self._others.stop(timeout=timeout)


def pump_work(work_url: str, pollers: int) -> None:
    """One "Lambda instance" process: the runner's route with ``pollers`` pollers until SIGTERM."""
    import dataclasses
    import signal
    import threading

    from bedrock_pipeline import function_catalogue as catalogue
    from local_stack.event_pump import EventPump
    from local_stack.pump_routes import QueueRoute

    spec = next(s for s in catalogue.queue_consumers() if s.queue is not None and s.queue.role == "work")
    route = dataclasses.replace(QueueRoute.for_function(spec, work_url), concurrency=pollers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pump = EventPump([route])
    pump.start()
    stop.wait()
    pump.stop(timeout=60)
