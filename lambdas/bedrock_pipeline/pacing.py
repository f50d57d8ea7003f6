"""Pacing calls to a model under its Bedrock quota: pure functions over one model's shared state.

Every runner (every Lambda instance, every thread) books its calls to a model in one shared schedule
(the adapter keeps it in the job ledger's table: `pacer_store.py`), so together they run at the model's
rate, not each at a guess of its own. The schedule is a virtual-scheduling cell-rate algorithm (GCRA):
``next_slot`` is when the next call may start, and each booking moves it on by one interval (60 s /
the rate). Booking is one atomic DynamoDB write, and nothing polls: a caller sleeps until its slot.

The rate adapts to throttling (AIMD): it is cut by ``decrease_factor`` on a throttle (once per
``cooldown_s``: the throttles of one overshoot are one signal) and grows back by ``increase_rpm_per_s``
each second (the ceiling over a minute, PacePolicy), up to the ceiling. When the user knows the model's quota the ceiling is that quota times
the target utilisation and the schedule starts there; otherwise it starts at ``start_rpm`` and probes
up. Bedrock throttles per model and Region over a sliding minute (quotas-runtime.html); a schedule
that never books more than the ceiling in any 60 s stays under it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PaceRules:
    """How one model's rate moves (settings.py has the defaults and where each comes from)."""

    ceiling_rpm: float
    start_rpm: float
    floor_rpm: float = 1.0
    increase_rpm_per_s: float = 10.0
    decrease_factor: float = 0.7
    cooldown_s: float = 5.0
    # A schedule left idle falls behind the clock; it is pulled up to `now - max_lag_s`, so an idle
    # spell never banks a burst larger than max_lag_s of calls.
    max_lag_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.floor_rpm <= self.start_rpm <= self.ceiling_rpm:
            raise ValueError("need 0 < floor_rpm <= start_rpm <= ceiling_rpm")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")


@dataclass(frozen=True)
class PaceState:
    """One model's shared state: the rate it was set to at ``cut_at`` (its start, or its last cut), the
    next free slot (epoch s), and whether a throttle has cut it yet (the cooldown runs from a cut)."""

    rate_rpm: float
    cut_at: float
    next_slot: float
    cut: bool = False

    @classmethod
    def fresh(cls, rules: PaceRules, now: float) -> PaceState:
        return cls(rate_rpm=rules.start_rpm, cut_at=now, next_slot=now)


def rate_at(state: PaceState, rules: PaceRules, now: float) -> float:
    """The allowed requests per minute at ``now``: the rate at the last cut plus the additive increase."""
    grown = state.rate_rpm + rules.increase_rpm_per_s * max(0.0, now - state.cut_at)
    return min(rules.ceiling_rpm, max(rules.floor_rpm, grown))


def interval_s(rate_rpm: float) -> float:
    return 60.0 / rate_rpm


def book(state: PaceState, rules: PaceRules, now: float) -> tuple[PaceState, float]:
    """Book the next slot: the new state and the seconds to wait before calling (>= 0)."""
    slot = max(state.next_slot, now - rules.max_lag_s)
    after = replace(state, next_slot=slot + interval_s(rate_at(state, rules, now)))
    return after, max(0.0, slot - now)


def backlog_s(state: PaceState, now: float) -> float:
    """How long a call booked now would wait (what a runner checks before starting an item)."""
    return max(0.0, state.next_slot - now)


def after_throttle(state: PaceState, rules: PaceRules, now: float) -> PaceState | None:
    """The state after a throttle, or None when the rate was cut less than ``cooldown_s`` ago."""
    if state.cut and now - state.cut_at < rules.cooldown_s:
        return None
    cut = max(rules.floor_rpm, rate_at(state, rules, now) * rules.decrease_factor)
    return replace(state, rate_rpm=cut, cut_at=now, cut=True)


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


@dataclass(frozen=True)
class PacePolicy:
    """Every model's rules from the settings: known quotas start at quota x target, others probe."""

    known_rpm: dict[str, float]
    target_utilisation: float
    start_rpm: float
    unknown_ceiling_rpm: float
    recovery_s: float
    decrease_factor: float
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
            decrease_factor=self.decrease_factor,
            cooldown_s=self.cooldown_s,
            max_lag_s=self.max_lag_s,
        )
