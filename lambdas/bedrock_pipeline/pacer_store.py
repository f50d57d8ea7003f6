"""The `CallPacer` port on DynamoDB: each model's schedule is one item (``PACE#<model id>``) in the job
ledger's table, shared by every runner instance.

Booking a slot is one UpdateItem (``next_slot = if_not_exists(next_slot, now) + interval``, atomic on
the item) whose new image also refreshes this process's view of the rate; a throttle is one
conditional UpdateItem that cuts the rate unless someone cut it within the cooldown. Nothing is read
in a loop: a caller sleeps until its slot. The pure rules are in pacing.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline.pacing import (
    PaceRules,
    PaceState,
    after_throttle,
    backlog_s,
    interval_s,
    rate_at,
)


def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.6f}"}


def _state_of(item: dict[str, Any]) -> PaceState:
    return PaceState(
        rate_rpm=float(item["rate_rpm"]["N"]),
        cut_at=float(item["cut_at"]["N"]),
        next_slot=float(item["next_slot"]["N"]),
        cut=bool(item.get("cut", {}).get("BOOL", False)),
    )


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

    def backlog(self, model_id: str) -> float:
        now = self._clock()
        return backlog_s(self._view(model_id, now), now)

    def book(self, model_id: str) -> float:
        rules = self._rules_for(model_id)
        now = self._clock()
        interval = interval_s(rate_at(self._view(model_id, now), rules, now))
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
        state = _state_of(response["Attributes"])
        slot = state.next_slot - interval
        lagged = now - rules.max_lag_s
        if slot < lagged:
            # An idle schedule: pull it up to the clock so the idle time is not spent as a burst. If
            # someone moved it meanwhile their booking stands, and this slot (in the past) goes now.
            pulled = lagged + interval
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=self._key(model_id),
                    UpdateExpression="SET next_slot = :pulled",
                    ConditionExpression="next_slot = :seen",
                    ExpressionAttributeValues={
                        ":pulled": _number(pulled),
                        ":seen": response["Attributes"]["next_slot"],
                    },
                )
                state = replace(state, next_slot=pulled)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        self._remember(model_id, state)
        return max(0.0, slot - now)

    def throttled(self, model_id: str) -> None:
        rules = self._rules_for(model_id)
        now = self._clock()
        cut = after_throttle(self._view(model_id, now), rules, now)
        if cut is None:
            return
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=self._key(model_id),
                UpdateExpression="SET rate_rpm = :rate, cut_at = :now, cut = :true, "
                "next_slot = if_not_exists(next_slot, :now)",
                # Whoever reports first in a cooldown cuts; the others' throttles were the same overshoot.
                ConditionExpression="attribute_not_exists(cut) OR cut = :false OR cut_at < :edge",
                ExpressionAttributeValues={
                    ":rate": _number(cut.rate_rpm),
                    ":now": _number(now),
                    ":edge": _number(now - rules.cooldown_s),
                    ":true": {"BOOL": True},
                    ":false": {"BOOL": False},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item = self._db.get_item(TableName=self._table, Key=self._key(model_id), ConsistentRead=True).get(
                "Item"
            )
            if item is not None:
                self._remember(model_id, _state_of(item))
            return
        self._remember(model_id, _state_of(response["Attributes"]))
