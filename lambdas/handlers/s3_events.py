"""S3 event notifications as they arrive in SQS message bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from bedrock_pipeline import settings


class MalformedEvent(ValueError):
    """A message body that is not an S3 notification: no retry can fix it (it goes to the DLQ)."""


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    etag: str | None  # the version the event announced, when S3 sent one


def object_refs_in_message(body: str) -> list[ObjectRef]:
    """Every object-created record under incoming/ in one SQS message body.

    Keys arrive URL-encoded ("incoming%2Fa+b.jsonl"); a new notification configuration first sends an
    `s3:TestEvent`, which carries no records and yields nothing. Anything that is not an S3
    notification raises MalformedEvent (never another exception).
    """
    try:
        message: Any = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedEvent(f"body is a JSON {type(message).__name__}, not an S3 notification")
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedEvent('body has no "Records" list: not an S3 notification')
    objects = []
    for index, record in enumerate(records):
        try:
            if not str(record.get("eventName", "")).startswith("ObjectCreated"):
                continue
            bucket = record["s3"]["bucket"]["name"]
            s3_object = record["s3"]["object"]
            raw_key = s3_object["key"]
            etag = s3_object.get("eTag")
        except (AttributeError, KeyError, TypeError) as exc:
            raise MalformedEvent(f"record {index} lacks s3.bucket.name or s3.object.key ({exc!r})") from None
        if not isinstance(bucket, str) or not isinstance(raw_key, str) or not bucket:
            raise MalformedEvent(f"record {index}: bucket and key must be strings")
        key = unquote_plus(raw_key)
        if key.startswith(settings.INCOMING_PREFIX) and not key.endswith("/"):
            objects.append(ObjectRef(bucket, key, etag if isinstance(etag, str) and etag else None))
    return objects


def objects_in_message(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of every object-created record under incoming/ in one SQS message body."""
    return [(ref.bucket, ref.key) for ref in object_refs_in_message(body)]
