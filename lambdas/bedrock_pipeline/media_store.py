"""The `MediaStore` port on S3: the objects simple records attach (attachments.py).

Ingest heads each one (its size, Bedrock's limits) and reads an image's first bytes (its pixels) and a
document (its tokens); the runner reads one whole for a model that cannot read S3 links. IAM: the
functions read the prompt bucket's keys (stacks/pipeline.py); objects elsewhere need a grant there.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

_MISSING = ("404", "NoSuchKey", "NotFound")
_DENIED = ("403", "AccessDenied", "Forbidden")


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class S3MediaStore:
    def __init__(self, s3_client: Any) -> None:
        self._s3 = s3_client

    def size(self, uri: str) -> int | None:
        """None when the object does not exist; PermissionError when it may not be read."""
        bucket, key = split_s3_uri(uri)
        try:
            return int(self._s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                return None
            if code in _DENIED:  # a bucket the pipeline may not read: the record's problem, not a retry
                raise PermissionError(f"the pipeline may not read {uri}") from exc
            raise

    def read(self, uri: str, *, first_bytes: int | None = None) -> bytes:
        """FileNotFoundError when the object does not exist (no retry brings it back)."""
        bucket, key = split_s3_uri(uri)
        extra = {"Range": f"bytes=0-{first_bytes - 1}"} if first_bytes else {}
        try:
            return bytes(self._s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING:
                raise FileNotFoundError(f"attachment {uri} does not exist") from exc
            raise
