"""Job ledger on DynamoDB: how many items a job expects, which have ended, and who finalizes it.

Each item's end is written once (a conditional put in the same transaction as the counter update),
so a redelivered message can never count twice, and exactly one runner wins the finalization.

Beside the counters it keeps what reliability needs (docs/RELIABILITY.md): per item an attempt counter
(a retry looks for the run an earlier attempt created instead of making a second one), and per message
body the last failure reason, which `dlq inspect` shows (SQS cannot change a message's attributes on
redrive, so the reason lives here, keyed by what survives a redrive: the body).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline import settings
from bedrock_pipeline.jobs import JobRef


@dataclass(frozen=True)
class JobCounts:
    expected: int
    succeeded: int
    failed: int
    rejected_lines: int
    finalized: bool

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed

    @property
    def complete(self) -> bool:
        return self.ended >= self.expected


# A finalizer that crashed mid-way is replaced after this long (the runner's function timeout).
FINALIZATION_LEASE_SECONDS = settings.RUNNER_TIMEOUT_SECONDS


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}}


def item_digest(item_key: str) -> str:
    return hashlib.sha256(item_key.encode()).hexdigest()[:32]


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _item_key(job_id: str, item_key: str) -> dict[str, Any]:
    return {"pk": {"S": f"ITEM#{job_id}#{item_digest(item_key)}"}}


@dataclass(frozen=True)
class ItemEnd:
    """How an item ended. `retryable`: it gave up after its last receive; a DLQ redrive may run it again."""

    succeeded: bool
    retryable: bool


@dataclass(frozen=True)
class FailureNote:
    reason: str
    receive_count: int
    updated_at: int
    job_id: str | None = None
    item_key: str | None = None


class JobLedger:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    def register(
        self, job: JobRef, expected: int, rejected_lines: int, rejected_reason: str | None = None
    ) -> None:
        """Create the job's counters once; a redelivered ingest leaves them as they are."""
        item: dict[str, Any] = {
            **_job_key(job.job_id),
            "job": {"S": job.model_dump_json()},
            "expected": {"N": str(expected)},
            "succeeded": {"N": "0"},
            "failed": {"N": "0"},
            "rejected_lines": {"N": str(rejected_lines)},
            "created_at": {"N": str(int(time.time()))},
        }
        if rejected_reason:
            item["rejected_reason"] = {"S": rejected_reason[:4000]}
        try:
            self._db.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def is_enqueued(self, job_id: str) -> bool:
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        return bool(item and "enqueued_at" in item)

    def mark_enqueued(self, job_id: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(job_id),
            UpdateExpression="SET enqueued_at = :now",
            ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
        )

    def record_end(self, job_id: str, item_key: str, succeeded: bool, *, retryable: bool = False) -> bool:
        """Mark one item ended. False if it had already ended (a duplicate delivery).

        ``retryable`` marks a failure that only means "gave up retrying" (its message goes to the DLQ):
        a redrive may still run it, and `revise_end` then corrects the counters.
        """
        counter = "succeeded" if succeeded else "failed"
        item: dict[str, Any] = {
            **_item_key(job_id, item_key),
            "item_key": {"S": item_key},
            "status": {"S": counter},
        }
        if retryable:
            item["retryable"] = {"BOOL": True}
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _job_key(job_id),
                            "UpdateExpression": "ADD #c :one",
                            "ExpressionAttributeNames": {"#c": counter},
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
            raise
        return True

    def has_ended(self, job_id: str, item_key: str) -> bool:
        return self.item_end(job_id, item_key) is not None

    def item_end(self, job_id: str, item_key: str) -> ItemEnd | None:
        item = self._db.get_item(
            TableName=self._table, Key=_item_key(job_id, item_key), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return ItemEnd(
            succeeded=item["status"]["S"] == "succeeded",
            retryable=bool(item.get("retryable", {}).get("BOOL", False)),
        )

    def revise_end(self, job_id: str, item_key: str, succeeded: bool) -> bool:
        """A redriven item that had given up ended again: fix the counters, reopen the job's finalization.

        Only a `retryable` end can be revised, and only once per redrive (the flag is removed in the
        same transaction). False when there was nothing to revise (a duplicate of the redriven message).
        """
        job_update: dict[str, Any] = {
            "TableName": self._table,
            "Key": _job_key(job_id),
            "UpdateExpression": "REMOVE finalizing_at, finalized_at",
        }
        if succeeded:
            job_update["UpdateExpression"] = (
                "ADD succeeded :one, failed :minus REMOVE finalizing_at, finalized_at"
            )
            job_update["ExpressionAttributeValues"] = {":one": {"N": "1"}, ":minus": {"N": "-1"}}
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _item_key(job_id, item_key),
                            "UpdateExpression": "SET #s = :status REMOVE retryable",
                            "ConditionExpression": "retryable = :yes",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": {
                                ":status": {"S": "succeeded" if succeeded else "failed"},
                                ":yes": {"BOOL": True},
                            },
                        }
                    },
                    {"Update": job_update},
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
            raise
        return True

    # --- attempts and failure reasons ------------------------------------------------------
    def begin_attempt(self, job_id: str, item_key: str) -> int:
        """Count one attempt at an item (any delivery of any message for it); returns this attempt's number.

        Written before the item's run is created, so an attempt number above 1 means an earlier
        attempt may have left a run (and a cached model response) behind.
        """
        response = self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"TRY#{job_id}#{item_digest(item_key)}"}},
            UpdateExpression="ADD attempts :one SET item_key = :key",
            ExpressionAttributeValues={":one": {"N": "1"}, ":key": {"S": item_key}},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["attempts"]["N"])

    def note_failure(
        self,
        body: str,
        reason: str,
        receive_count: int,
        *,
        job_id: str | None = None,
        item_key: str | None = None,
    ) -> None:
        """The last failure of a message, keyed by its body (the one thing a redrive keeps)."""
        values: dict[str, Any] = {
            ":reason": {"S": reason[:4000]},
            ":count": {"N": str(receive_count)},
            ":now": {"N": str(int(time.time()))},
        }
        expression = "SET reason = :reason, receive_count = :count, updated_at = :now"
        if job_id:
            expression += ", job_id = :job"
            values[":job"] = {"S": job_id}
        if item_key:
            expression += ", item_key = :item"
            values[":item"] = {"S": item_key}
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"FAILURE#{body_digest(body)}"}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
        )

    def failure(self, body: str) -> FailureNote | None:
        item = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": f"FAILURE#{body_digest(body)}"}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return FailureNote(
            reason=item["reason"]["S"],
            receive_count=int(item["receive_count"]["N"]),
            updated_at=int(item["updated_at"]["N"]),
            job_id=item.get("job_id", {}).get("S"),
            item_key=item.get("item_key", {}).get("S"),
        )

    def counts(self, job_id: str) -> JobCounts | None:
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return JobCounts(
            expected=int(item["expected"]["N"]),
            succeeded=int(item["succeeded"]["N"]),
            failed=int(item["failed"]["N"]),
            rejected_lines=int(item.get("rejected_lines", {"N": "0"})["N"]),
            finalized="finalized_at" in item,
        )

    def rejection(self, job_id: str) -> str | None:
        """Why the whole file was rejected, if it was."""
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        return item["rejected_reason"]["S"] if item and "rejected_reason" in item else None

    def job(self, job_id: str) -> JobRef | None:
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        return JobRef.model_validate_json(item["job"]["S"]) if item else None

    def mark_finalized(self, job_id: str) -> None:
        """Results, summary and parent run are written: the job is done for readers."""
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(job_id),
            UpdateExpression="SET finalized_at = :now",
            ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
        )

    def claim_finalization(self, job_id: str, lease_seconds: int = FINALIZATION_LEASE_SECONDS) -> bool:
        """True for exactly one caller once every item has ended (counters only grow, so check first).

        A claim older than ``lease_seconds`` (its holder crashed mid-way) may be taken over.
        """
        counts = self.counts(job_id)
        if counts is None or not counts.complete or counts.finalized:
            return False
        now = int(time.time())
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_job_key(job_id),
                UpdateExpression="SET finalizing_at = :now",
                ConditionExpression="attribute_not_exists(finalizing_at) OR finalizing_at < :stale",
                ExpressionAttributeValues={
                    ":now": {"N": str(now)},
                    ":stale": {"N": str(now - lease_seconds)},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_finalization(self, job_id: str) -> None:
        """Finalizing failed (MLflow unreachable): let the next runner try instead of waiting out the lease."""
        self._db.update_item(
            TableName=self._table, Key=_job_key(job_id), UpdateExpression="REMOVE finalizing_at"
        )
