"""The pacing rules (pacing.py) as properties, and the paced gateway and runner over the fakes."""

from __future__ import annotations

import itertools
import random
from dataclasses import fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedrock_pipeline import settings as defaults
from bedrock_pipeline.pace_policy import PacePolicy, PaceRules, pacing_mode, parse_model_rpm
from bedrock_pipeline.pace_schedule import (
    MIN_SHARE_CALLS,
    UNKNOWN,
    WINDOW_S,
    PaceState,
    admitted,
    counted,
    interval_s,
    rate_at,
)
from bedrock_pipeline.pacing import (
    CONFIRM_STRIKES,
    MAX_TEST_WINDOW_S,
    NOISE_MARGIN,
    PROVEN_DECAY,
    RECUT_FLOOR,
    RETEST_AFTER,
    after_throttle,
    beyond_noise,
    book,
    turned_over,
)
from bedrock_pipeline.ports import BedrockCallError, ThrottledItem, TransientItemError
from bedrock_pipeline.use_cases.paced_calls import RETRY_AFTER, PacedGateway, Pacing
from bedrock_pipeline.use_cases.run_item import run_item
from tests.unit.fakes import ManualClock, MemoryPacer, ScriptedGateway
from tests.unit.test_use_cases import MODEL, World, _records, world  # noqa: F401  (fixture)

rules_st = st.builds(
    lambda ceiling, start_share, inc, factor, cool, lag: PaceRules(
        ceiling_rpm=ceiling,
        start_rpm=max(1.0, ceiling * start_share),
        increase_rpm_per_s=inc,
        decrease_factor=factor,
        cooldown_s=cool,
        max_lag_s=lag,
    ),
    st.floats(1.0, 5000.0),
    st.floats(0.0, 1.0),
    st.floats(0.1, 100.0),
    st.floats(0.1, 0.95),
    st.floats(0.0, 30.0),
    st.floats(0.0, 5.0),
)
# Gaps between callers asking for a slot: bursts (0) and idle spells.
gaps_st = st.lists(st.one_of(st.just(0.0), st.floats(0.0, 120.0)), min_size=1, max_size=300)


def steady(ceiling: float, lag: float = 1.0) -> PaceRules:
    return PaceRules(ceiling_rpm=ceiling, start_rpm=ceiling, max_lag_s=lag)


@given(
    rules_st, st.floats(0, 10_000), st.floats(0, 10_000), st.floats(0, 2_000), st.booleans(), st.booleans()
)
def test_the_rate_stays_between_floor_and_ceiling(
    rules: PaceRules, cut_at: float, later: float, found: float, trusted: bool, cooling: bool
) -> None:
    state = PaceState(
        rate_rpm=rules.start_rpm,
        cut_at=cut_at,
        next_slot=0.0,
        cool_until=cut_at + rules.cooldown_s if cooling else 0.0,
        found_rpm=found,
        trusted=trusted,
    )
    for now in (cut_at, cut_at + later):
        assert rules.floor_rpm <= rate_at(state, rules, now) <= rules.ceiling_rpm
        throttled = after_throttle(counted(state, now), rules, now)
        if throttled is not None:
            assert rules.floor_rpm <= throttled.rate_rpm <= rate_at(state, rules, now)


@given(st.floats(1.0, 3000.0), st.floats(0.0, 5.0), gaps_st)
def test_at_a_steady_rate_no_60_s_window_holds_more_slots_than_the_rate_plus_the_lag(
    ceiling: float, lag: float, gaps: list[float]
) -> None:
    rules = steady(ceiling, lag)
    now = 0.0
    state = PaceState.fresh(rules, now)
    interval = interval_s(ceiling)
    slots, booked = [], []
    for gap in gaps:
        now += gap
        state, wait = book(state, rules, now)
        assert wait >= 0
        slots.append(now + wait)  # when the call goes
        booked.append(state.next_slot - interval)  # the schedule's slot (up to max_lag_s in the past)
    for earlier, later in itertools.pairwise(booked):
        assert later - earlier >= interval - 1e-6  # the schedule's slots never crowd
    for first in range(len(slots)):
        in_window = sum(1 for s in slots[first:] if s < slots[first] + 60.0)
        assert in_window <= ceiling + lag * ceiling / 60 + 1


