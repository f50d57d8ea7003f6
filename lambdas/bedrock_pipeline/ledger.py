"""Job ledger on DynamoDB: how many items a job expects, which have ended, and who finalizes it.

Each item's end is one conditional UpdateItem on one of the job's end shards (``ENDS#<job>#<n>``,
chosen by the item's digest): the digest joins the shard's set of ended items and its counter grows
in the same single-item write, conditional on the digest not being there yet. So a redelivered
message can never count twice, without a transaction (two writes, and in moto a copy of the whole
table per transaction: docs/PERFORMANCE.md). The job's totals are the sum over its shards, one
BatchGetItem; exactly one runner wins the finalization.

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
from bedrock_pipeline.domain import JobRef, item_digest
from bedrock_pipeline.ports import ItemEnd, JobCounts, JobState

# A finalizer that crashed mid-way is replaced after this long (the runner's function timeout).
FINALIZATION_LEASE_SECONDS = settings.RUNNER_TIMEOUT_SECONDS


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}}


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


# Shards per job: bounds each shard's sets (DynamoDB items top out at 400 KB: 64 shards hold about
# 700,000 ended items, 34 bytes each) while the totals stay one BatchGetItem (at most 100 keys).
END_SHARDS = 64
# The sets of ended item digests in a shard, by how the item ended (a `retryable` one is also `failed`).
_SUCCEEDED_SET, _FAILED_SET, _RETRYABLE_SET = "ok", "bad", "retryable"


def _shard_of(digest: str) -> int:
    return int(digest[:8], 16) % END_SHARDS


def _shard_key(job_id: str, shard: int) -> dict[str, Any]:
    return {"pk": {"S": f"ENDS#{job_id}#{shard}"}}


def _end_key(job_id: str, item_key: str) -> tuple[dict[str, Any], str]:
    digest = item_digest(item_key)
    return _shard_key(job_id, _shard_of(digest)), digest


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

    @property
    def dynamodb(self) -> Any:
        """The client, for the batch registry that shares this table (batch/adapters.py)."""
        return self._db

    @property
    def table(self) -> str:
        return self._table

    def register(
        self, job: JobRef, *, expected: int, rejected_lines: int, rejected_reason: str | None = None
    ) -> bool:
        """Create the job's counters once; a redelivered ingest leaves them as they are.

        True if the job's items were already enqueued (a redelivered event): one write for a new job,
        one more read only for a job seen before."""
        item: dict[str, Any] = {
            **_job_key(job.job_id),
            "job": {"S": job.model_dump_json()},
            "expected": {"N": str(expected)},
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
        else:
            return False
        item = self._db.get_item(
            TableName=self._table,
            Key=_job_key(job.job_id),
            ConsistentRead=True,
            ProjectionExpression="enqueued_at",
        ).get("Item")
        return bool(item and "enqueued_at" in item)

    def mark_enqueued(self, job_id: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(job_id),
            UpdateExpression="SET enqueued_at = :now",
            ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
        )

    def record_end(self, job_id: str, item_key: str, *, succeeded: bool, retryable: bool = False) -> bool:
        """Mark one item ended. False if it had already ended (a duplicate delivery).

        ``retryable`` marks a failure that only means "gave up retrying" (its message goes to the DLQ):
        a redrive may still run it, and `revise_end` then corrects the counters.
        """
        key, digest = _end_key(job_id, item_key)
        counter, ended_set = ("succeeded", _SUCCEEDED_SET) if succeeded else ("failed", _FAILED_SET)
        update = "ADD #c :one, #s :digests"
        if retryable:
            update += ", #r :digests"
        try:
            self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression=update,
                # contains() of a set not there yet is false: the first item of a shard passes.
                ConditionExpression="NOT contains(#ok, :digest) AND NOT contains(#bad, :digest)",
                ExpressionAttributeNames={
                    "#c": counter,
                    "#s": ended_set,
                    "#ok": _SUCCEEDED_SET,
                    "#bad": _FAILED_SET,
                    **({"#r": _RETRYABLE_SET} if retryable else {}),
                },
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":digests": {"SS": [digest]},
                    ":digest": {"S": digest},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def item_end(self, job_id: str, item_key: str) -> ItemEnd | None:
        key, digest = _end_key(job_id, item_key)
        shard = self._db.get_item(
            TableName=self._table,
            Key=key,
            ConsistentRead=True,
            ProjectionExpression="#ok, #bad, #r",
            ExpressionAttributeNames={"#ok": _SUCCEEDED_SET, "#bad": _FAILED_SET, "#r": _RETRYABLE_SET},
        ).get("Item", {})

        def holds(name: str) -> bool:
            return digest in shard.get(name, {}).get("SS", ())

        if holds(_SUCCEEDED_SET):
            return ItemEnd(succeeded=True, retryable=False)
        if holds(_FAILED_SET):
            return ItemEnd(succeeded=False, retryable=holds(_RETRYABLE_SET))
        return None

    def revise_end(self, job_id: str, item_key: str, *, succeeded: bool) -> bool:
        """A redriven item that had given up ended again: fix the counters, reopen the job's finalization.

        Only a `retryable` end can be revised, and only once per redrive (it leaves the retryable set in
        the same transaction). False when there was nothing to revise (a duplicate of the redriven
        message). Rare (DLQ redrives only), so a transaction: the job must never stay finalized over
        counters that changed beneath it.
        """
        key, digest = _end_key(job_id, item_key)
        names = {"#r": _RETRYABLE_SET}
        values: dict[str, Any] = {":digests": {"SS": [digest]}, ":digest": {"S": digest}}
        update = "DELETE #r :digests"
        if succeeded:
            update = "ADD #ok :digests, succeeded :one, failed :minus DELETE #r :digests, #bad :digests"
            names |= {"#ok": _SUCCEEDED_SET, "#bad": _FAILED_SET}
            values |= {":one": {"N": "1"}, ":minus": {"N": "-1"}}
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": key,
                            "UpdateExpression": update,
                            "ConditionExpression": "contains(#r, :digest)",
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _job_key(job_id),
                            "UpdateExpression": "REMOVE finalizing_at, finalized_at",
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

    def count_retry(self, job_id: str) -> None:
        """One ADD on the job's item, made only by attempts after an item's first: never on the happy path."""
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(job_id),
            UpdateExpression="ADD retries :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

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
        """The job's counters (None for a job never registered)."""
        state = self.state(job_id)
        return state.counts if state is not None else None

    def state(self, job_id: str) -> JobState | None:
        """The job's item and its shards' counters, read consistently in one BatchGetItem."""
        keys = [_job_key(job_id), *(_shard_key(job_id, n) for n in range(END_SHARDS))]
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            self._table: {
                "Keys": keys,
                "ConsistentRead": True,
                "ProjectionExpression": "pk, job, expected, rejected_lines, rejected_reason, finalized_at, "
                "succeeded, failed, retries",
            }
        }
        while request:
            response = self._db.batch_get_item(RequestItems=request)
            items += response.get("Responses", {}).get(self._table, [])
            request = response.get("UnprocessedKeys") or {}
        job = next((i for i in items if i["pk"]["S"] == _job_key(job_id)["pk"]["S"]), None)
        if job is None:
            return None
        shards = [i for i in items if i is not job]
        counts = JobCounts(
            expected=int(job["expected"]["N"]),
            succeeded=sum(int(i.get("succeeded", {"N": "0"})["N"]) for i in shards),
            failed=sum(int(i.get("failed", {"N": "0"})["N"]) for i in shards),
            rejected_lines=int(job.get("rejected_lines", {"N": "0"})["N"]),
            finalized="finalized_at" in job,
            retries=int(job.get("retries", {"N": "0"})["N"]),
        )
        return JobState(
            job=JobRef.model_validate_json(job["job"]["S"]),
            counts=counts,
            rejected_reason=job["rejected_reason"]["S"] if "rejected_reason" in job else None,
        )

    def mark_finalized(self, job_id: str) -> None:
        """Results, summary and parent run are written: the job is done for readers."""
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(job_id),
            UpdateExpression="SET finalized_at = :now",
            ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
        )

    def claim_finalization(
        self, job_id: str, lease_seconds: int = FINALIZATION_LEASE_SECONDS
    ) -> JobState | None:
        """The job for exactly one caller once every item has ended (counters only grow, so check first);
        None for every other caller. The state read for the check is all the finalizer needs.

        A claim older than ``lease_seconds`` (its holder crashed mid-way) may be taken over.
        """
        state = self.state(job_id)
        if state is None or not state.counts.complete or state.counts.finalized:
            return None
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
                return None
            raise
        return state

    def release_finalization(self, job_id: str) -> None:
        """Finalizing failed (MLflow unreachable): let the next runner try instead of waiting out the lease."""
        self._db.update_item(
            TableName=self._table, Key=_job_key(job_id), UpdateExpression="REMOVE finalizing_at"
        )
