"""One bounded concurrent fan-out for a job's calls: the runner's batch, the evaluator's rows, the benchmark's prompts.

A batch ends with its slowest call, so every call of it runs at once up to the bound (threads: boto3
and MlflowClient are thread-safe and the work is I/O).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bedrock_pipeline import settings

_In = TypeVar("_In")
_Out = TypeVar("_Out")


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


@functools.cache
def item_executor() -> ThreadPoolExecutor:
    """The runner's pool, kept for the life of the process: Powertools' async batch processor hands each
    record to it (one invocation after another, or several at once under the local event pump)."""
    return ThreadPoolExecutor(max_workers=settings.RUNNER_ITEM_CONCURRENCY, thread_name_prefix="item")
