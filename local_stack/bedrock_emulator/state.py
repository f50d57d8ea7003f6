"""The emulator's state, shared by every request: config, fault draws, prompt-cache memory, statistics.

Usage accounting follows Bedrock: with cachePoint blocks, ``inputTokens`` excludes the cached prefix,
which is reported as ``cacheWriteInputTokens`` the first time this server sees it and as
``cacheReadInputTokens`` afterwards; ``totalTokens`` = input + output + cacheRead + cacheWrite (real
Bedrock responses add the cache tokens into the total, e.g. inputTokens 368 + outputTokens 19 +
cacheReadInputTokens 10536 = totalTokens 10923, Portkey-AI/gateway#1211). No minimum prefix length is
enforced (real models need ~1,024 tokens before a checkpoint). Input tokens are exactly
``bedrock_pipeline.tokenizer.count_message_tokens`` of the request, so pre-flight estimates match.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import threading
from collections.abc import Mapping
from typing import Any

from bedrock_pipeline.tokenizer import count_tokens, request_segments
from local_stack.bedrock_emulator.behaviour import DEFAULT_MODEL_KEY, EmulatorConfig, ModelBehaviour

OUTCOMES = ("ok", "throttled", "error", "validation")


def _empty_outcomes() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


class EmulatorState:
    """Config, fault RNG, prompt-cache memory and statistics; every method is thread-safe."""

    def __init__(self, seed: int = 0, config: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
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
        usage = {"inputTokens": running, "outputTokens": output_tokens}
        if checkpoints:
            with self._lock:
                read = max(
                    (tokens for digest, tokens in checkpoints if digest in self._cache_prefixes), default=0
                )
                self._cache_prefixes.update(digest for digest, _ in checkpoints)
            write = checkpoints[-1][1] - read  # from the longest cached prefix to the last checkpoint
            usage["inputTokens"] = running - read - write
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
        return stats