@settings(deadline=None)  # books a minute and more of calls at up to 5,000 a minute
@given(rules_st, st.floats(1.0, 1000.0))  # a throttle comes after its call: never as the schedule starts
def test_throttles_within_a_cooldown_cut_once_and_the_rate_holds_till_a_window_without_throttles_then_grows(
    rules: PaceRules, now: float
) -> None:
    # A throttle among fewer than MIN_SHARE_CALLS calls says nothing; among that many, a first one cuts.
    state = replace(PaceState.fresh(rules, 0.0), window_slots=MIN_SHARE_CALLS)
    assert after_throttle(counted(PaceState.fresh(rules, 0.0), now), rules, now) in (
        None,
        turned_over(counted(PaceState.fresh(rules, 0.0), now), rules, now),
    )
    cut = after_throttle(counted(state, now), rules, now)
    assert cut is not None and cut.cut_at == now and cut.cool_until == now + rules.cooldown_s
    later = now + rules.cooldown_s / 2
    if later < cut.cool_until:
        within = after_throttle(counted(cut, later), rules, later)  # at most a new window, no cut
        assert within is None or (within.cut_at, within.rate_rpm) == (cut.cut_at, cut.rate_rpm)
    # A shallow cut (nothing trusted) is tested from the window that starts at once: it holds its rate
    # however long the verdict takes...
    assert not cut.trusted and cut.test_from == now
    assert rate_at(cut, rules, cut.cool_until + 3600) == pytest.approx(cut.rate_rpm)
    # ...and a window of calls with no throttle says it was the quota's (a window too slow to hold
    # enough calls in MAX_TEST_WINDOW_S says nothing): the rate grows back from there.
    interval = interval_s(cut.rate_rpm)
    judged = booked_through(cut, rules, now, now + 2 * max(WINDOW_S, MIN_SHARE_CALLS * interval) + 2)
    assert judged.test_rpm == 0
    if (MIN_SHARE_CALLS + 2) * interval < MAX_TEST_WINDOW_S:  # (windows turn over at a booking)
        assert judged.noise == 0
    elif MIN_SHARE_CALLS * interval > MAX_TEST_WINDOW_S:
        assert judged.noise == UNKNOWN
    recovered = judged.cut_at + (rules.ceiling_rpm - judged.rate_rpm) / rules.increase_rpm_per_s
    assert rate_at(judged, rules, recovered + 1e-6) == pytest.approx(rules.ceiling_rpm)


def booked_through(state: PaceState, rules: PaceRules, start: float, end: float) -> PaceState:
    """Callers that keep the schedule full from ``start`` to ``end``."""
    now = start
    while now < end:
        state, wait = book(state, rules, now)
        now += wait
    return state


def throttled_until_cut(state: PaceState, rules: PaceRules, now: float, most: int) -> tuple[PaceState, int]:
    """Throttles reported at ``now``, one after another, until the rules cut: the cut and how many."""
    for n in range(1, most + 1):
        state = counted(state, now)
        after = after_throttle(state, rules, now)
        if after is not None and after.cut_at != state.cut_at:
            return after, n
        state = after or state
    raise AssertionError(f"no cut after {most} throttles")


