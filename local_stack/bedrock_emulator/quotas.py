"""Bedrock's on-demand quotas: requests per minute (RPM) and tokens per minute (TPM) per quota key.

How Bedrock counts (https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-token-burndown.html,
"How tokens are counted in Amazon Bedrock"; the three stages are quoted in Kilo-Org/aws-bedrock-o11y's
README):

- at admission a request reserves its total input tokens plus ``max_tokens`` (the model's maximum
  output when the request sets none) against TPM, and one request against RPM;
- when it ends the charge is settled to ``InputTokenCount + CacheWriteInputTokens + OutputTokenCount x
  burndown rate`` (cache reads are reserved but not charged); the burndown rate is 5 for output tokens
  of Claude 3.7 Sonnet and the Claude 4 family, 1 otherwise (the same page, and AWS's
  community.aws "Token Burndown Explained", 2025-05-27);
- quotas are per model and Region, and calls through a cross-Region inference profile count against
  separate "Cross-Region InvokeModel ... per minute" quotas
  (https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-runtime.html), so the quota key is
  the profile id when the request names one (``us.X``), else the model id;
- over quota Bedrock answers ThrottlingException (429) with "Too many requests, please wait before
  trying again." or "Too many tokens, please wait before trying again." (as seen in botocore
  tracebacks, e.g. strands-agents/agent-builder#31, aws-samples/well-architected-iac-analyzer#25).

The window is a sliding 60-second log rather than a token bucket: at most N requests (and T tokens)
are admitted in any 60 s, so "fire N+k calls, exactly k are throttled" holds regardless of how fast
the calls come, and "requests in the last 60 s" is directly the achieved requests per minute. A
bucket refilling continuously lets a burst of N plus the refill through in the first minute, which
makes exact tests timing-dependent. Bedrock does not document which it uses.
Throttled requests consume nothing; a settlement keeps the request's admission time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WINDOW_SECONDS = 60.0
TOO_MANY_REQUESTS = "Too many requests, please wait before trying again."
TOO_MANY_TOKENS = "Too many tokens, please wait before trying again."

# Base model ids whose output tokens burn 5x (quotas-token-burndown.html); prefixes cover the dated ids.
_FIVE_X_OUTPUT = (
    "anthropic.claude-3-7-sonnet",
    "anthropic.claude-sonnet-4",
    "anthropic.claude-opus-4",
    "anthropic.claude-haiku-4-5",
)


def documented_output_burndown_rate(base_model_id: str) -> float:
    return 5.0 if base_model_id.startswith(_FIVE_X_OUTPUT) else 1.0


def quota_key(model_identifier: str) -> str:
    """The id a request's quota is counted under: the profile id for ``us.X`` (or its ARN), else ``X``."""
    identifier = model_identifier.strip()
    if identifier.startswith("arn:"):
        identifier = identifier.rsplit("/", 1)[-1]
    return identifier


class QuotaExceeded(Exception):
    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass
class _Entry:
    at: float
    tokens: int
    settled: bool = False


class _Window:
    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.tokens = 0  # sum of entries' tokens, kept incrementally
        self.admitted = 0
        self.throttled_requests = 0
        self.throttled_tokens = 0
        self.settled_tokens = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0].at <= now - WINDOW_SECONDS:
            self.tokens -= self.entries.popleft().tokens


@dataclass(frozen=True)
class Ticket:
    """An admitted request; hand it back to ``settle`` when the call ends."""

    window: _Window  # the window itself, so a ticket from before a reset cannot touch the new ledger
    entry: _Entry


class QuotaLedger:
    """Sliding-window RPM/TPM accounting per quota key; every method is thread-safe.

    ``clock`` returns seconds (monotonic); tests inject a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def admit(
        self,
        key: str,
        reserved_tokens: int,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
    ) -> Ticket:
        """Admit one request reserving ``reserved_tokens``, or raise QuotaExceeded (None = no quota)."""
        with self._lock:
            now = self._clock()
            window = self._windows.setdefault(key, _Window())
            window.expire(now)
            if requests_per_minute is not None and len(window.entries) + 1 > requests_per_minute:
                window.throttled_requests += 1
                raise QuotaExceeded(key, TOO_MANY_REQUESTS)
            if tokens_per_minute is not None and window.tokens + reserved_tokens > tokens_per_minute:
                window.throttled_tokens += 1
                raise QuotaExceeded(key, TOO_MANY_TOKENS)
            entry = _Entry(now, reserved_tokens)
            window.entries.append(entry)
            window.tokens += reserved_tokens
            window.admitted += 1
            return Ticket(window, entry)

    def settle(self, ticket: Ticket, charged_tokens: int) -> None:
        """Replace the reservation by the final charge (may be more than reserved, with a burndown rate)."""
        with self._lock:
            window, entry = ticket.window, ticket.entry
            if entry.settled:
                return
            window.expire(self._clock())
            if window.entries and window.entries[0].at <= entry.at:  # still inside the window
                window.tokens += charged_tokens - entry.tokens
            entry.tokens = charged_tokens
            entry.settled = True
            window.settled_tokens += charged_tokens

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per key: what the last 60 s hold (``window_*``) and totals since the last reset."""
        with self._lock:
            now = self._clock()
            result: dict[str, dict[str, Any]] = {}
            for key, window in sorted(self._windows.items()):
                window.expire(now)
                result[key] = {
                    "window_seconds": WINDOW_SECONDS,
                    "window_requests": len(window.entries),
                    "window_tokens": window.tokens,
                    "in_flight": sum(1 for entry in window.entries if not entry.settled),
                    "admitted_requests": window.admitted,
                    "settled_tokens": window.settled_tokens,
                    "throttled_requests": window.throttled_requests + window.throttled_tokens,
                    "throttled_by_requests_per_minute": window.throttled_requests,
                    "throttled_by_tokens_per_minute": window.throttled_tokens,
                }
            return result


def reserved_tokens(total_input_tokens: int, max_tokens: int) -> int:
    return total_input_tokens + max_tokens


def charged_tokens(usage: dict[str, int], output_burndown_rate: float) -> int:
    """Bedrock's settlement: input + cache writes + output x burndown rate (cache reads are free)."""
    weighted_output = math.ceil(usage["outputTokens"] * output_burndown_rate)
    return usage["inputTokens"] + usage.get("cacheWriteInputTokens", 0) + weighted_output
