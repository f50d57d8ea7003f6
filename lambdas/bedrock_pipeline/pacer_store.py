"""The `CallPacer` port on DynamoDB: each model's schedule is one item (``PACE#<model id>``) in the job
ledger's table, shared by every runner instance.

Booking a slot is one UpdateItem (``next_slot = if_not_exists(next_slot, now) + interval``, atomic on
the item) whose new image also refreshes this process's view of the state; an idle schedule is pulled
up to the clock by one more, conditional on nobody having booked, cut or turned it since, and a window
a minute old turned over (which may carry the verdict of a cut's test: a new rate) by one more,
conditional on nobody having cut or turned it since (it leaves ``next_slot`` alone: bookings stand). A
throttle is one UpdateItem that counts it (ADD, atomic), and, when the pure rules cut the rate or turn
the window on the image it returns, one more that sets them, conditional on neither having changed
since. Nothing is read in a loop: a caller sleeps until its slot. The pure rules are in pacing.py.

Items written before the rules kept what the quota admitted (issue 19) hold only ``rate_rpm``,
``cut_at``, ``next_slot`` and ``cut``, and before they told noise from the quota no window: the other
fields read as nothing counted yet, the window as starting a minute before ``next_slot`` (or at
``cut_at`` if later), the noise as unknown, and (before cuts were tested) no test under way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline.pace_policy import PaceRules
from bedrock_pipeline.pace_schedule import (
    UNKNOWN,
    WINDOW_S,
    PaceState,
    backlog_s,
    rebased,
)
from bedrock_pipeline.pacing import (
    after_throttle,
    book,
    turned_over,
)

# The state's numbers besides next_slot, as item attributes (all of them SET together by a cut or a
# new window, which happen at most once a minute or so: an ADD between the read and that SET is lost).
_LEG_FIELDS = (
    "rate_rpm", "cut_at", "cool_until", "calls_before", "lost", "lost_at", "found_rpm", "strikes",
    "window_from", "window_slots", "slots_at", "slots_rpm", "window_strikes", "prev_calls",
    "prev_strikes", "prev_rpm", "proven_rpm", "noise", "test_from", "test_rpm", "test_calls", "test_ok",
)  # fmt: skip


def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.6f}"}


def _state_of(item: dict[str, Any], rules: PaceRules) -> PaceState:
    def number(name: str, default: float = 0.0) -> float:
        return float(item[name]["N"]) if name in item else default

    cut_at = number("cut_at")
    old_cut = bool(
        item.get("cut", {}).get("BOOL", False)
    )  # an item from before: its cooldown ran from cut_at
    return PaceState(
        rate_rpm=number("rate_rpm"),
        cut_at=cut_at,
        next_slot=number("next_slot"),
        cool_until=number("cool_until", cut_at + rules.cooldown_s if old_cut else 0.0),
        calls_before=number("calls_before"),
        lost=number("lost"),
        lost_at=number("lost_at", cut_at),
        found_rpm=number("found_rpm"),
        trusted=bool(item.get("trusted", {}).get("BOOL", False)),
        strikes=number("strikes"),
        # An item from before windows: its first starts a minute before its next slot, not at a cut
        # hours ago (whose slots would dilute the throttles' share to nothing).
        window_from=number("window_from", max(cut_at, number("next_slot") - WINDOW_S)),
        window_slots=number("window_slots"),
        slots_at=number("slots_at"),
        slots_rpm=number("slots_rpm"),
        window_strikes=number("window_strikes"),
        prev_calls=number("prev_calls"),
        prev_strikes=number("prev_strikes"),
        prev_rpm=number("prev_rpm"),
        proven_rpm=number("proven_rpm"),
        noise=number("noise", UNKNOWN),
        test_from=number("test_from"),  # an item from before tests has none under way
        test_rpm=number("test_rpm"),
        test_calls=number("test_calls"),
        test_ok=number("test_ok"),
    )


def _leg_values(state: PaceState) -> dict[str, Any]:
    values = {f":{name}": _number(getattr(state, name)) for name in _LEG_FIELDS}
    values[":trusted"] = {"BOOL": state.trusted}
    return values


_SET_LEG = ", ".join(f"{name} = :{name}" for name in _LEG_FIELDS) + ", trusted = :trusted"


class DynamoCallPacer:
    """One per process (the core's); its view of each model's state is refreshed by every write."""

    def __init__(
        self,
        dynamodb_client: Any,
        table_name: str,
        rules_for: Callable[[str], PaceRules],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb_client
        self._table = table_name
        self._rules_for = rules_for
        self._clock = clock  # wall clock: the schedule is compared across processes and machines
        self._seen: dict[str, PaceState] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(model_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"PACE#{model_id}"}}

    def _view(self, model_id: str, now: float) -> PaceState:
        with self._lock:
            seen = self._seen.get(model_id)
        return seen if seen is not None else PaceState.fresh(self._rules_for(model_id), now)

    def _remember(self, model_id: str, state: PaceState) -> None:
        with self._lock:
            self._seen[model_id] = state

    def _set_if_unchanged(
        self, model_id: str, state: PaceState, seen: dict[str, Any], also: str = ""
    ) -> bool:
        """SET the leg fields (and ``also``) unless the item's next_slot / cut_at / window moved since
        ``seen``."""
        window = (
            " AND window_from = :seen_window_from"
            if "window_from" in seen
            else " AND attribute_not_exists(window_from)"
        )
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(model_id),
                UpdateExpression=f"SET {_SET_LEG}{also}",
                ConditionExpression="cut_at = :seen_cut_at"
                + window
                + (" AND next_slot = :seen_next_slot" if also else ""),
                ExpressionAttributeValues={
                    **_leg_values(state),
                    ":seen_cut_at": seen["cut_at"],
                    **({":seen_window_from": seen["window_from"]} if "window_from" in seen else {}),
                    **(
                        {":seen_next_slot": seen["next_slot"], ":next_slot": _number(state.next_slot)}
                        if also
                        else {}
                    ),
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False  # someone booked, changed the rate or turned the window meanwhile: theirs stands
        return True

    def backlog(self, model_id: str) -> float:
        now = self._clock()
        return backlog_s(self._view(model_id, now), now)

    def book(self, model_id: str) -> float:
        rules = self._rules_for(model_id)
        now = self._clock()
        view = self._view(model_id, now)
        planned, _ = book(view, rules, now)
        interval = planned.next_slot - max(view.next_slot, now - rules.max_lag_s)
        fresh = PaceState.fresh(rules, now)
        response = self._db.update_item(
            TableName=self._table,
            Key=self._key(model_id),
            UpdateExpression="SET next_slot = if_not_exists(next_slot, :now) + :interval, "
            "rate_rpm = if_not_exists(rate_rpm, :rate), cut_at = if_not_exists(cut_at, :now)",
            ExpressionAttributeValues={
                ":now": _number(now),
                ":interval": _number(interval),
                ":rate": _number(fresh.rate_rpm),
            },
            ReturnValues="ALL_NEW",
        )
        attributes = response["Attributes"]
        state = _state_of(attributes, rules)
        slot = state.next_slot - interval
        lagged = now - rules.max_lag_s
        if slot < lagged:
            # An idle schedule: pull it up to the clock so the idle time is neither spent as a burst nor
            # counted as calls. If someone moved it meanwhile their booking stands, and this slot (in
            # the past) goes now.
            pulled = replace(
                rebased(replace(state, next_slot=slot), rules, lagged), next_slot=lagged + interval
            )
            pulled = turned_over(pulled, rules, now)
            if self._set_if_unchanged(model_id, pulled, attributes, also=", next_slot = :next_slot"):
                state = pulled
        else:
            turned = turned_over(state, rules, now)  # a window a minute old: a new one (one more write)
            if turned is not state and self._set_if_unchanged(model_id, turned, attributes):
                state = turned
        self._remember(model_id, state)
        return max(0.0, slot - now)

    def throttled(self, model_id: str) -> None:
        rules = self._rules_for(model_id)
        now = self._clock()
        view = self._view(model_id, now)
        # What `counted` does, as atomic ADDs (decided on this process's view of the item).
        adds = ["strikes :one", "window_strikes :one"]
        sets = [
            "next_slot = if_not_exists(next_slot, :now)",
            "rate_rpm = if_not_exists(rate_rpm, :rate)",
            "cut_at = if_not_exists(cut_at, :now)",
        ]
        if now < view.cut_at:  # the call's slot was booked before the last change of rate
            adds.append("calls_before :minus_one")
        else:
            adds.append("lost :one")
            if now < view.cool_until or not view.lost:
                sets.append("lost_at = :now")
        values = {
            ":now": _number(now),
            ":rate": _number(PaceState.fresh(rules, now).rate_rpm),
            ":one": _number(1),
        }
        if now < view.cut_at:
            values[":minus_one"] = _number(-1)
        response = self._db.update_item(
            TableName=self._table,
            Key=self._key(model_id),
            UpdateExpression=f"ADD {', '.join(adds)} SET {', '.join(sets)}",
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        attributes = response["Attributes"]
        state = _state_of(attributes, rules)
        cut = after_throttle(state, rules, now)
        if cut is not None and self._set_if_unchanged(model_id, cut, attributes):
            state = cut
        self._remember(model_id, state)
