"""S3 adapters (the prompt bucket): prompt files in, results and cached answers out.

Each item writes its own object under a key derived from its identity, so a retried item overwrites
rather than duplicates; the finalizer merges them into one results.jsonl in line order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from bedrock_pipeline.domain import CallError, ModelResponse, ResultLine, results_prefix
from bedrock_pipeline.ports import SourceObject
from bedrock_pipeline.use_cases.fan_out import fan_out

RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"
SUMMARY_FILE = "summary.json"
_MISSING = ("404", "NoSuchKey", "NotFound")


def to_jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False, default=str) + "\n" for line in lines).encode()


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code", "") in _MISSING


class S3PromptSource:
    def __init__(self, s3_client: Any) -> None:
        self._s3 = s3_client

    def head(self, bucket: str, key: str) -> SourceObject | None:
        try:
            head = self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return SourceObject(bucket, key, head["ETag"].strip('"'), int(head["ContentLength"]))

    def read(self, source: SourceObject) -> bytes:
        # IfMatch: the very version that was checked, never one written since.
        response = self._s3.get_object(Bucket=source.bucket, Key=source.key, IfMatch=f'"{source.etag}"')
        return bytes(response["Body"].read())


class S3ResultStore:
    """results/<job id>/: per-item lines, then results.jsonl, errors.jsonl and summary.json."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_item_result(self, job_id: str, item_digest: str, line: ResultLine) -> None:
        body = json.dumps(line.to_dict(), ensure_ascii=False, default=str).encode()
        self._put(f"{results_prefix(job_id)}items/{item_digest}.json", body, "application/json")

    def item_results(self, job_id: str) -> list[ResultLine]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        # Delimiter: only the item lines, not the by-reference item bodies under items/bodies/.
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=f"{results_prefix(job_id)}items/", Delimiter="/"
        )
        for page in pages:
            keys.extend(obj["Key"] for obj in page.get("Contents", []))

        def fetch(key: str) -> ResultLine:
            return ResultLine.from_dict(
                json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            )

        lines = fan_out(keys, fetch, max_workers=16)
        return sorted(lines, key=lambda line: (line.line_number or 0, line.model_id))

    def put_results(self, job_id: str, lines: Sequence[ResultLine]) -> None:
        body = to_jsonl(line.to_dict() for line in lines)
        self._put(results_prefix(job_id) + RESULTS_FILE, body, "application/x-ndjson")

    def put_errors(self, job_id: str, errors: Sequence[Mapping[str, Any]]) -> None:
        self._put(results_prefix(job_id) + ERRORS_FILE, to_jsonl(errors), "application/x-ndjson")

    def put_summary(self, job_id: str, summary: Mapping[str, Any]) -> None:
        self._put(
            results_prefix(job_id) + SUMMARY_FILE, json.dumps(summary, indent=2).encode(), "application/json"
        )

    def get_summary(self, job_id: str) -> dict[str, Any] | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=results_prefix(job_id) + SUMMARY_FILE)["Body"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return dict(json.loads(body.read()))


class S3AnswerCache:
    """The model's answer to one work item, kept in S3 (results/<job>/responses/) the moment it arrives.

    A retry after a failure *after* the call (MLflow unreachable, a crash before the ledger mark) finds
    it and only re-records: Bedrock is never billed twice for work already done. Permanent errors are
    kept too, so a redelivery does not repeat a call that cannot succeed. S3 rather than the idempotency
    record: a response can exceed DynamoDB's 400 KB item limit.
    """

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self._bucket = bucket

    @staticmethod
    def key(job_id: str, item_digest: str) -> str:
        return f"{results_prefix(job_id)}responses/{item_digest}.json"

    def get(self, job_id: str, item_digest: str) -> ModelResponse | CallError | None:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self.key(job_id, item_digest))["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        data = json.loads(body)
        if "error" in data:
            return CallError(data["error"]["code"], data["error"]["message"])
        return ModelResponse.from_dict(data["response"])

    def put(self, job_id: str, item_digest: str, answer: ModelResponse | CallError) -> None:
        if isinstance(answer, ModelResponse):
            doc: dict[str, Any] = {"response": answer.to_dict()}
        else:
            doc = {"error": {"code": answer.code, "message": answer.message}}
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self.key(job_id, item_digest),
            Body=json.dumps(doc, ensure_ascii=False).encode(),
            ContentType="application/json",
        )
