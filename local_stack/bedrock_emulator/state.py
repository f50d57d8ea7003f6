"""The emulator's state, shared by every request: config, fault draws, prompt-cache memory, statistics.

Usage accounting follows Bedrock: with cachePoint blocks, ``inputTokens`` excludes the cached prefix,
which is reported as ``cacheWriteInputTokens`` the first time this server sees it and as
``cacheReadInputTokens`` afterwards; ``totalTokens`` = input + output + cacheRead + cacheWrite (real
Bedrock responses add the cache tokens into the total, e.g. inputTokens 368 + outputTokens 19 +
cacheReadInputTokens 10536 = totalTokens 10923, Portkey-AI/gateway#1211). No minimum prefix length is
enforced (real models need ~1,024 tokens before a checkpoint). Input tokens are exactly
``bedrock_pipeline.tokenizer.count_message_tokens`` of the request plus its inline images and documents
by ``bedrock_pipeline.media_tokens`` (each family's published rule), so pre-flight estimates match.

Quotas (``quotas.py``): ``admit`` before the model runs (after the random fault draw, so quotas do not
shift the seeded fault sequence), ``settle`` once the reply or stream has been sent.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline.media_tokens import request_media_tokens
from bedrock_pipeline.tokenizer import count_message_tokens, count_tokens, request_segments
from local_stack.bedrock_emulator import quotas
from local_stack.bedrock_emulator.behaviour import DEFAULT_MODEL_KEY, EmulatorConfig, ModelBehaviour
from local_stack.bedrock_emulator.catalog import ModelInfo, base_model_id
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.profiles import ApplicationProfiles

OUTCOMES = ("ok", "throttled", "error", "validation")


def _empty_outcomes() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


@dataclass(frozen=True)
class Admission:
    """A request admitted under its quota, with the burndown rate its settlement uses."""

    ticket: quotas.Ticket
    output_burndown_rate: float


class EmulatorState:
    """Config, fault RNG, prompt-cache memory, quotas and statistics; every method is thread-safe.

    ``clock`` (monotonic seconds) drives the quota windows; tests inject a fake one.
    """

    def __init__(
        self,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._initial = copy.deepcopy(dict(config or {}))
        self._initial_seed = int(self._initial.get("seed", seed))
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        config = EmulatorConfig(self._initial.get("models") or {})
        with self._lock:
            self.seed = self._initial_seed if seed is None else int(seed)
            self._config = config
            self._fault_rng = random.Random(self.seed)
            self._cache_prefixes: set[str] = set()
            self._stats: dict[str, Any] = {"models": {}, "errors": {}, "outcomes": _empty_outcomes()}
            self._request_counts: dict[str, int] = {}
            self._ok_requests: set[str] = set()
            self._repeated_ok = 0
            self._quotas = quotas.QuotaLedger(self._clock)
            self.profiles = ApplicationProfiles()  # a fresh account has none

    # --- config ---
    def merge_config(self, update: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(update) - {"models", "seed"}
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; expected 'models' and/or 'seed'")
        models = update.get("models") or {}
        if not isinstance(models, Mapping):
            raise ValueError("models must be an object of model id -> settings")
        with self._lock:
            self._config.merge(models)  # validates everything before changing anything
            if "seed" in update:
                self.seed = int(update["seed"])
                self._fault_rng = random.Random(self.seed)
        return self.config()

    def config(self) -> dict[str, Any]:
        with self._lock:
            models = self._config.as_dict()
            defaults = self._config.behaviour(DEFAULT_MODEL_KEY, DEFAULT_MODEL_KEY)
        return {"seed": self.seed, "models": models, "defaults": dataclasses.asdict(defaults)}

    def behaviour(self, requested_id: str, base_id: str) -> ModelBehaviour:
        with self._lock:
            return self._config.behaviour(requested_id, base_id)

    def extra_models(self) -> frozenset[str]:
        with self._lock:
            return self._config.model_ids()

    def draw_fault(self, behaviour: ModelBehaviour) -> str | None:
        with self._lock:
            return behaviour.draw_fault(self._fault_rng)

    # --- quotas ---
    def admit(
        self, model_identifier: str, info: ModelInfo, body: Mapping[str, Any], behaviour: ModelBehaviour
    ) -> Admission:
        """Reserve input + max_tokens under the request's quota key, or raise ThrottlingException."""
        max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens") or info.max_output_tokens
        reserved = quotas.reserved_tokens(count_message_tokens(body), max_tokens)
        with self._lock:
            ledger = self._quotas
        try:
            ticket = ledger.admit(
                quotas.quota_key(model_identifier),
                reserved,
                requests_per_minute=behaviour.requests_per_minute,
                tokens_per_minute=behaviour.tokens_per_minute,
            )
        except quotas.QuotaExceeded as exceeded:
            raise BedrockError("ThrottlingException", exceeded.message) from None
        rate = behaviour.output_burndown_rate
        if rate is None:
            rate = quotas.documented_output_burndown_rate(info.model_id)
        return Admission(ticket, rate)

    def settle(self, admission: Admission, usage: Mapping[str, int]) -> None:
        charged = quotas.charged_tokens(usage, admission.output_burndown_rate)
        with self._lock:
            ledger = self._quotas
        ledger.settle(admission.ticket, charged)

    # --- usage with prompt caching ---
    def usage(self, body: dict[str, Any], model_id: str, output_tokens: int) -> dict[str, int]:
        segments = request_segments(body)
        running = 0
        prefix = hashlib.sha256(model_id.encode())  # a prompt cache is per model
        checkpoints: list[tuple[str, int]] = []
        for segment in segments:
            if segment is None:
                checkpoints.append((prefix.hexdigest(), running))
            else:
                running += count_tokens(segment)
                prefix.update(b"\x00" + segment.encode())
        # Images and documents count too, by the family's published rule (media_tokens.py), as Bedrock
        # bills them; an S3 link is not fetched, so its image counts at the family's largest.
        media = request_media_tokens(body, model_id)
        usage = {"inputTokens": running + media, "outputTokens": output_tokens}
        if checkpoints:
            with self._lock:
                read = max(
                    (tokens for digest, tokens in checkpoints if digest in self._cache_prefixes), default=0
                )
                self._cache_prefixes.update(digest for digest, _ in checkpoints)
            write = checkpoints[-1][1] - read  # from the longest cached prefix to the last checkpoint
            usage["inputTokens"] = running + media - read - write
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = write
        usage["totalTokens"] = (
            usage["inputTokens"]
            + output_tokens
            + usage.get("cacheReadInputTokens", 0)
            + usage.get("cacheWriteInputTokens", 0)
        )
        return usage

    # --- statistics ---
    def record(
        self, model: str, operation: str, outcome: str, error: str | None, request_digest: str
    ) -> None:
        with self._lock:
            entry = self._stats["models"].setdefault(
                model, {"calls": 0, **_empty_outcomes(), "converse": 0, "converse-stream": 0}
            )
            entry["calls"] += 1
            entry[outcome] += 1
            entry[operation] += 1
            self._stats["outcomes"][outcome] += 1
            if error:
                self._stats["errors"][error] = self._stats["errors"].get(error, 0) + 1
            self._request_counts[request_digest] = self._request_counts.get(request_digest, 0) + 1
            if outcome == "ok":
                if request_digest in self._ok_requests:
                    self._repeated_ok += 1
                self._ok_requests.add(request_digest)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = copy.deepcopy(self._stats)
            stats["total_calls"] = sum(stats["outcomes"].values())
            stats["distinct_requests"] = len(self._request_counts)
            stats["repeated_requests"] = sum(n - 1 for n in self._request_counts.values())
            stats["repeated_ok_requests"] = self._repeated_ok
            ledger = self._quotas
            config = self._config
        windows = ledger.stats()
        with self._lock:
            for key, window in windows.items():
                limits = config.behaviour(key, base_model_id(key))
                window["requests_per_minute"] = limits.requests_per_minute
                window["tokens_per_minute"] = limits.tokens_per_minute
        stats["quotas"] = windows  # quota throttles per model/profile; "models" counts them as throttled
        return stats
