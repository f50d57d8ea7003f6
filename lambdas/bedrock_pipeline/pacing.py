"""Pacing calls to a model under its Bedrock quota: the rules that move the rate, pure functions over
one model's shared state (pace_schedule.py: the schedule, what the state holds and counts).

How the rate moves (issue 19; the figures are in docs/PERFORMANCE.md, "Under Bedrock's quotas"):

* Told the quota, the schedule starts at quota x target utilisation, its ceiling, and stays there
  unless throttled. Not told, it starts at ``start_rpm`` and grows by ``increase_rpm_per_s``.
* Not every throttle is the quota's: a busy capacity pool throttles a share of the calls whatever the
  rate (the noise). The state counts, per window of a minute, the calls (its slots) and the throttles,
  and learns the noise from the tests of its cuts (below) and from windows that cannot have met the
  quota (`turned_over`). Only a throttled share beyond the noise, by ``NOISE_MARGIN`` and by
  ``NOISE_SIGMAS`` of chance (a slow model's minute holds few calls), is read as the quota's; below it
  nothing is cut. Known noise raises the rate to make up for it (`calls_for`): the quota counts
  successes.
* A window's successes prove the quota at least that (``proven_rpm``, fading 3 % a window): no first
  cut goes below ``decrease_factor`` x that, and no quota is found below it, until its test says less.
* Such throttles after a full minute (the calls it held are at least half the rate) cut the rate to
  ``decrease_factor`` x those calls: one cut finds the quota, however far above it the rate was.
* In a minute far from full (a fresh schedule, or a rate far above the quota, whose minute filled in
  seconds) they cut by ``SHALLOW_FACTOR`` only: it may be noise. If the throttles then keep coming
  (``CONFIRM_STRIKES``, ``CONFIRM_SHARE`` of the calls, as dense as a quota of what the minute held
  would make them, and the last minute has not admitted more than that) it was the quota: the rate is
  cut to ``decrease_factor`` x the calls the minute held then.
* Every cut is tested (`_judged`), and holds its rate till the verdict: a quota's throttles stop below
  it, noise's go on at their share whatever the rate. A window after the cut throttled no more than the
  noise says it found the quota (and tells the noise). One throttled beyond it is cut again, to that
  window's successes (a quota lowered meanwhile, another workload taking its share, is found so), and
  the window after that one compared with it: if the successes fell with the calls it was noise, the
  rate goes back to the calls of the window before (and grows) and the noise is that share; if they
  held, it is the quota, tested again while still throttled beyond the noise.
* Throttles within ``cooldown_s`` (the quota's minute) of a cut are the same overshoot: the minute
  still holds the calls made before the cut, whatever the rate now.
* Noise learned where none (or less) was known undoes the quota found: the cuts that found it were
  noise, and the rate grows back as if none was ever found.
* After a cut's verdict the rate grows back to the quota found over ``recovery_s``, then by
  ``probe_per_minute`` of it per minute up to ``1 + probe_span`` times it, then by the quota found per
  minute: growth is
  relative to the quota found, not to the ceiling (which held the rate near 0.58 x an overstated
  ceiling before), and a raised quota is still found within minutes.
* Sparse throttles (fewer than ``CONFIRM_SHARE`` of the calls since the last cut) never lower the quota
  found.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from bedrock_pipeline.pace_policy import PaceRules
from bedrock_pipeline.pace_schedule import (
    MAX_NOISE,
    MIN_SHARE_CALLS,
    UNKNOWN,
    WINDOW_S,
    PaceState,
    admitted,
    calls_for,
    interval_s,
    new_leg,
    rate_at,
    rebased,
    share,
    slots_ahead,
    window_calls,
)

# A throttle in a minute holding fewer calls than this share of the rate does not tell the quota.
FULL_SHARE = 0.5
SHALLOW_FACTOR = 0.7  # ...and cuts the rate by 30 % at most (the cut before issue 19's fix)
# Throttles after it that confirm a quota far below the rate: at least this many, and this share of
# the calls the minute admitted plus them (sparse throttles are noise, or the edge of a quota found).
CONFIRM_STRIKES = 20.0
CONFIRM_SHARE = 0.25
CONFIRM_FIT = 0.5  # ...and at least this share of the throttles such a quota would cause
CONFIRM_SLACK = 1.2  # ...unless the last minute has admitted more than this times what it held
# Throttles that are not the quota's: a busy capacity pool throttles below the account's quota (AWS
# support on re:Post, https://repost.aws/questions/QU11DRlMZfRDy0ngHxpO1VCw), at a share of the calls
# whatever the rate. A cut's test (`_judged`) or a window that cannot have met the quota
# (`_noise_sample`) tells that share, the noise, and only throttles beyond it are read as the quota's.
NOISE_MARGIN = 0.1  # a share of throttles this far above the noise is the quota's...
NOISE_SIGMAS = 3.0  # ...and beyond chance: this many standard deviations of the noise's share of the calls
MIN_WINDOW_CALLS = 20.0  # a window of fewer calls tells no noise
PROVEN_SLACK = 0.85  # a window succeeding at most this times the proven rate measures the noise
# Two windows of FLAT_MIN_CALLS calls or more, called at rates at least 5 % apart, both throttled
# (FLAT_MIN_SHARE), whose successes moved with the calls (FLAT_FOLLOW of it): throttles at a share of the
# calls, not a quota (under a quota the successes stay at the quota whatever the calls).
FLAT_MIN_CALLS = 50.0
FLAT_RATE_GAP = 0.95
FLAT_MIN_SHARE = 0.08
FLAT_FOLLOW = 0.7
PROVEN_DECAY = 0.97  # per window: the proven rate fades (the account's quota may be shared, or lowered)
# A cut's second test window against its first: successes that fell by more than this share of the
# calls' fall moved with them (noise: they fall as much; a quota: they hold).
TEST_FOLLOW = 0.5
PERSISTS = 0.02  # ...while throttled beyond the noise known by this (and chance): a quota's stop below it
RECUT_FLOOR = 0.3  # a cut again goes no lower than this share of the calls its window made
# ...and is tested after this share of the quota's minute: by then half the window judged has left the
# quota's count and the rest is below it (the re-cut rate is under that window's successes). A whole
# minute held the noise case a minute longer at the lower rate; none at all misjudged a low quota
# lowered mid-run (test_pacing_under_quota: 2 throttled per success).
RETEST_AFTER = 0.5
MAX_TEST_WINDOW_S = 2 * WINDOW_S  # a test window longer than this (an idle spell) tells no verdict
NO_TEST = MappingProxyType({"test_from": 0.0, "test_rpm": 0.0, "test_calls": 0.0, "test_ok": 0.0})


def book(state: PaceState, rules: PaceRules, now: float) -> tuple[PaceState, float]:
    """Book the next slot: the new state and the seconds to wait before calling (>= 0)."""
    slot = max(state.next_slot, now - rules.max_lag_s)
    if slot > state.next_slot:
        state = rebased(state, rules, slot)
    state = turned_over(state, rules, now)
    after = replace(state, next_slot=slot + interval_s(rate_at(state, rules, slot)))
    return after, max(0.0, slot - now)


def beyond_noise(throttled_share: float, calls: float, noise: float, margin: float = NOISE_MARGIN) -> bool:
    """Whether a share of ``calls`` throttled is more than the noise makes: by NOISE_MARGIN, and by
    NOISE_SIGMAS of the binomial spread of the noise over that many calls (a window of a slow model
    holds few: 30 % noise over 60 calls spreads 0.06 either way)."""
    noise = max(0.0, noise)
    spread = NOISE_SIGMAS * (noise * (1 - noise) / max(1.0, calls)) ** 0.5
    return throttled_share > noise + max(margin, spread)


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
    # A test's window starts at ``test_from`` (the window before ends early: it is no noise sample).
    testing = state.test_rpm > 0
    early = testing and state.window_from < state.test_from <= now
    if span < WINDOW_S and not early:
        return state
    calls = window_calls(state, rules, now)
    judged = testing and state.window_from >= state.test_from
    if judged and calls < MIN_SHARE_CALLS and span <= MAX_TEST_WINDOW_S:
        return state  # a test's window runs till it holds enough calls to judge by...
    called_rpm = calls * WINDOW_S / span
    succeeded_rpm = max(0.0, calls - state.window_strikes) * WINDOW_S / span
    last = min(1.0, state.window_strikes / max(1.0, calls))
    sample = None if testing or early else _noise_sample(state, calls, called_rpm, succeeded_rpm, last)
    noise = state.noise
    if sample is not None:
        noise = sample if noise == UNKNOWN else (noise + sample) / 2
    after = replace(
        state,
        window_from=now,
        window_slots=slots_ahead(state, now),
        window_strikes=0.0,
        prev_calls=calls,
        prev_strikes=state.window_strikes,
        prev_rpm=called_rpm,
        # (a window ended early is too short to prove a rate: a burst over seconds is not a minute's)
        proven_rpm=state.proven_rpm if early else max(succeeded_rpm, PROVEN_DECAY * state.proven_rpm),
        noise=noise,
    )
    if judged and span > MAX_TEST_WINDOW_S:
        # ...for a while: one spanning an idle spell (or a model called a few times a minute) tells
        # rates diluted by the time nobody called. No verdict: the rate grows back from where it was
        # held, and a throttle beyond the noise cuts and tests it afresh.
        at = max(now, after.next_slot)
        return replace(new_leg(after, rules, at, rate_at(after, rules, at)), **NO_TEST)
    if judged:
        return _judged(after, rules, now, (calls, last, called_rpm, succeeded_rpm))
    if noise >= NOISE_MARGIN / 2 and noise > max(0.0, state.noise) + NOISE_MARGIN / 2 and after.found_rpm:
        at = max(now, after.next_slot)
        undone = new_leg(after, rules, at, rate_at(after, rules, at))
        return replace(undone, found_rpm=0.0, trusted=False, strikes=0.0)
    return after


def _judged(
    state: PaceState,
    rules: PaceRules,
    now: float,
    window: tuple[float, float, float, float],
) -> PaceState:
    """The verdict on a cut, from the window after it (its throttled share ``last``). A quota's
    throttles stop below it; a busy pool's go on at their share whatever the rate, and the successes
    move with the calls. So: throttles no more than the noise known mean the cut found the quota (and
    that window, below it, tells the noise). Throttles beyond it may be a quota lower than the cut took
    (lowered meanwhile, or a cut early in a full minute) or noise: the rate is cut again, to that
    window's successes, and the window after compared with it: successes that fell with the calls were
    noise (the rate goes back to the calls of the window before, and grows), else it was the quota again,
    and a window still throttled beyond the noise is cut again (to no less than RECUT_FLOOR of its calls)
    and tested."""
    calls, last, called_rpm, succeeded_rpm = window
    known, at = max(0.0, state.noise), max(now, state.next_slot)
    # (`new_leg` counts the slots booked so far at the rate the test held: the test ends after it)
    if state.test_calls and beyond_noise(last, calls, known, margin=PERSISTS):
        calls_ratio = min(1.0, called_rpm / state.test_calls)
        before = 1 - state.test_ok / state.test_calls  # the throttled share of the window before
        # Noise: the successes fell with the calls, and the throttled share did not grow (at a lower
        # rate it would only grow under a quota lower still).
        if succeeded_rpm <= state.test_ok * (1 - TEST_FOLLOW * (1 - calls_ratio)) and not beyond_noise(
            last, calls, before
        ):
            restored = new_leg(state, rules, at, state.test_calls)
            noise = min(MAX_NOISE, last)
            return replace(restored, **NO_TEST, noise=noise, found_rpm=0.0, trusted=False, strikes=0.0)
    # A test window below the quota found is throttled no more than the noise; half the margin beyond is
    # a quota lower still (a cut early in a full minute, or a quota lowered by little), tested again.
    if not beyond_noise(last, calls, known, margin=NOISE_MARGIN / 2):  # the rate grows back from here
        grows = new_leg(state, rules, at, rate_at(state, rules, at))
        return replace(
            grows,
            **NO_TEST,
            noise=last if state.noise == UNKNOWN else (state.noise + last) / 2,
            proven_rpm=min(state.proven_rpm, max(state.found_rpm, succeeded_rpm)),
        )
    # (no lower than RECUT_FLOOR of the calls: a window throttled nearly whole would send it to the floor)
    rate = max(calls_for(rules.decrease_factor * succeeded_rpm, state.noise), RECUT_FLOOR * called_rpm)
    cut = new_leg(state, rules, at, min(rules.ceiling_rpm, max(rules.floor_rpm, rate)))
    return replace(
        cut,
        cool_until=at + rules.cooldown_s,
        found_rpm=max(rules.floor_rpm, succeeded_rpm),
        trusted=True,
        strikes=0.0,
        test_from=at + RETEST_AFTER * rules.cooldown_s,
        test_rpm=state.test_rpm,
        test_calls=called_rpm,
        test_ok=succeeded_rpm,
    )


def after_throttle(state: PaceState, rules: PaceRules, now: float) -> PaceState | None:
    """The state after a throttle at ``now`` (already `counted`), or None when it changes nothing."""
    turned = turned_over(state, rules, now)
    if turned.test_rpm and now >= turned.cool_until:
        return turned if turned is not state else None  # the cut's test is under way: its verdict
    if now >= turned.cool_until and not beyond_noise(*share(turned, rules, now), turned.noise):
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
        if calls > CONFIRM_SLACK * state.found_rpm + MIN_SHARE_CALLS:
            return None  # the last minute admitted more than that minute held: it was not full
        if share(state, rules, now)[0] < CONFIRM_FIT * (1 - state.found_rpm / current):
            # A quota of what the minute held would throttle that share of the calls at this rate:
            # far fewer are, so that throttle was not the quota's (noise, in a minute far from full).
            return None
        # The minute was full at that cut's throttle: the calls it held then are the quota (those it
        # holds now include slots booked before the cut whose throttles are not reported yet).
        found, trusted = state.found_rpm, True
        rate = calls_for(found * rules.decrease_factor, state.noise)
    else:
        # Sparse throttles since the last cut do not lower a quota found (noise, or its edge).
        found = calls if dense or not state.trusted else max(calls, state.found_rpm)
        trusted = calls >= FULL_SHARE * current
        rate = calls_for(calls * rules.decrease_factor, state.noise) if trusted else current * SHALLOW_FACTOR
    # The quota is at least what a window has proven: neither it nor the rate go below that (unless the
    # cut's test finds the quota lower: `_judged`).
    found = max(found, state.proven_rpm)
    proven = calls_for(rules.decrease_factor * state.proven_rpm, state.noise)
    rate = min(current, max(rules.floor_rpm, proven, rate))
    cut = new_leg(state, rules, at, rate)
    return replace(
        cut,
        cool_until=at + rules.cooldown_s,
        found_rpm=max(rules.floor_rpm, found),
        trusted=trusted,
        strikes=0.0,
        test_from=at + rules.cooldown_s if trusted else at,
        test_rpm=current,
        test_calls=0.0,
        test_ok=0.0,
    )