def test_a_throttle_after_a_full_minute_cuts_to_a_share_of_what_it_held_and_grows_back_past_it() -> None:
    # Told 1000/min, starting at 600 and (nearly) not growing; the quota is 600: the throttles come
    # when the schedule has been full for a minute.
    rules = PaceRules(ceiling_rpm=1000, start_rpm=600, increase_rpm_per_s=1e-6)
    state = booked_through(PaceState.fresh(rules, 0.0), rules, 0, 120)
    assert admitted(state, rules, 60, 120) == pytest.approx(600, abs=2)
    # One throttle in 600 calls is no more than noise: only a tenth of the minute's calls is the quota.
    assert after_throttle(counted(state, 120), rules, 120) in (None, turned_over(state, rules, 120))
    cut, throttles = throttled_until_cut(state, rules, 120, 100)
    assert throttles == pytest.approx(NOISE_MARGIN * 600, abs=2)
    # The first minute proved 600 calls a minute: that is the quota found, whatever the throttles took.
    assert cut.trusted and cut.found_rpm == pytest.approx(600, abs=2)
    assert cut.rate_rpm == pytest.approx(rules.decrease_factor * 600, abs=2)
    at = cut.cut_at
    # Throttles within the cooldown are the same overshoot; one after it waits for the cut's test.
    within = after_throttle(counted(cut, at + 30), rules, at + 30)
    assert within is None or within.cut_at == cut.cut_at
    later = booked_through(cut, rules, at, at + rules.cooldown_s)
    again = after_throttle(counted(later, at + rules.cooldown_s), rules, at + rules.cooldown_s)
    assert again is None or (again.cut_at == later.cut_at and again.found_rpm == cut.found_rpm)
    # The test: the rate holds till the window after the cooldown; with no throttles in it the cut found
    # the quota, and the rate grows back from there.
    assert cut.test_from == at + rules.cooldown_s
    assert rate_at(cut, rules, cut.test_from + 60) == pytest.approx(rules.decrease_factor * 600, abs=2)
    judged = booked_through(later, rules, at + rules.cooldown_s, cut.test_from + WINDOW_S + 1)
    assert judged.test_rpm == 0 and judged.trusted and judged.found_rpm == pytest.approx(600, abs=2)
    verdict = judged.cut_at
    assert rate_at(judged, rules, verdict + rules.recovery_s) == pytest.approx(600, abs=2)  # back in a minute
    probed = rate_at(judged, rules, verdict + rules.recovery_s + 60)  # then slowly beyond
    assert probed == pytest.approx(600 * (1 + rules.probe_per_minute), abs=2)


def test_a_quota_far_below_the_rate_is_confirmed_by_the_throttles_that_follow_the_first() -> None:
    rules = steady(1000)  # told 1000/min; the quota admits 100
    state = booked_through(PaceState.fresh(rules, 0.0), rules, 0, 6)  # the 100 calls: 6 s at 1000/min
    throttled, now, confirmed = state, 6.0, None
    shallow = None
    for _ in range(200):  # every call after them is throttled: the minute is full
        throttled, wait = book(throttled, rules, now)
        now += wait
        throttled = counted(throttled, now)
        after = after_throttle(throttled, rules, now)
        if after is not None and after.cut_at != throttled.cut_at and shallow is None:
            # A minute holding 100 calls at 1000/min may be noise, not the quota: a 30 % cut, untrusted.
            shallow = after
            assert not shallow.trusted and shallow.rate_rpm == pytest.approx(700, abs=1)
            assert shallow.found_rpm == pytest.approx(100, abs=1)
        elif after is not None and after.cut_at != throttled.cut_at:
            confirmed = after
            break
        throttled = after or throttled
    # Confirmed once the throttles since are many and as dense as a quota of 100 at 700/min makes them.
    assert shallow is not None and confirmed is not None and confirmed.trusted
    assert throttled.strikes >= CONFIRM_STRIKES
    assert confirmed.rate_rpm == pytest.approx(rules.decrease_factor * 100, abs=1)


def windows(*, calls: float, throttled: float, before: float, throttled_before: float) -> PaceState:
    """A schedule at the end (60 s) of a one-minute window after one of ``before`` calls, a quota of 550
    found by a cut (trusted) and 420 a minute proven."""
    return PaceState(
        rate_rpm=600, cut_at=60, next_slot=60, window_from=0, window_slots=calls, window_strikes=throttled,
        prev_calls=before, prev_strikes=throttled_before, prev_rpm=before, found_rpm=550, trusted=True,
        proven_rpm=420,
    )  # fmt: skip


