"""What pacing is told (pacing.py has the rules): each model's `PaceRules`, from the deployment's
settings (`PacePolicy`) and the quotas a user gives (``BEDROCK_MODEL_RPM``, `parse_model_rpm`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PaceRules:
    """How one model's rate moves (settings.py has the defaults and where each comes from)."""

    ceiling_rpm: float
    start_rpm: float
    floor_rpm: float = 1.0
    increase_rpm_per_s: float = 10.0  # growth while no quota has been found
    recovery_s: float = 60.0  # back to the quota found over this long after a cut
    decrease_factor: float = 0.9  # a cut sets the rate to this share of the quota found
    probe_per_minute: float = 0.1
    probe_span: float = 0.2
    cooldown_s: float = 60.0
    # A schedule left idle falls behind the clock; it is pulled up to `now - max_lag_s`, so an idle
    # spell never banks a burst larger than max_lag_s of calls.
    max_lag_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.floor_rpm <= self.start_rpm <= self.ceiling_rpm:
            raise ValueError("need 0 < floor_rpm <= start_rpm <= ceiling_rpm")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")
        if min(self.increase_rpm_per_s, self.recovery_s, self.probe_per_minute) <= 0 or self.probe_span < 0:
            raise ValueError("the rate must grow back: increase, recovery, probe > 0, probe_span >= 0")


def parse_model_rpm(text: str) -> dict[str, float]:
    """``"model-a=600, model-b=300"`` -> ``{"model-a": 600.0, "model-b": 300.0}`` (ValueError on junk)."""
    limits: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        model_id, sep, value = part.rpartition("=")
        if not sep or not model_id.strip() or float(value) <= 0:
            raise ValueError(f"expected model-id=requests-per-minute, got {part.strip()!r}")
        limits[model_id.strip()] = float(value)
    return limits


def pacing_mode(asked: str | None, known_rpm: Mapping[str, float], default: str) -> str:
    """The pacing a deployment runs: as asked; not asked, "adaptive" once any model's quota is given
    (pacing is all the quotas are for: given and unused they would mislead), else ``default``."""
    if asked is not None:
        return asked
    return "adaptive" if known_rpm else default


@dataclass(frozen=True)
class PacePolicy:
    """Every model's rules from the settings: known quotas start at quota x target, others probe."""

    known_rpm: dict[str, float]
    target_utilisation: float
    start_rpm: float
    unknown_ceiling_rpm: float
    recovery_s: float
    decrease_factor: float
    probe_per_minute: float
    probe_span: float
    cooldown_s: float
    max_lag_s: float

    def rules_for(self, model_id: str) -> PaceRules:
        known = self.known_rpm.get(model_id)
        ceiling = known * self.target_utilisation if known is not None else self.unknown_ceiling_rpm
        start = ceiling if known is not None else min(self.start_rpm, ceiling)
        return PaceRules(
            ceiling_rpm=ceiling,
            start_rpm=start,
            floor_rpm=min(1.0, start),
            increase_rpm_per_s=ceiling / self.recovery_s,
            recovery_s=self.recovery_s,
            decrease_factor=self.decrease_factor,
            probe_per_minute=self.probe_per_minute,
            probe_span=self.probe_span,
            cooldown_s=self.cooldown_s,
            max_lag_s=self.max_lag_s,
        )
