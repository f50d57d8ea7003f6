"""One bounded concurrent fan-out for a job's calls: the evaluator's rows, the benchmark's prompts,
and (through `item_pool`) the runner's batch.

A batch ends with its slowest call, so every call of it runs at once up to the bound (threads: boto3
and MlflowClient are thread-safe and the work is I/O).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bedrock_pipeline import settings

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def item_pool(max_workers: int | None = None) -> ThreadPoolExecutor:
    """The threads one invocation runs its calls on. One pool per invocation, as each Lambda instance
    has its own: pollers sharing a process (the local event pump) then get as many calls in flight as
    that many Lambda instances would, not one pool's worth between them. By default as many as the
    deployment's RUNNER_ITEM_CONCURRENCY (its Bedrock quota share; validated at cold start)."""
    if max_workers is None:
        max_workers = int(
            os.environ.get(settings.ENV_RUNNER_ITEM_CONCURRENCY) or settings.RUNNER_ITEM_CONCURRENCY
        )
    return ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="call")


def fan_out(
    items: Sequence[_In], work: Callable[[_In], _Out], *, max_workers: int = settings.RUNNER_ITEM_CONCURRENCY
) -> list[_Out]:
    """``work`` on every item, at most ``max_workers`` at once; results in the items' order."""
    if not items:
        return []
    with ThreadPoolExecutor(
        max_workers=max(1, min(max_workers, len(items))), thread_name_prefix="call"
    ) as pool:
        return list(pool.map(work, items))
