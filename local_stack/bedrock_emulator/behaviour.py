"""Per-model behaviour of the emulator: latency, faults and answer accuracy, changeable while it runs.

Config shape (JSON, also the ``--config`` file and ``/_emulator/config``)::

    {"seed": 0, "models": {"*": {...settings...}, "amazon.nova-lite-v1:0": {...}}}

Settings (all optional; a model's settings override ``"*"``, which overrides the defaults below):

- ``latency_ms``: base latency per call; ``jitter_ms``: plus a uniform draw in [0, jitter_ms];
  ``ms_per_output_token``: plus this per output token (a stream spreads it across its chunks).
  Base + uniform jitter was chosen over a lognormal for being easy to reason about in tests.
- ``throttle_rate``: probability of ThrottlingException (429).
- ``error_rate``: probability of a server fault, split evenly between InternalServerException (500)
  and ServiceUnavailableException (503).
- ``faults``: ``{"<ErrorName>": probability}`` for any other modelled error (AccessDeniedException,
  ModelTimeoutException, ModelNotReadyException, ModelErrorException, ResourceNotFoundException, ...).
- ``accuracy``: probability that the arithmetic "skill" answers correctly (default 0.9).
- ``requests_per_minute``, ``tokens_per_minute``: Bedrock's on-demand quotas (``quotas.py``), counted
  per model id, or per inference-profile id when the request names a profile; ``null`` = no quota
  (the default). ``output_burndown_rate``: quota tokens per output token; ``null`` = the rate Bedrock
  documents for the model (5 for Claude 3.7 Sonnet and Claude 4 models, else 1).

A model id listed under ``models`` is also accepted as a model even when it is not in the catalog.
Faults are drawn from one RNG seeded with the server seed, so a sequential run is reproducible.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from local_stack.bedrock_emulator.errors import ERROR_STATUS

DEFAULT_MODEL_KEY = "*"


@dataclass(frozen=True)
class ModelBehaviour:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    ms_per_output_token: float = 0.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    accuracy: float = 0.9
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    output_burndown_rate: float | None = None

    def fault_table(self) -> list[tuple[str, float]]:
        table = [
            ("ThrottlingException", self.throttle_rate),
            ("InternalServerException", self.error_rate / 2),
            ("ServiceUnavailableException", self.error_rate / 2),
        ]
        table.extend(sorted(self.faults.items()))
        return [(name, rate) for name, rate in table if rate > 0]

    def draw_fault(self, rng: random.Random) -> str | None:
        """One draw: the error to return, or None for a normal answer."""
        table = self.fault_table()
        if not table:
            return None  # no draw, so adding a faulty model does not shift other models' sequence
        point = rng.random()
        cumulative = 0.0
        for name, rate in table:
            cumulative += rate
            if point < cumulative:
                return name
        return None

    def base_latency_ms(self, rng: random.Random) -> float:
        return self.latency_ms + (rng.uniform(0.0, self.jitter_ms) if self.jitter_ms > 0 else 0.0)


_SETTING_NAMES = {f.name for f in fields(ModelBehaviour)}
_RATE_NAMES = {"throttle_rate", "error_rate", "accuracy"}
_QUOTA_NAMES = {"requests_per_minute", "tokens_per_minute"}


def validate_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Checked copy of one model's settings; raises ValueError on unknown keys or bad values."""
    unknown = set(settings) - _SETTING_NAMES
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_SETTING_NAMES)}")
    clean: dict[str, Any] = {}
    for name, value in settings.items():
        if name == "faults":
            if not isinstance(value, Mapping):
                raise ValueError("faults must be an object of error name -> probability")
            faults: dict[str, float] = {}
            for error, rate in value.items():
                if error not in ERROR_STATUS:
                    raise ValueError(f"unknown fault {error!r}; known: {sorted(ERROR_STATUS)}")
                faults[error] = _number(f"faults.{error}", rate, upper=1.0)
            clean[name] = faults
        elif value is None and (name in _QUOTA_NAMES or name == "output_burndown_rate"):
            clean[name] = None  # back to "no quota" / the documented rate, since merging never deletes
        elif name in _QUOTA_NAMES:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, or null for no quota")
            clean[name] = value
        elif name == "output_burndown_rate":
            if _number(name, value, upper=None) <= 0:
                raise ValueError(f"{name} must be > 0, or null for the documented rate")
            clean[name] = float(value)
        else:
            clean[name] = _number(name, value, upper=1.0 if name in _RATE_NAMES else None)
    return clean


def _number(name: str, value: Any, upper: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0 or (upper is not None and value > upper):
        raise ValueError(f"{name} must be in [0, {upper if upper is not None else 'inf'}]")
    return float(value)


class EmulatorConfig:
    """Partial settings per model key; not thread-safe by itself (the server holds a lock)."""

    def __init__(self, models: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._models: dict[str, dict[str, Any]] = {}
        self.merge(models or {})

    def merge(self, models: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge per-model settings (a key's settings are updated, not replaced; faults merge too)."""
        checked = {str(key): validate_settings(settings) for key, settings in models.items()}
        for key, settings in checked.items():
            current = self._models.setdefault(key, {})
            if "faults" in settings:
                current["faults"] = {**current.get("faults", {}), **settings.pop("faults")}
            current.update(settings)

    def behaviour(self, requested_id: str, base_id: str) -> ModelBehaviour:
        merged: dict[str, Any] = {}
        for key in (DEFAULT_MODEL_KEY, base_id, requested_id):
            merged.update(self._models.get(key, {}))
        return ModelBehaviour(**merged)

    def model_ids(self) -> frozenset[str]:
        return frozenset(key for key in self._models if key != DEFAULT_MODEL_KEY)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._models)