def test_successes_that_move_with_the_calls_are_noise_and_undo_the_quota_found_from_them() -> None:
    rules = steady(1000)
    # 600 calls then 500, 30 % throttled each: the successes fell with the calls (420 -> 350). A quota
    # holds them where it is whatever the calls: this is a share throttled at random.
    noisy = turned_over(windows(calls=500, throttled=150, before=600, throttled_before=180), rules, 60)
    assert noisy.noise == pytest.approx(0.3) and noisy.window_from == 60
    assert noisy.found_rpm == 0 and not noisy.trusted  # the cuts that found 550 were noise
    # 600 calls then 500 with 400 successes each: a quota of 400; nothing is noise, the quota stands.
    quota = turned_over(windows(calls=500, throttled=100, before=600, throttled_before=200), rules, 60)
    assert quota.noise == UNKNOWN and quota.found_rpm == 550 and quota.trusted
    # 400 a minute proves less than the 420 before, which fades by a window's decay.
    assert quota.proven_rpm == pytest.approx(PROVEN_DECAY * 420)


def under_test(throttled: float) -> PaceState:
    """A cut's test window, a minute at the 513/min the cut held (the quota found was 570, and 570 a
    minute proven) with ``throttled`` of its calls throttled, about to be judged at 120 s."""
    return PaceState(
        rate_rpm=513, cut_at=60, next_slot=120, cool_until=60, found_rpm=570, trusted=True,
        window_from=60, window_strikes=throttled, proven_rpm=570, test_from=60, test_rpm=570,
    )  # fmt: skip


def test_a_cut_whose_window_after_is_still_throttled_beyond_the_noise_is_cut_again_to_its_successes() -> None:
    # The quota was lowered to 300 (another workload took its share): 513 calls, 300 of them admitted.
    rules = steady(1000)
    again = turned_over(under_test(throttled=213), rules, 120)
    assert again.rate_rpm == pytest.approx(rules.decrease_factor * 300) and again.trusted
    assert (again.test_calls, again.test_ok) == (pytest.approx(513), pytest.approx(300))
    assert again.test_from == 120 + RETEST_AFTER * rules.cooldown_s  # the minute still holds the 300 admitted
    # A window after that cooldown with no throttles: 300 was the quota. The 570 proven before is
    # stale (the floor of every later cut), and the rate grows back from where the test held it.
    judged = booked_through(again, rules, 120, again.test_from + WINDOW_S + 1)
    assert judged.test_rpm == 0 and judged.noise == 0 and judged.proven_rpm == pytest.approx(300)
    assert rate_at(judged, rules, judged.cut_at) == pytest.approx(rules.decrease_factor * 300)
    assert rate_at(judged, rules, judged.cut_at + rules.recovery_s) == pytest.approx(300)


def test_a_second_test_window_whose_successes_fell_with_its_calls_was_noise_and_the_rate_goes_back() -> None:
    rules = steady(1000)
    again = turned_over(under_test(throttled=154), rules, 120)  # 30 % of 513: 359 admitted
    # 30 % of the calls again, at 323 a minute: the successes fell from 359 to 226, as the calls did.
    # A quota would have admitted all of them (below its 359) or held them at 359.
    window = booked_through(again, rules, 120, again.test_from + WINDOW_S - 1e-3)
    assert window.window_from >= again.test_from  # the test's window: from the booking after its start
    noisy = replace(window, window_strikes=0.3 * rules.decrease_factor * 359)
    judged = turned_over(noisy, rules, window.window_from + WINDOW_S)
    assert judged.test_rpm == 0 and judged.noise == pytest.approx(0.3, abs=0.01)
    assert judged.found_rpm == 0 and not judged.trusted
    assert rate_at(judged, rules, judged.cut_at) == pytest.approx(513)  # the calls of the first window
    # Known now, the same share throttled is not cut, and the rate grows back to the ceiling.
    assert not beyond_noise(0.3, 1000, judged.noise)
    assert rate_at(judged, rules, judged.cut_at + 60) == pytest.approx(1000)


