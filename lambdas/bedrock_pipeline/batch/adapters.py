"""Adapters of the batch ports: Bedrock's control plane (boto3 ``bedrock``), the batch/ files in the
prompt bucket (S3) and the registry of submitted Bedrock jobs (the jobs table, DynamoDB)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline.domain import JobRef
from bedrock_pipeline.ports import BatchJobStatus, BatchPart

_MISSING = ("404", "NoSuchKey", "NotFound")


class BedrockBatchJobs:
    """CreateModelInvocationJob / GetModelInvocationJob / ListModelInvocationJobs (InvokeModel records)."""

    def __init__(self, bedrock_client: Any) -> None:
        self._bedrock = bedrock_client

    def create_job(
        self, *, name: str, model_id: str, role_arn: str, input_uri: str, output_uri: str, token: str
    ) -> str:
        response = self._bedrock.create_model_invocation_job(
            jobName=name,
            roleArn=role_arn,
            clientRequestToken=token,
            modelId=model_id,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}},
        )
        return str(response["jobArn"])

    def get_job(self, arn: str) -> BatchJobStatus:
        return _status(self._bedrock.get_model_invocation_job(jobIdentifier=arn))

    def list_jobs(self, *, name_contains: str) -> list[BatchJobStatus]:
        arguments = {"nameContains": name_contains} if name_contains else {}
        pages = self._bedrock.get_paginator("list_model_invocation_jobs").paginate(**arguments)
        return [_status(summary) for page in pages for summary in page.get("invocationJobSummaries", [])]


def _status(job: dict[str, Any]) -> BatchJobStatus:
    def seconds(key: str) -> float | None:
        value = job.get(key)
        return value.timestamp() if value is not None else None

    def count(key: str) -> int | None:
        return int(job[key]) if job.get(key) is not None else None

    return BatchJobStatus(
        arn=str(job["jobArn"]),
        name=str(job.get("jobName", "")),
        status=str(job.get("status", "")),
        message=job.get("message"),
        submitted_at=seconds("submitTime"),
        ended_at=seconds("endTime"),
        total_records=count("totalRecordCount"),
        processed_records=count("processedRecordCount"),
        success_records=count("successRecordCount"),
        error_records=count("errorRecordCount"),
    )


class S3BatchFiles:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def put(self, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/jsonl")

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING:
                return None
            raise

    def keys(self, prefix: str) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


class DynamoBatchRegistry:
    """In the jobs table: ``BATCH#<job id>`` holds the job's parts (one attribute each), and
    ``BATCHJOB#<arn>`` the job and part behind a Bedrock job, and whether it was collected."""

    _PART = "part_"

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    def record_part(self, job: JobRef, part: BatchPart) -> None:
        body = json.dumps(asdict(part))
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"BATCH#{job.job_id}"}},
            UpdateExpression="SET #p = :p",
            ExpressionAttributeNames={"#p": f"{self._PART}{part.name}"},
            ExpressionAttributeValues={":p": {"S": body}},
        )
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"BATCHJOB#{part.arn}"}},
            UpdateExpression="SET job = :j, part = :p",
            ExpressionAttributeValues={":j": {"S": job.model_dump_json()}, ":p": {"S": body}},
        )

    def parts(self, job_id: str) -> list[BatchPart]:
        item = self._get(f"BATCH#{job_id}")
        return sorted(
            (BatchPart(**json.loads(v["S"])) for k, v in item.items() if k.startswith(self._PART)),
            key=lambda part: part.name,
        )

    def by_arn(self, arn: str) -> tuple[JobRef, BatchPart] | None:
        item = self._get(f"BATCHJOB#{arn}")
        if "job" not in item:
            return None
        return JobRef.model_validate_json(item["job"]["S"]), BatchPart(**json.loads(item["part"]["S"]))

    def collected(self, arn: str) -> bool:
        return "collected_status" in self._get(f"BATCHJOB#{arn}")

    def mark_collected(self, arn: str, *, status: str, duration_seconds: float | None) -> None:
        values: dict[str, Any] = {":s": {"S": status}}
        expression = "SET collected_status = :s"
        if duration_seconds is not None:
            values[":d"] = {"N": str(duration_seconds)}
            expression += ", duration_seconds = :d"
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"BATCHJOB#{arn}"}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
        )

    def duration_seconds(self, arn: str) -> float | None:
        value = self._get(f"BATCHJOB#{arn}").get("duration_seconds")
        return float(value["N"]) if value else None

    def _get(self, pk: str) -> dict[str, Any]:
        response = self._db.get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        return dict(response.get("Item") or {})
