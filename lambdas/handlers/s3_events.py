"""S3 event notifications as they arrive in SQS message bodies."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from bedrock_pipeline import settings


def objects_in_message(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of every object-created record under incoming/ in one SQS message body.

    Keys arrive URL-encoded ("incoming%2Fa+b.jsonl"); a new notification configuration first sends an
    `s3:TestEvent`, which carries no records and yields nothing.
    """
    message: dict[str, Any] = json.loads(body)
    if message.get("Event") == "s3:TestEvent":
        return []
    objects = []
    for record in message.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        if key.startswith(settings.INCOMING_PREFIX) and not key.endswith("/"):
            objects.append((bucket, key))
    return objects
