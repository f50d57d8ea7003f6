"""One model's pacing schedule: the state it shares with every runner, and the arithmetic over it
(what rate a slot is for, what the last minute held). pacing.py has the rules that move the rate.

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

A cut applies from the end of the slots already booked (they go at the old rate); an idle schedule is
pulled up to the clock and its idle time counts no calls (`rebased`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from bedrock_pipeline.pace_policy import PaceRules

WINDOW_S = 60.0  # Bedrock's quota minute
BEYOND_PER_MINUTE = 1.0  # past 1 + probe_span times the quota found, grow by it each minute
UNKNOWN = -1.0  # the noise (pacing.py) before any is learned
MAX_NOISE = 0.5  # more than this share throttled whatever the rate is not made up for by calling more
MIN_SHARE_CALLS = 5.0  # a throttle among fewer calls than this says nothing (the very first call, say)


@dataclass(frozen=True)
class PaceState:
    """One model's shared state (the `PACE#` item).

    The rate is a function of schedule time (the time a slot is for): ``rate_rpm`` at ``cut_at`` (the
    start, the last cut, or the end of an idle spell), growing from there (`rate_at`); ``next_slot``
    (epoch s) is the next free slot. ``calls_before``: the calls admitted in the minute before
    ``cut_at`` (taken as spread evenly over it; a throttle reported before ``cut_at`` is of a slot
    booked before, and comes off it). ``lost``: throttles reported since ``cut_at``, the last at
    ``lost_at`` (taken as spread evenly up to it). ``cool_until``: throttles before it are the last
    cut's overshoot. ``found_rpm``: the calls the minute held at the last cut's first throttle (after
    a test's re-cut: its window's successes), the quota if ``trusted`` (a full minute, confirmed by the
    throttles after, or a re-cut); ``strikes``: throttles since the last cut."""

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
    # The window (a minute, turned over at the first booking or throttle after it): from
    # ``window_from``, the slots of the legs before ``cut_at`` (those since are the schedule's), the
    # throttles reported, and the throttled share of the window before.
    window_from: float = 0.0
    window_slots: float = 0.0
    slots_at: float = 0.0  # window_slots counts the slots up to here; those after now went at slots_rpm
    slots_rpm: float = 0.0
    window_strikes: float = 0.0
    prev_calls: float = 0.0
    prev_strikes: float = 0.0
    prev_rpm: float = 0.0
    # ``proven``: the most successful calls per minute a window has made (the quota is at least that),
    # fading; ``noise``: the throttled share of windows that cannot have met the quota (UNKNOWN till one).
    proven_rpm: float = 0.0
    noise: float = UNKNOWN
    # A cut's test (pacing.py, `_judged`): ``test_rpm``, the rate before the cut (0: no test under way);
    # the first window from ``test_from`` (past the cooldown of a full minute's cut, at once after a
    # shallow one) is judged; at a second cut, the window before's calls and successes per minute
    # (``test_calls``, ``test_ok``; 0 at a first).
    test_from: float = 0.0
    test_rpm: float = 0.0
    test_calls: float = 0.0
    test_ok: float = 0.0

    @classmethod
    def fresh(cls, rules: PaceRules, now: float) -> PaceState:
        return cls(rate_rpm=rules.start_rpm, cut_at=now, next_slot=now, window_from=now)


def _knots(state: PaceState, rules: PaceRules) -> list[tuple[float, float]]:
    """The rate from ``cut_at`` on as (schedule time, rpm) points, linear between them, flat after."""
    at, rate = state.cut_at, min(rules.ceiling_rpm, max(rules.floor_rpm, state.rate_rpm))
    found = calls_for(max(rules.floor_rpm, state.found_rpm), state.noise) if state.trusted else 0.0
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
    if state.test_rpm:  # a cut under test holds its rate till the verdict (pacing.py, `_judged`)
        return knots
    for per_s, until in legs:
        until = min(until, rules.ceiling_rpm)
        if until > rate:
            at, rate = at + (until - rate) / per_s, until
            if at == knots[-1][0]:  # a step too small to take time in floats
                knots[-1] = (at, rate)
            else:
                knots.append((at, rate))
    return knots


def calls_for(successes_rpm: float, noise: float) -> float:
    """The calls a minute that make ``successes_rpm`` when the noise throttles its share of them (a
    throttled call counts nothing against the quota: quotas-runtime.html)."""
    return successes_rpm / (1 - min(MAX_NOISE, max(0.0, noise)))


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


def booked(state: PaceState, rules: PaceRules, start: float, end: float) -> float:
    """The slots the schedule holds in (start, end] from ``cut_at`` on (none after ``next_slot``)."""
    end, lo = min(end, state.next_slot), max(start, state.cut_at)
    if end <= lo:
        return 0.0
    points = sorted({lo, end, *(t for t, _ in _knots(state, rules) if lo < t < end)})
    return sum(
        (t1 - t0) * (rate_at(state, rules, t0) + rate_at(state, rules, t1)) / (2 * WINDOW_S)
        for t0, t1 in itertools.pairwise(points)
    )


def admitted(state: PaceState, rules: PaceRules, start: float, end: float) -> float:
    """The calls the schedule made in (start, end] less those reported throttled: a slot booked counts
    (none after ``next_slot``) until its throttle is reported."""
    end = min(end, state.next_slot)
    calls = (
        _overlap(start, end, state.cut_at - WINDOW_S, state.cut_at) * max(0.0, state.calls_before) / WINDOW_S
    )
    calls += booked(state, rules, start, end)
    if state.lost_at > state.cut_at:
        calls -= (
            state.lost * _overlap(start, end, state.cut_at, state.lost_at) / (state.lost_at - state.cut_at)
        )
    elif start < state.cut_at <= end:
        calls -= state.lost
    return max(0.0, calls)


def new_leg(state: PaceState, rules: PaceRules, at: float, rate: float) -> PaceState:
    """The rate set to ``rate`` from schedule time ``at``, with what the minute before it admitted."""
    before = admitted(state, rules, at - WINDOW_S, at)
    return replace(
        state,
        rate_rpm=rate,
        cut_at=at,
        calls_before=before,
        lost=0.0,
        lost_at=at,
        window_slots=window_calls(state, rules, at),
        slots_at=at,
        slots_rpm=rate_at(state, rules, at),
    )


def slots_ahead(state: PaceState, now: float) -> float:
    """The slots of earlier legs counted in ``window_slots`` that are after ``now`` (booked ahead)."""
    ahead = max(0.0, state.slots_at - max(now, state.window_from)) * state.slots_rpm / WINDOW_S
    return min(state.window_slots, ahead)


def window_calls(state: PaceState, rules: PaceRules, now: float) -> float:
    """The window's slots up to ``now`` (a throttle is reported at its slot's time)."""
    since = booked(state, rules, max(state.window_from, state.cut_at), now)
    return state.window_slots - slots_ahead(state, now) + since


def rebased(state: PaceState, rules: PaceRules, at: float) -> PaceState:
    """The schedule idle until ``at`` (beyond its lag): the rate holds where the last booked slot left
    it, and the idle time counts no calls (else a throttle after it would read the idle minute as full)."""
    return new_leg(state, rules, at, rate_at(state, rules, state.next_slot))


def backlog_s(state: PaceState, now: float) -> float:
    """How long a call booked now would wait (what a runner checks before starting an item)."""
    return max(0.0, state.next_slot - now)


def counted(state: PaceState, now: float) -> PaceState:
    """A throttle reported at ``now``: one call less admitted (where its slot was), one more strike."""
    strikes = state.strikes + 1
    state = replace(state, window_strikes=state.window_strikes + 1)
    if now < state.cut_at:  # a slot booked before the last change of rate
        return replace(state, calls_before=state.calls_before - 1, strikes=strikes)
    # Past the cooldown this throttle starts a new leg (after_throttle): it does not stretch the span
    # the leg's throttles are spread over.
    lost_at = now if now < state.cool_until or not state.lost else state.lost_at
    return replace(state, lost=state.lost + 1, lost_at=lost_at, strikes=strikes)


def share(state: PaceState, rules: PaceRules, now: float) -> tuple[float, float]:
    """The throttled share of the calls of about the last minute, and those calls: this window's, and
    the window before's weighted by how much of a minute this one has yet to cover (0 below
    MIN_SHARE_CALLS)."""
    weight = min(1.0, max(0.0, 1.0 - (now - state.window_from) / WINDOW_S))  # clocks may disagree
    calls = window_calls(state, rules, now) + weight * state.prev_calls
    if calls < MIN_SHARE_CALLS:
        return 0.0, calls
    return min(1.0, (state.window_strikes + weight * state.prev_strikes) / calls), calls
