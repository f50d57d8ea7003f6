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
* Not every throttle is the quota's: a busy capacity pool throttles a share of the calls whatever the
  rate (the noise). The state counts, per window of a minute, the calls (its slots) and the throttles,
  and learns the noise from windows that cannot have met the quota (`turned_over`). Only a throttled
  share beyond the noise by ``NOISE_MARGIN`` is read as the quota's; below it nothing is cut.
* A window's successes prove the quota at least that (``proven_rpm``, fading 3 % a window): no cut goes
  below ``decrease_factor`` x that, and no quota is found below it. A quota lowered meanwhile (another
  workload taking its share) is therefore found slowly: docs/PERFORMANCE.md has what it costs.
* Such throttles after a full minute (the calls it held are at least half the rate) cut the rate to
  ``decrease_factor`` x those calls: one cut finds the quota, however far above it the rate was.
* In a minute far from full (a fresh schedule, or a rate far above the quota, whose minute filled in
  seconds) they cut by ``SHALLOW_FACTOR`` only, and the rate holds there through the cooldown: it may
  be noise. If the throttles then keep coming (``CONFIRM_STRIKES``, ``CONFIRM_SHARE`` of the calls, as
  dense as a quota of what the minute held would make them, and the window has not since admitted more
  than that) it was the quota: the rate is cut to ``decrease_factor`` x the calls the minute held then.