def test_a_second_test_window_still_throttled_whose_successes_held_is_a_quota_lower_still_cut_again() -> None:
    rules = steady(1000)
    again = turned_over(under_test(throttled=213), rules, 120)  # 513 calls, 300 admitted: cut to 270
    window = booked_through(again, rules, 120, again.test_from + WINDOW_S - 1e-3)
    # Lowered again meanwhile, to 250: of the 270 calls, 250 admitted (successes fell far less than
    # the calls did: 300 -> 250 is 0.83 for calls 0.53; noise would have taken them down as much).
    lower = replace(window, window_strikes=rules.decrease_factor * 300 - 250)
    judged = turned_over(lower, rules, window.window_from + WINDOW_S)
    assert judged.test_rpm > 0 and judged.trusted and judged.found_rpm == pytest.approx(250, rel=0.02)
    assert rate_at(judged, rules, judged.cut_at) == pytest.approx(rules.decrease_factor * 250, rel=0.02)
    # A window throttled nearly whole is cut to no less than RECUT_FLOOR of its calls (not the floor).
    choked = replace(window, window_strikes=rules.decrease_factor * 300 - 5)
    choked_cut = turned_over(choked, rules, window.window_from + WINDOW_S)
    at_most = RECUT_FLOOR * rules.decrease_factor * 300  # the window's 270 calls
    assert rate_at(choked_cut, rules, choked_cut.cut_at) == pytest.approx(at_most, rel=0.02)


def test_a_test_window_across_an_idle_spell_gives_no_verdict_and_the_rate_grows_back() -> None:
    rules = steady(1000)
    idle_from = 120 + 3 * WINDOW_S  # the batch ended during the cut's test: the next call comes later
    state, _ = book(turned_over(under_test(throttled=213), rules, 120), rules, idle_from)
    assert state.test_rpm > 0  # the window before the idle spell ended early: the test's starts now
    back, _ = book(state, rules, idle_from + 10 * WINDOW_S)
    assert back.test_rpm == 0 and back.noise == UNKNOWN and back.found_rpm == pytest.approx(300)
    assert rate_at(back, rules, back.cut_at) == pytest.approx(rules.decrease_factor * 300)
    assert rate_at(back, rules, back.cut_at + rules.recovery_s) == pytest.approx(300)


def test_a_round_trip_through_the_dynamodb_item_keeps_every_field_of_the_state() -> None:
    from bedrock_pipeline.pacer_store import _leg_values, _state_of

    names = [f.name for f in fields(PaceState) if f.name not in ("trusted", "next_slot")]
    state = PaceState(next_slot=7.5, trusted=True, **{n: float(i + 1) for i, n in enumerate(names)})
    item = {key[1:]: value for key, value in _leg_values(state).items()} | {"next_slot": {"N": "7.5"}}
    assert _state_of(item, steady(1000)) == state


def test_the_noise_gate_leaves_room_for_chance_over_few_calls() -> None:
    # 30 % noise: 45 % throttled of a slow model's 60 calls is within 3 sigma (0.18); of 1,000, beyond.
    assert not beyond_noise(0.45, 60, 0.3) and beyond_noise(0.45, 1000, 0.3)
    assert beyond_noise(0.11, 20, UNKNOWN) and not beyond_noise(0.1, 20, UNKNOWN)  # no noise: the margin


@given(st.floats(0.0, 0.5), st.floats(5.0, 10_000.0), st.floats(0.0, 1.0))
def test_no_share_within_the_margin_of_the_noise_is_beyond_it_and_more_throttles_never_make_it_less(
    noise: float, calls: float, throttled_share: float
) -> None:
    if throttled_share <= noise + NOISE_MARGIN:
        assert not beyond_noise(throttled_share, calls, noise)
    if beyond_noise(throttled_share, calls, noise):
        assert beyond_noise(min(1.0, throttled_share + 0.01), calls, noise)
        assert beyond_noise(throttled_share, calls * 2, noise)  # more calls: less left to chance


