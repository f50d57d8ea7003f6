"""Model calls paced by a `CallPacer`: each call waits for its slot in the model's shared schedule, a
throttle cuts the model's rate and the call waits for a new slot, all within a bounded hold; past it
the item goes back to the queue (`ThrottledItem`) without spending a receive.

Why not botocore's adaptive retry mode (what `BEDROCK_PACING=off` keeps): it paces each client on its
own, cutting its rate on every throttle and recovering slowly, so ten runners with ten threads each
neither share what one learns nor hold the quota together (issue 19: 1.1 items/s at 30 % throttling).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.domain import ModelResponse
from bedrock_pipeline.ports import BedrockCallError, CallPacer, ModelGateway, ThrottledItem

# Bedrock's code when a request exceeds the account's quotas (HTTP 429; API Reference, Converse and
# ConverseStreamOutput, "ThrottlingException").
THROTTLING = "ThrottlingException"
RETRY_AFTER = "retry_after_seconds"  # BedrockCallError.extra key: the call gave up its hold
# Bedrock counts quotas per minute (quotas-runtime.html): a full window frees within 60 s.
THROTTLED_COMEBACK_SECONDS = (10.0, 60.0)


@dataclass(frozen=True)
class Pacing:
    pacer: CallPacer
    hold_seconds: float = settings.BEDROCK_PACING_MAX_HOLD_SECONDS
    retries_in_place: int = settings.PACING_MAX_RETRIES_IN_PLACE
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def requeue_delay(self, backlog: float) -> float:
        """When a requeued item should come back: about when the schedule has room for it again
        (the backlog less half a hold), jittered so items requeued together do not return together."""
        jittered = max(0.0, backlog - self.hold_seconds / 2) * self.rng.uniform(0.8, 1.2)
        return min(float(settings.SQS_MAX_DELAY_SECONDS), max(1.0, jittered))

    def check_room(self, model_id: str) -> None:
        """Before an item starts: raise `ThrottledItem` if its model is booked beyond the hold."""
        backlog = self.pacer.backlog(model_id)
        if backlog > self.hold_seconds:
            raise ThrottledItem(
                f"{model_id} is booked {backlog:.0f} s ahead", retry_after_seconds=self.requeue_delay(backlog)
            )


class PacedGateway:
    """The `ModelGateway` port, paced: wraps the Bedrock adapter (whose client then makes one attempt)."""

    def __init__(self, inner: ModelGateway, pacing: Pacing) -> None:
        self._inner = inner
        self.pacing = pacing

    def invoke(self, model_id: str, request: dict[str, Any], *, stream: bool) -> ModelResponse:
        pacing = self.pacing
        held = 0.0
        failures = 0
        while True:
            backlog = pacing.pacer.backlog(model_id)
            if held + backlog > pacing.hold_seconds or failures > pacing.retries_in_place:
                # Only throttles lead here (other errors are raised below): the item is requeued. Throttled
                # again and again, the model's minute is full: it frees within the minute, at random.
                delay = pacing.requeue_delay(backlog)
                if failures > pacing.retries_in_place:
                    delay = max(delay, pacing.rng.uniform(*THROTTLED_COMEBACK_SECONDS))
                raise BedrockCallError(
                    THROTTLING,
                    f"{model_id}: no slot within the runner's hold ({held:.0f} s held, {failures} retries)",
                    False,
                    {RETRY_AFTER: delay},
                )
            wait = pacing.pacer.book(model_id)
            pacing.sleep(wait)
            held += wait
            try:
                return self._inner.invoke(model_id, request, stream=stream)
            except BedrockCallError as exc:
                if exc.permanent:
                    raise
                failures += 1
                if exc.code == THROTTLING:
                    pacing.pacer.throttled(model_id)  # the next booking is at the cut rate
                    continue
                if failures > pacing.retries_in_place:
                    raise  # 5xx past its retries: the queue's failure path, as before
                # 5xx and the like: a short backoff, as botocore's retries would.
                backoff = min(4.0, 0.25 * 2**failures) * pacing.rng.uniform(0.5, 1.0)
                pacing.sleep(backoff)
                held += backoff
