"""The emulator's Bedrock quotas (RPM/TPM per model or profile) with an injected clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bedrock_pipeline.tokenizer import count_message_tokens
from local_stack.bedrock_emulator import quotas
from local_stack.bedrock_emulator.catalog import KNOWN_MODELS
from local_stack.bedrock_emulator.errors import BedrockError
from local_stack.bedrock_emulator.quotas import QuotaExceeded, QuotaLedger
from local_stack.bedrock_emulator.state import EmulatorState

NOVA = "amazon.nova-lite-v1:0"
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _body(text: str = "What is 2 + 2?", max_tokens: int | None = 10) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": text}]}]}
    if max_tokens is not None:
        body["inferenceConfig"] = {"maxTokens": max_tokens}
    return body


# --- the ledger ---


def test_given_a_requests_quota_then_the_request_past_it_is_refused_with_bedrocks_wording() -> None:
    ledger = QuotaLedger(FakeClock())
    for _ in range(3):
        ledger.admit(NOVA, 1, requests_per_minute=3, tokens_per_minute=None)

    with pytest.raises(QuotaExceeded) as refused:
        ledger.admit(NOVA, 1, requests_per_minute=3, tokens_per_minute=None)

    assert refused.value.message == "Too many requests, please wait before trying again."
    stats = ledger.stats()[NOVA]
    assert (stats["window_requests"], stats["admitted_requests"]) == (3, 3)
    assert stats["throttled_by_requests_per_minute"] == 1


def test_given_a_tokens_quota_then_admission_reserves_and_refuses_what_would_exceed_it() -> None:
    ledger = QuotaLedger(FakeClock())
    ledger.admit(NOVA, 60, requests_per_minute=None, tokens_per_minute=100)

    with pytest.raises(QuotaExceeded) as refused:
        ledger.admit(NOVA, 41, requests_per_minute=None, tokens_per_minute=100)
    ledger.admit(NOVA, 40, requests_per_minute=None, tokens_per_minute=100)  # exactly up to the quota

    assert refused.value.message == "Too many tokens, please wait before trying again."
    stats = ledger.stats()[NOVA]
    assert (stats["window_tokens"], stats["in_flight"]) == (100, 2)
    assert stats["throttled_by_tokens_per_minute"] == 1


def test_given_a_settlement_below_the_reservation_then_the_unused_tokens_are_returned() -> None:
    ledger = QuotaLedger(FakeClock())
    ticket = ledger.admit(NOVA, 90, requests_per_minute=None, tokens_per_minute=100)
    with pytest.raises(QuotaExceeded):
        ledger.admit(NOVA, 20, requests_per_minute=None, tokens_per_minute=100)

    ledger.settle(ticket, 30)
    ledger.admit(NOVA, 20, requests_per_minute=None, tokens_per_minute=100)

    stats = ledger.stats()[NOVA]
    assert (stats["window_tokens"], stats["settled_tokens"], stats["in_flight"]) == (50, 30, 1)


def test_given_a_settlement_above_the_reservation_then_the_extra_is_charged_and_settling_twice_is_ignored() -> (
    None
):
    ledger = QuotaLedger(FakeClock())
    ticket = ledger.admit(NOVA, 20, requests_per_minute=None, tokens_per_minute=100)

    ledger.settle(ticket, 100)  # e.g. output tokens at a burndown rate of 5
    ledger.settle(ticket, 1)

    assert ledger.stats()[NOVA]["window_tokens"] == 100
    with pytest.raises(QuotaExceeded):
        ledger.admit(NOVA, 1, requests_per_minute=None, tokens_per_minute=100)


def test_given_sixty_seconds_pass_then_requests_and_tokens_leave_the_window() -> None:
    clock = FakeClock()
    ledger = QuotaLedger(clock)
    ledger.admit(NOVA, 50, requests_per_minute=2, tokens_per_minute=100)
    clock.now += 30
    ledger.admit(NOVA, 50, requests_per_minute=2, tokens_per_minute=100)

    clock.now += 29.9  # 59.9 s after the first
    with pytest.raises(QuotaExceeded):
        ledger.admit(NOVA, 1, requests_per_minute=2, tokens_per_minute=100)
    clock.now += 0.1  # the first one is 60 s old: out
    ledger.admit(NOVA, 50, requests_per_minute=2, tokens_per_minute=100)

    stats = ledger.stats()[NOVA]
    assert (stats["window_requests"], stats["window_tokens"], stats["admitted_requests"]) == (2, 100, 3)


def test_given_a_call_longer_than_the_window_then_its_late_settlement_does_not_touch_the_window() -> None:
    clock = FakeClock()
    ledger = QuotaLedger(clock)
    ticket = ledger.admit(NOVA, 80, requests_per_minute=None, tokens_per_minute=100)
    clock.now += 61
    ledger.admit(NOVA, 70, requests_per_minute=None, tokens_per_minute=100)

    ledger.settle(ticket, 5)

    stats = ledger.stats()[NOVA]
    assert (stats["window_tokens"], stats["settled_tokens"]) == (70, 5)


def test_given_a_profile_and_its_model_then_each_has_its_own_window() -> None:
    ledger = QuotaLedger(FakeClock())
    profile_arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{NOVA}"
    model_arn = f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"
    keys = [quotas.quota_key(i) for i in (NOVA, f"us.{NOVA}", profile_arn, model_arn, f"eu.{NOVA}")]
    assert keys == [NOVA, f"us.{NOVA}", f"us.{NOVA}", NOVA, f"eu.{NOVA}"]

    for key in (NOVA, f"us.{NOVA}", f"eu.{NOVA}"):
        ledger.admit(key, 1, requests_per_minute=1, tokens_per_minute=None)
    for key in (NOVA, f"us.{NOVA}", f"eu.{NOVA}"):
        with pytest.raises(QuotaExceeded):
            ledger.admit(key, 1, requests_per_minute=1, tokens_per_minute=None)

    assert sorted(ledger.stats()) == sorted([NOVA, f"us.{NOVA}", f"eu.{NOVA}"])


@pytest.mark.parametrize(
    ("requests_per_minute", "tokens_per_minute", "expected"), [(50, None, 50), (None, 1000, 142)]
)
def test_given_many_threads_admitting_at_once_then_exactly_the_quota_is_admitted(
    requests_per_minute: int | None, tokens_per_minute: int | None, expected: int
) -> None:
    ledger = QuotaLedger(FakeClock())
    start = threading.Barrier(16)
    admitted: list[int] = []
    refused: list[int] = []

    def worker() -> None:
        start.wait()
        for _ in range(20):
            try:
                ledger.admit(NOVA, 7, requests_per_minute, tokens_per_minute)
                admitted.append(1)  # list.append is atomic
            except QuotaExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(admitted), len(refused)) == (expected, 16 * 20 - expected)
    assert ledger.stats()[NOVA]["window_requests"] == expected


# --- Bedrock's counting rule ---


def test_given_claude_4_or_3_7_sonnet_then_output_burns_5x_and_other_models_1x() -> None:
    five = [SONNET_45, "anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-opus-4-20250514-v1:0"]
    five.append("anthropic.claude-haiku-4-5-20251001-v1:0")
    one = [NOVA, "anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"]

    assert [quotas.documented_output_burndown_rate(m) for m in five] == [5.0] * 4
    assert [quotas.documented_output_burndown_rate(m) for m in one] == [1.0] * 3


def test_given_a_usage_then_the_charge_is_input_plus_cache_writes_plus_weighted_output_without_cache_reads() -> (
    None
):
    usage = {"inputTokens": 10, "outputTokens": 7, "cacheReadInputTokens": 500, "cacheWriteInputTokens": 20}

    assert quotas.charged_tokens(usage, 5.0) == 10 + 20 + 35
    assert quotas.charged_tokens({"inputTokens": 3, "outputTokens": 3}, 1.5) == 3 + 5  # whole tokens, up


# --- through the emulator's state (config, ThrottlingException, stats) ---


def test_given_a_configured_quota_then_the_state_reserves_input_plus_max_tokens_and_settles_bedrocks_way() -> (
    None
):
    state = EmulatorState(0, {"models": {SONNET_45: {"tokens_per_minute": 10_000}}}, clock=FakeClock())
    info = KNOWN_MODELS[SONNET_45]
    body = _body(max_tokens=100)
    behaviour = state.behaviour(SONNET_45, SONNET_45)

    admission = state.admit(SONNET_45, info, body, behaviour)
    reserved = state.stats()["quotas"][SONNET_45]["window_tokens"]
    state.settle(admission, {"inputTokens": 12, "outputTokens": 8})
    settled = state.stats()["quotas"][SONNET_45]["window_tokens"]

    assert reserved == count_message_tokens(body) + 100
    assert settled == 12 + 8 * 5


def test_given_no_max_tokens_then_the_models_maximum_output_is_reserved() -> None:
    state = EmulatorState(0, clock=FakeClock())
    info = KNOWN_MODELS[NOVA]
    body = _body(max_tokens=None)

    state.admit(NOVA, info, body, state.behaviour(NOVA, NOVA))

    window = state.stats()["quotas"][NOVA]
    assert window["window_tokens"] == count_message_tokens(body) + info.max_output_tokens
    assert (window["requests_per_minute"], window["tokens_per_minute"]) == (None, None)


def test_given_a_quota_changed_at_run_time_then_throttling_follows_and_stats_tell_quota_from_random() -> None:
    state = EmulatorState(0, clock=FakeClock())
    info = KNOWN_MODELS[NOVA]
    state.merge_config({"models": {NOVA: {"requests_per_minute": 1}}})
    state.admit(NOVA, info, _body(), state.behaviour(NOVA, NOVA))

    with pytest.raises(BedrockError) as throttled:
        state.admit(NOVA, info, _body(), state.behaviour(NOVA, NOVA))
    state.record(NOVA, "converse", throttled.value.outcome, throttled.value.name, "digest")
    state.merge_config({"models": {NOVA: {"requests_per_minute": None}}})
    state.admit(NOVA, info, _body(), state.behaviour(NOVA, NOVA))

    assert (throttled.value.name, throttled.value.status) == ("ThrottlingException", 429)
    assert throttled.value.message == "Too many requests, please wait before trying again."
    stats = state.stats()
    assert stats["models"][NOVA]["throttled"] == 1
    assert (stats["quotas"][NOVA]["throttled_requests"], stats["quotas"][NOVA]["admitted_requests"]) == (1, 2)
    assert state.config()["models"][NOVA] == {"requests_per_minute": None}


def test_given_a_configured_burndown_rate_then_it_replaces_the_documented_one() -> None:
    state = EmulatorState(0, {"models": {"*": {"output_burndown_rate": 2.0}}}, clock=FakeClock())
    info = KNOWN_MODELS[SONNET_45]

    admission = state.admit(SONNET_45, info, _body(), state.behaviour(SONNET_45, SONNET_45))
    state.settle(admission, {"inputTokens": 1, "outputTokens": 10})

    assert state.stats()["quotas"][SONNET_45]["window_tokens"] == 1 + 20


def test_given_a_reset_then_a_ticket_from_before_cannot_change_the_new_windows() -> None:
    state = EmulatorState(0, clock=FakeClock())
    info = KNOWN_MODELS[NOVA]
    old = state.admit(NOVA, info, _body(), state.behaviour(NOVA, NOVA))
    state.reset()
    state.admit(NOVA, info, _body(max_tokens=5), state.behaviour(NOVA, NOVA))
    before = state.stats()["quotas"][NOVA]

    state.settle(old, {"inputTokens": 1000, "outputTokens": 1000})

    assert state.stats()["quotas"][NOVA] == before


@pytest.mark.parametrize(
    "settings",
    [
        {"requests_per_minute": -1},
        {"requests_per_minute": 1.5},
        {"tokens_per_minute": True},
        {"tokens_per_minute": "100"},
        {"output_burndown_rate": 0},
        {"output_burndown_rate": -2},
    ],
)
def test_given_bad_quota_settings_then_the_config_refuses_them_unchanged(settings: dict[str, Any]) -> None:
    state = EmulatorState(0, clock=FakeClock())
    before = state.config()

    with pytest.raises(ValueError):
        state.merge_config({"models": {NOVA: settings}})

    assert state.config() == before