def test_known_noise_is_not_cut_for_only_throttles_beyond_it_are() -> None:
    rules = steady(1000)
    state = replace(PaceState.fresh(rules, 0.0), noise=0.3, window_slots=100, proven_rpm=500)
    at_the_noise = replace(state, window_strikes=34)  # 35 % with this one: under noise + NOISE_MARGIN
    assert after_throttle(counted(at_the_noise, 30), rules, 30) is None
    beyond = replace(state, window_strikes=44)  # 45 %: the quota's
    cut = after_throttle(counted(beyond, 30), rules, 30)
    assert cut is not None and cut.cut_at == 30
    # Neither the quota found nor the rate go below 0.9 x the 500 a minute a window has proven.
    assert cut.found_rpm >= 500 and cut.rate_rpm >= rules.decrease_factor * 500 - 1e-6


def test_an_idle_spell_counts_no_calls() -> None:
    rules = steady(600)
    busy = booked_through(PaceState.fresh(rules, 0.0), rules, 0, 60)
    assert admitted(busy, rules, 0, 60) == pytest.approx(600, abs=2)
    after_idle, _ = book(busy, rules, 300)
    assert admitted(after_idle, rules, 240, 300) == pytest.approx(1)  # the booking just made
    assert rate_at(after_idle, rules, 300) == pytest.approx(600)


def test_a_known_quota_starts_at_its_target_share_and_an_unknown_one_probes_up() -> None:
    policy = PacePolicy(
        known_rpm=parse_model_rpm(f"{MODEL}=600, us.other-v1:0=300"),
        target_utilisation=0.9,
        start_rpm=60,
        unknown_ceiling_rpm=1000,
        recovery_s=60,
        decrease_factor=0.9,
        probe_per_minute=0.1,
        probe_span=0.2,
        cooldown_s=60,
        max_lag_s=1,
    )
    assert policy.rules_for(MODEL).start_rpm == pytest.approx(540)
    assert policy.rules_for("us.other-v1:0").ceiling_rpm == pytest.approx(270)
    unknown = policy.rules_for("meta.llama3-1-8b-instruct-v1:0")
    assert (unknown.start_rpm, unknown.ceiling_rpm) == (60, 1000)
    assert policy.rules_for(MODEL).increase_rpm_per_s == pytest.approx(540 / 60)  # back in a minute
    with pytest.raises(ValueError):
        parse_model_rpm("model-without-a-number")


@pytest.mark.parametrize(
    ("asked", "known", "mode"),
    [
        (None, {}, "off"),  # nothing said: the default
        (None, {MODEL: 600.0}, "adaptive"),  # quotas given: pacing is what uses them
        ("off", {MODEL: 600.0}, "off"),  # asked: as asked
        ("adaptive", {}, "adaptive"),
    ],
)
def test_pacing_is_on_when_asked_or_once_a_quota_is_given(
    asked: str | None, known: dict[str, float], mode: str
) -> None:
    assert pacing_mode(asked, known, default="off") == mode


def test_a_runner_given_quotas_in_its_environment_paces_by_them_unless_told_off() -> None:
    from handlers.runtime import HandlerEnvironment

    env = {
        defaults.ENV_PROMPT_BUCKET: "prompts",
        defaults.ENV_JOBS_TABLE: "jobs",
        defaults.ENV_MLFLOW_TRACKING_URI: "http://mlflow:5000",
    }
    quotas = {defaults.ENV_BEDROCK_MODEL_RPM: f"{MODEL}=600"}
    assert not HandlerEnvironment.model_validate(env).paced
    assert HandlerEnvironment.model_validate({**env, **quotas}).paced
    assert not HandlerEnvironment.model_validate({**env, **quotas, defaults.ENV_BEDROCK_PACING: "off"}).paced


def paced(
    gateway: ScriptedGateway, ceiling: float = 600, hold: float = 30.0
) -> tuple[PacedGateway, MemoryPacer, ManualClock]:
    clock = ManualClock()
    pacer = MemoryPacer(lambda _: steady(ceiling), clock)
    return (
        PacedGateway(gateway, Pacing(pacer, hold_seconds=hold, sleep=clock.sleep, rng=random.Random(1))),
        pacer,
        clock,
    )


