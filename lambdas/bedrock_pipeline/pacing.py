"""Pacing calls to a model under its Bedrock quota: pure functions over one model's shared state.

Every runner (every Lambda instance, every thread) books its calls to a model in one shared schedule
(the adapter keeps it in the job ledger's table: `pacer_store.py`), so together they run at the model's
rate, not each at a guess of its own. The schedule is a virtual-scheduling cell-rate algorithm (GCRA):
``next_slot`` is when the next call may start, and each booking moves it on by one interval (60 s /
the rate). Booking is one atomic DynamoDB write, and nothing polls: a caller sleeps until its slot.

Bedrock counts a quota per model over a sliding minute (quotas-runtime.html): a request is throttled
when the minute already holds the quota's number of admitted ones, and a throttled one counts nothing.
So a throttle says what the quota is: the calls of the last minute that were not throttled. The state
keeps enough to tell that count (`admitted`): the rate as a function of schedule time since its last
change, what the minute before that change admitted, and the throttles reported since.

How the rate moves (issue 19; the figures are in docs/PERFORMANCE.md, "Under Bedrock's quotas"):

* Told the quota, the schedule starts at quota x target utilisation, its ceiling, and stays there
  unless throttled. Not told, it starts at ``start_rpm`` and grows by ``increase_rpm_per_s``.
* A throttle after a full minute (the calls it held are at least half the rate) cuts the rate to
  ``decrease_factor`` x those calls: one cut finds the quota, however far above it the rate was.
* A throttle in a minute far from full (a fresh schedule, or a rate far above the quota, whose
  minute filled in seconds) cuts by ``SHALLOW_FACTOR`` only: it may be noise, not the quota. If the
  throttles then keep coming (``CONFIRM_STRIKES``, ``CONFIRM_SHARE`` of the calls), it was the quota:
  the rate is cut to ``decrease_factor`` x the calls the minute held at that first throttle.
* Throttles within ``cooldown_s`` (the quota's minute) of a cut are the same overshoot: the minute
  still holds the calls made before the cut, whatever the rate now.
* After a cut the rate grows back to the quota found over ``recovery_s``, then by ``probe_per_minute``
  of it per minute up to ``1 + probe_span`` times it, then by the quota found per minute: growth is
  relative to the quota found, not to the ceiling (which held the rate near 0.58 x an overstated
  ceiling before), and a raised quota is still found within minutes.
* Sparse throttles (fewer than ``CONFIRM_SHARE`` of the calls since the last cut) never lower the quota
  found, so occasional throttles that are not the quota's cost a dip, not a slide.

A cut applies from the end of the slots already booked (they go at the old rate); an idle schedule is
pulled up to the clock and its idle time counts no calls (`rebased`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

WINDOW_S = 60.0  # Bedrock's quota minute
# A throttle in a minute holding fewer calls than this share of the rate does not tell the quota.
FULL_SHARE = 0.5
SHALLOW_FACTOR = 0.7  # ...and cuts the rate by 30 % at most (the cut before issue 19's fix)
# Throttles after it that confirm a quota far below the rate: at least this many, and this share of
# the calls the minute admitted plus them (sparse throttles are noise, or the edge of a quota found).
CONFIRM_STRIKES = 20.0
CONFIRM_SHARE = 0.25
BEYOND_PER_MINUTE = 1.0  # past 1 + probe_span times the quota found, grow by it each minute


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


@dataclass(frozen=True)
class PaceState:
    """One model's shared state (the `PACE#` item).

    The rate is a function of schedule time (the time a slot is for): ``rate_rpm`` at ``cut_at`` (the
    start, the last cut, or the end of an idle spell), growing from there (`rate_at`); ``next_slot``
    (epoch s) is the next free slot. ``calls_before``: the calls admitted in the minute before
    ``cut_at`` (taken as spread evenly over it; a throttle reported before ``cut_at`` is of a slot
    booked before, and comes off it). ``lost``: throttles reported since ``cut_at``, the last at
    ``lost_at`` (taken as spread evenly up to it). ``cool_until``: throttles before it are the last
    cut's overshoot. ``found_rpm``: the calls the minute held at the last cut's first throttle, the
    quota if ``trusted`` (a full minute, or confirmed by the throttles after); ``strikes``: throttles
    since the last cut."""

    rate_rpm: float
    cut_at: float
    next_slot: float
    cool_until: float = 0.0
    calls_before: float = 0.0
    lost: float = 0.0
    lost_at: float = 0.0
    found_rpm: float = 0.0
    trusted: bool = False
    strikes: float = 0.0

    @classmethod
    def fresh(cls, rules: PaceRules, now: float) -> PaceState:
        return cls(rate_rpm=rules.start_rpm, cut_at=now, next_slot=now)


def _knots(state: PaceState, rules: PaceRules) -> list[tuple[float, float]]:
    """The rate from ``cut_at`` on as (schedule time, rpm) points, linear between them, flat after."""
    at, rate = state.cut_at, min(rules.ceiling_rpm, max(rules.floor_rpm, state.rate_rpm))
    found = max(rules.floor_rpm, state.found_rpm) if state.trusted else 0.0
    probe = rules.probe_per_minute * found / 60.0
    if not found:
        legs = [(rules.increase_rpm_per_s, rules.ceiling_rpm)]
    elif rate >= found * (1 + rules.probe_span):  # a shallow cut left it above: no faster than a probe
        legs = [(probe, rules.ceiling_rpm)]
    else:
        legs = [
            (max(found - rate, 1e-9) / rules.recovery_s, found),
            (probe, found * (1 + rules.probe_span)),
            (BEYOND_PER_MINUTE * found / 60.0, rules.ceiling_rpm),
        ]
    knots = [(at, rate)]
    for per_s, until in legs:
        until = min(until, rules.ceiling_rpm)
        if until > rate:
            at, rate = at + (until - rate) / per_s, until
            if at == knots[-1][0]:  # a step too small to take time in floats
                knots[-1] = (at, rate)
            else:
                knots.append((at, rate))
    return knots


def rate_at(state: PaceState, rules: PaceRules, at: float) -> float:
    """The allowed requests per minute for a slot at schedule time ``at``."""
    knots = _knots(state, rules)
    for (t0, r0), (t1, r1) in itertools.pairwise(knots):
        if at < t1:
            return r0 + (r1 - r0) * max(0.0, at - t0) / (t1 - t0)
    return knots[-1][1]


def interval_s(rate_rpm: float) -> float:
    return 60.0 / rate_rpm


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def admitted(state: PaceState, rules: PaceRules, start: float, end: float) -> float:
    """The calls the schedule made in (start, end] less those reported throttled: a slot booked counts
    (none after ``next_slot``) until its throttle is reported."""
    end = min(end, state.next_slot)
    calls = (
        _overlap(start, end, state.cut_at - WINDOW_S, state.cut_at) * max(0.0, state.calls_before) / WINDOW_S
    )
    lo = max(start, state.cut_at)
    if end > lo:
        points = sorted({lo, end, *(t for t, _ in _knots(state, rules) if lo < t < end)})
        calls += sum(
            (t1 - t0) * (rate_at(state, rules, t0) + rate_at(state, rules, t1)) / (2 * WINDOW_S)
            for t0, t1 in itertools.pairwise(points)
        )
    if state.lost_at > state.cut_at:
        calls -= (
            state.lost * _overlap(start, end, state.cut_at, state.lost_at) / (state.lost_at - state.cut_at)
        )
    elif start < state.cut_at <= end:
        calls -= state.lost
    return max(0.0, calls)


def _leg(state: PaceState, rules: PaceRules, at: float, rate: float) -> PaceState:
    """The rate set to ``rate`` from schedule time ``at``, with what the minute before it admitted."""
    before = admitted(state, rules, at - WINDOW_S, at)
    return replace(state, rate_rpm=rate, cut_at=at, calls_before=before, lost=0.0, lost_at=at)


def rebased(state: PaceState, rules: PaceRules, at: float) -> PaceState:
    """The schedule idle until ``at`` (beyond its lag): the rate holds where the last booked slot left
    it, and the idle time counts no calls (else a throttle after it would read the idle minute as full)."""
    return _leg(state, rules, at, rate_at(state, rules, state.next_slot))


def book(state: PaceState, rules: PaceRules, now: float) -> tuple[PaceState, float]:
    """Book the next slot: the new state and the seconds to wait before calling (>= 0)."""
    slot = max(state.next_slot, now - rules.max_lag_s)
    if slot > state.next_slot:
        state = rebased(state, rules, slot)
    after = replace(state, next_slot=slot + interval_s(rate_at(state, rules, slot)))
    return after, max(0.0, slot - now)


def backlog_s(state: PaceState, now: float) -> float:
    """How long a call booked now would wait (what a runner checks before starting an item)."""
    return max(0.0, state.next_slot - now)


def counted(state: PaceState, now: float) -> PaceState:
    """A throttle reported at ``now``: one call less admitted (where its slot was), one more strike."""
    strikes = state.strikes + 1
    if now < state.cut_at:  # a slot booked before the last change of rate
        return replace(state, calls_before=state.calls_before - 1, strikes=strikes)
    # Past the cooldown this throttle starts a new leg (after_throttle): it does not stretch the span
    # the leg's throttles are spread over.
    lost_at = now if now < state.cool_until or not state.lost else state.lost_at
    return replace(state, lost=state.lost + 1, lost_at=lost_at, strikes=strikes)


def after_throttle(state: PaceState, rules: PaceRules, now: float) -> PaceState | None:
    """The state after a throttle at ``now`` (already `counted`), or None when it changes nothing."""
    calls = admitted(state, rules, now - WINDOW_S, now)
    at = max(now, state.next_slot)
    current = rate_at(state, rules, at)
    dense = state.strikes >= CONFIRM_SHARE * (state.strikes + calls)
    if now < state.cool_until:  # the last cut's overshoot: does it confirm a quota far below?
        if state.trusted or not (dense and state.strikes >= CONFIRM_STRIKES):
            return None
        # The minute was full at that cut's throttle: the calls it held then are the quota (those it
        # holds now include slots booked before the cut whose throttles are not reported yet).
        found, trusted = state.found_rpm, True
        rate = found * rules.decrease_factor
    else:
        # Sparse throttles since the last cut do not lower a quota found (noise, or its edge).
        found = calls if dense or not state.trusted else max(calls, state.found_rpm)
        trusted = calls >= FULL_SHARE * current
        rate = calls * rules.decrease_factor if trusted else current * SHALLOW_FACTOR
    rate = min(current, max(rules.floor_rpm, rate))
    cut = _leg(state, rules, at, rate)
    return replace(
        cut,
        cool_until=at + rules.cooldown_s,
        found_rpm=max(rules.floor_rpm, found),
        trusted=trusted,
        strikes=0.0,
    )


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
