"""Job ledger on DynamoDB: how many items a job expects, which have ended, and who finalizes it.

Each item's end is written once (a conditional put in the same transaction as the counter update),
so a redelivered message can never count twice, and exactly one runner wins the finalization.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

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


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}}


def item_digest(item_key: str) -> str:
    return hashlib.sha256(item_key.encode()).hexdigest()[:32]


class JobLedger:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    def register(self, job: JobRef, expected: int, rejected_lines: int) -> None:
        """Create the job's counters once; a redelivered ingest leaves them as they are."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **_job_key(job.job_id),
                    "job": {"S": job.model_dump_json()},
                    "expected": {"N": str(expected)},
                    "succeeded": {"N": "0"},
                    "failed": {"N": "0"},
                    "rejected_lines": {"N": str(rejected_lines)},
                    "created_at": {"N": str(int(time.time()))},
                },
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

    def record_end(self, job_id: str, item_key: str, succeeded: bool) -> bool:
        """Mark one item ended. False if it had already ended (a duplicate delivery)."""
        counter = "succeeded" if succeeded else "failed"
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": {"S": f"ITEM#{job_id}#{item_digest(item_key)}"},
                                "item_key": {"S": item_key},
                                "status": {"S": counter},
                            },
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
        response = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"ITEM#{job_id}#{item_digest(item_key)}"}},
            ConsistentRead=True,
        )
        return "Item" in response

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

    def claim_finalization(self, job_id: str) -> bool:
        """True for exactly one caller once every item has ended (counters only grow, so check first)."""
        counts = self.counts(job_id)
        if counts is None or not counts.complete:
            return False
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_job_key(job_id),
                UpdateExpression="SET finalizing_at = :now",
                ConditionExpression="attribute_not_exists(finalizing_at)",
                ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