def throttle() -> BedrockCallError:
    return BedrockCallError("ThrottlingException", "Too many requests", permanent=False)


def test_a_throttled_call_cuts_the_models_rate_once_and_is_retried_in_its_next_slot() -> None:
    inner = ScriptedGateway({MODEL: [throttle(), throttle()]})
    gateway, pacer, clock = paced(inner)
    earlier = int(MIN_SHARE_CALLS) + 1  # calls made before: a throttle among fewer says nothing
    for _ in range(earlier):
        clock.sleep(pacer.book(MODEL))

    assert gateway.invoke(MODEL, {}, stream=False).stop_reason == "end_turn"

    assert inner.calls == [MODEL] * 3 and pacer.throttles == [MODEL, MODEL]
    assert pacer.states[MODEL].rate_rpm == pytest.approx(600 * 0.7)  # one cut: the second was in its cooldown
    slots = [slot for _, slot in pacer.booked][earlier:]
    assert slots[2] - slots[1] >= interval_s(600 * 0.7) - 1e-9  # the retry waited at the cut rate


def test_calls_from_many_callers_are_spread_at_the_models_rate() -> None:
    inner = ScriptedGateway()
    gateway, pacer, clock = paced(inner, ceiling=300)
    start = clock.now
    for _ in range(20):
        pacer.book(MODEL)  # nineteen other callers booked first
    gateway.invoke(MODEL, {}, stream=False)
    assert clock.now - start == pytest.approx(20 * interval_s(300))


def test_a_model_booked_beyond_the_hold_is_not_called_and_says_when_to_come_back() -> None:
    inner = ScriptedGateway()
    gateway, pacer, _clock = paced(inner, ceiling=60, hold=10)
    for _ in range(30):  # 30 s of calls at 60 a minute
        pacer.book(MODEL)
    with pytest.raises(BedrockCallError) as raised:
        gateway.invoke(MODEL, {}, stream=False)
    assert raised.value.code == "ThrottlingException" and not raised.value.permanent
    assert 15 <= raised.value.extra[RETRY_AFTER] <= 35 and inner.calls == []


def test_a_5xx_past_its_retries_is_raised_as_it_was_not_requeued() -> None:
    unavailable = BedrockCallError("ServiceUnavailableException", "try later", permanent=False)
    inner = ScriptedGateway({MODEL: [unavailable] * 10})
    gateway, _, _ = paced(inner)
    with pytest.raises(BedrockCallError) as raised:
        gateway.invoke(MODEL, {}, stream=False)
    assert raised.value.code == "ServiceUnavailableException" and RETRY_AFTER not in raised.value.extra
    assert len(inner.calls) == gateway.pacing.retries_in_place + 1


def test_given_a_model_throttled_past_the_hold_then_the_item_is_requeued_not_failed_and_keeps_no_run(
    world: World,  # noqa: F811
) -> None:
    inner = world.gateway = ScriptedGateway({MODEL: [throttle()] * 10})
    _, report = world.upload("incoming/held.jsonl", _records(1))
    (item,) = world.queue.received()
    gateway, pacer, _clock = paced(world.gateway)
    world.gateway = gateway  # type: ignore[assignment]
    runner = world.runner
    deps = type(runner)(call=runner.call, ledger=runner.ledger, results=runner.results, pacing=gateway.pacing)

    with pytest.raises(ThrottledItem) as raised:
        run_item(deps, item)
    assert isinstance(raised.value, TransientItemError) and raised.value.retry_after_seconds >= 1
    assert world.recorder.call_runs() == [] and world.ledger.item_end(report.job_id, item.key) is None

    # Booked far ahead: the next delivery is requeued before it records anything at all.
    for _ in range(1000):
        pacer.book(MODEL)
    attempts = dict(world.ledger.attempts)
    calls = list(inner.calls)
    with pytest.raises(ThrottledItem):
        run_item(deps, item)
    assert world.ledger.attempts == attempts and inner.calls == calls