* Throttles within ``cooldown_s`` (the quota's minute) of a cut are the same overshoot: the minute
  still holds the calls made before the cut, whatever the rate now.
* Noise learned where none (or less) was known undoes the quota found: the cuts that found it were
  noise, and the rate grows back as if none was ever found.
* After a cut the rate grows back to the quota found over ``recovery_s``, then by ``probe_per_minute``
  of it per minute up to ``1 + probe_span`` times it, then by the quota found per minute: growth is
  relative to the quota found, not to the ceiling (which held the rate near 0.58 x an overstated
  ceiling before), and a raised quota is still found within minutes.
* Sparse throttles (fewer than ``CONFIRM_SHARE`` of the calls since the last cut) never lower the quota
  found.

A cut applies from the end of the slots already booked (they go at the old rate); an idle schedule is
pulled up to the clock and its idle time counts no calls (`rebased`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from bedrock_pipeline.pace_policy import PaceRules

WINDOW_S = 60.0  # Bedrock's quota minute
# A throttle in a minute holding fewer calls than this share of the rate does not tell the quota.
FULL_SHARE = 0.5
SHALLOW_FACTOR = 0.7  # ...and cuts the rate by 30 % at most (the cut before issue 19's fix)
# Throttles after it that confirm a quota far below the rate: at least this many, and this share of
# the calls the minute admitted plus them (sparse throttles are noise, or the edge of a quota found).
CONFIRM_STRIKES = 20.0
CONFIRM_SHARE = 0.25
CONFIRM_FIT = 0.5  # ...and at least this share of the throttles such a quota would cause
CONFIRM_SLACK = 1.2  # ...unless the window has since admitted more than this times what it held
BEYOND_PER_MINUTE = 1.0  # past 1 + probe_span times the quota found, grow by it each minute
# Throttles that are not the quota's: a busy capacity pool throttles below the account's quota (AWS
# support on re:Post, https://repost.aws/questions/QU11DRlMZfRDy0ngHxpO1VCw), at a share of the calls
# whatever the rate. A window that cannot have met the quota (`_noise_sample`) tells that share, the
# noise, and only throttles beyond it are read as the quota's.
UNKNOWN = -1.0
NOISE_MARGIN = 0.1  # a share of throttles this far above the noise is the quota's
MIN_WINDOW_CALLS = 20.0  # a window of fewer calls tells no noise
MIN_SHARE_CALLS = 5.0  # a throttle among fewer calls than this says nothing (the very first call, say)
PROVEN_SLACK = 0.85  # a window succeeding at most this times the proven rate measures the noise
# Two windows of FLAT_MIN_CALLS calls or more, called at rates at least 5 % apart, both throttled
# (FLAT_MIN_SHARE), whose successes moved with the calls (FLAT_FOLLOW of it): throttles at a share of the
# calls, not a quota (under a quota the successes stay at the quota whatever the calls).
FLAT_MIN_CALLS = 50.0
FLAT_RATE_GAP = 0.95
FLAT_MIN_SHARE = 0.08
FLAT_FOLLOW = 0.7
PROVEN_DECAY = 0.97  # per window: the proven rate fades (the account's quota may be shared, or lowered)


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

    @classmethod
    def fresh(cls, rules: PaceRules, now: float) -> PaceState:
        return cls(rate_rpm=rules.start_rpm, cut_at=now, next_slot=now, window_from=now)


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
    if not state.trusted and state.found_rpm and state.cool_until > at:
        # A shallow cut holds through its cooldown: the throttles that may confirm it are of this rate.
        at = state.cool_until
        knots.append((at, rate))
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


def _leg(state: PaceState, rules: PaceRules, at: float, rate: float) -> PaceState:
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


def _ahead(state: PaceState, now: float) -> float:
    """The slots of earlier legs counted in ``window_slots`` that are after ``now`` (booked ahead)."""
    ahead = max(0.0, state.slots_at - max(now, state.window_from)) * state.slots_rpm / WINDOW_S
    return min(state.window_slots, ahead)


def window_calls(state: PaceState, rules: PaceRules, now: float) -> float:
    """The window's slots up to ``now`` (a throttle is reported at its slot's time)."""
    since = booked(state, rules, max(state.window_from, state.cut_at), now)
    return state.window_slots - _ahead(state, now) + since


def rebased(state: PaceState, rules: PaceRules, at: float) -> PaceState:
    """The schedule idle until ``at`` (beyond its lag): the rate holds where the last booked slot left
    it, and the idle time counts no calls (else a throttle after it would read the idle minute as full)."""
    return _leg(state, rules, at, rate_at(state, rules, state.next_slot))


def book(state: PaceState, rules: PaceRules, now: float) -> tuple[PaceState, float]:
    """Book the next slot: the new state and the seconds to wait before calling (>= 0)."""
    slot = max(state.next_slot, now - rules.max_lag_s)
    if slot > state.next_slot:
        state = rebased(state, rules, slot)
    state = turned_over(state, rules, now)
    after = replace(state, next_slot=slot + interval_s(rate_at(state, rules, slot)))
    return after, max(0.0, slot - now)


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


def share(state: PaceState, rules: PaceRules, now: float) -> float:
    """The throttled share of the calls of about the last minute: this window's, and the window
    before's weighted by how much of a minute this one has yet to cover (0 below MIN_SHARE_CALLS)."""
    weight = min(1.0, max(0.0, 1.0 - (now - state.window_from) / WINDOW_S))  # clocks may disagree
    calls = window_calls(state, rules, now) + weight * state.prev_calls
    if calls < MIN_SHARE_CALLS:
        return 0.0
    return min(1.0, (state.window_strikes + weight * state.prev_strikes) / calls)


def _noise_sample(
    state: PaceState, calls: float, called_rpm: float, succeeded_rpm: float, last: float
) -> float | None:
    """The throttled share of a finished window, when it tells the noise: it and the window before
    succeeded well below a rate already proven (they cannot have met the quota), or its successes moved
    with its calls against the window before (FLAT_*), or it was quieter than the noise known (it
    eased)."""
    if calls < MIN_WINDOW_CALLS:
        return None
    before = min(1.0, state.prev_strikes / max(1.0, state.prev_calls))
    succeeded_before = state.prev_rpm * (1 - before)
    # Both windows: a minute sliding over this one also holds the end of the one before.
    if state.proven_rpm and max(succeeded_rpm, succeeded_before) <= PROVEN_SLACK * state.proven_rpm:
        return last
    if state.noise != UNKNOWN and last < state.noise:
        return last
    if min(calls, state.prev_calls) < FLAT_MIN_CALLS or not state.prev_rpm or not called_rpm:
        return None
    (slow, slow_ok), (fast, fast_ok) = sorted(
        [(called_rpm, succeeded_rpm), (state.prev_rpm, succeeded_before)]
    )
    calls_ratio, successes_ratio = slow / fast, slow_ok / max(1e-9, fast_ok)
    if (
        calls_ratio <= FLAT_RATE_GAP
        and min(last, before) >= FLAT_MIN_SHARE
        and successes_ratio <= 1 - FLAT_FOLLOW * (1 - calls_ratio)
    ):
        return min(last, before)
    return None


def turned_over(state: PaceState, rules: PaceRules, now: float) -> PaceState:
    """A new window from ``now`` once the current one is a minute old, with what the old one says:
    its success rate proves the quota at least that, and it may tell the noise (`_noise_sample`).
    Noise found where none was known means the quota found was none (the cuts that found it were
    noise): the rate grows back as if unfound."""
    span = now - state.window_from
    if span < WINDOW_S:
        return state
    calls = window_calls(state, rules, now)
    called_rpm = calls * WINDOW_S / span
    succeeded_rpm = max(0.0, calls - state.window_strikes) * WINDOW_S / span
    last = min(1.0, state.window_strikes / max(1.0, calls))
    sample = _noise_sample(state, calls, called_rpm, succeeded_rpm, last)
    noise = state.noise
    if sample is not None:
        noise = sample if noise == UNKNOWN else (noise + sample) / 2
    after = replace(
        state,
        window_from=now,
        window_slots=_ahead(state, now),
        window_strikes=0.0,
        prev_calls=calls,
        prev_strikes=state.window_strikes,
        prev_rpm=called_rpm,
        proven_rpm=max(succeeded_rpm, PROVEN_DECAY * state.proven_rpm),
        noise=noise,
    )
    if noise >= NOISE_MARGIN / 2 and noise > max(0.0, state.noise) + NOISE_MARGIN / 2 and after.found_rpm:
        at = max(now, after.next_slot)
        undone = _leg(after, rules, at, rate_at(after, rules, at))
        return replace(undone, found_rpm=0.0, trusted=False, strikes=0.0)
    return after


def after_throttle(state: PaceState, rules: PaceRules, now: float) -> PaceState | None:
    """The state after a throttle at ``now`` (already `counted`), or None when it changes nothing."""
    turned = turned_over(state, rules, now)
    if now >= turned.cool_until and share(turned, rules, now) <= max(0.0, turned.noise) + NOISE_MARGIN:
        return turned if turned is not state else None  # no more throttles than the noise
    cut = _cut(turned, rules, now)
    return cut if cut is not None else (turned if turned is not state else None)


def _cut(state: PaceState, rules: PaceRules, now: float) -> PaceState | None:
    calls = admitted(state, rules, now - WINDOW_S, now)
    at = max(now, state.next_slot)
    current = rate_at(state, rules, at)
    dense = state.strikes >= CONFIRM_SHARE * (state.strikes + calls)
    if now < state.cool_until:  # the last cut's overshoot: does it confirm a quota far below?
        if state.trusted or not (dense and state.strikes >= CONFIRM_STRIKES):
            return None
        succeeded = window_calls(state, rules, now) - state.window_strikes
        if succeeded > CONFIRM_SLACK * state.found_rpm + MIN_SHARE_CALLS:
            return None  # the window has admitted more than that minute held: it was not full
        if share(state, rules, now) < CONFIRM_FIT * (1 - state.found_rpm / current):
            # A quota of what the minute held would throttle that share of the calls at this rate:
            # far fewer are, so that throttle was not the quota's (noise, in a minute far from full).
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
    # The quota is at least what a window has proven: neither it nor the rate go below that.
    found = max(found, state.proven_rpm)
    rate = min(current, max(rules.floor_rpm, rules.decrease_factor * state.proven_rpm, rate))
    cut = _leg(state, rules, at, rate)
    return replace(
        cut,
        cool_until=at + rules.cooldown_s,
        found_rpm=max(rules.floor_rpm, found),
        trusted=trusted,
        strikes=0.0,
    )
