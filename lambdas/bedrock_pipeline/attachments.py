"""Attachments of simple records: files in S3 sent to the model as image, document or video blocks.

A simple record's ``attachments`` is a list of ``{"s3": "s3://bucket/key"}`` or ``{"path": "..."}``
(relative to the prompt file's folder in its bucket). Each becomes a content block whose format comes
from the file's extension and whose source is an ``s3Location`` (botocore's ImageSource, DocumentSource
and VideoSource all have one): the work item stays small and its identity stable. At call time
(`with_s3_media_inlined`) the object is read and sent as bytes to a model that cannot read S3 links.

Rules, each from Bedrock's documentation:

* S3 links: "Amazon S3 links for multimedia" is Yes only for Amazon Nova Premier, Pro and Lite (User
  Guide, "Supported models and model features" of the Converse API); as of 2026-04 only Nova models
  accept an S3 source (aws/aws-sdk-js-v3#7732). Other families answer ValidationException
  "...source.type: Field required". Bedrock reads the object with the caller's credentials; a bucket of
  another account needs ``bucketOwner`` (API reference, S3Location), which attachments do not set.
* Limits (API reference, Message.content): up to 20 images of at most 3.75 MB and 8000x8000 px each, up
  to five documents of at most 4.5 MB each. Video: one per request, 1 GB by S3 link (Amazon Nova User
  Guide, "Multimodal support": video, Amazon S3 URI, 1 GB, 1 object).
* Formats: botocore's bedrock-runtime model, ImageFormat, DocumentFormat and VideoFormat enums.

Plain Python: the parser (ingest) and `run_item` (runner) both import it.
"""

from __future__ import annotations

import base64
import copy
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

from bedrock_pipeline.media import media_sources
from bedrock_pipeline.pricing import PriceTable

# Extension -> (block kind, Bedrock format).
FORMATS: dict[str, tuple[str, str]] = {
    **{ext: ("image", ext) for ext in ("png", "gif", "webp", "jpeg")},
    "jpg": ("image", "jpeg"),
    **{ext: ("document", ext) for ext in ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md")},
    "htm": ("document", "html"),
    **{ext: ("video", ext) for ext in ("mkv", "mov", "mp4", "webm", "flv", "mpeg", "mpg", "wmv")},
    "3gp": ("video", "three_gp"),
}
MAX_PER_REQUEST = {"image": 20, "document": 5, "video": 1}
MAX_BYTES = {
    # Read as MiB so nothing Bedrock would take is refused here.
    "image": int(3.75 * 1024 * 1024),
    "document": int(4.5 * 1024 * 1024),
    "video": 1024**3,
}
MAX_IMAGE_PIXELS = 8000  # per side
# S3Location.uri (API reference): pattern and length.
_S3_URI = re.compile(r"^s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?$")
_MAX_URI_CHARS = 1024
# DocumentBlock.name: 1-200 characters; Bedrock allows letters, digits, single spaces, hyphens,
# parentheses and square brackets (API reference, DocumentBlock).
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\-\(\)\[\] ]+")
S3_LINK_MODEL_PREFIXES = ("amazon.nova-premier", "amazon.nova-pro", "amazon.nova-lite")


class AttachmentError(ValueError):
    """Why an attachment cannot be sent (the parser reports it as the line's error)."""


def attachment_uri(reference: Mapping[str, str], source_uri: str | None) -> str:
    """The s3:// URI an attachment names; ``source_uri`` is the prompt file's (for ``path``)."""
    if "s3" in reference:
        uri = reference["s3"]
    else:
        path = reference["path"]
        if source_uri is None:
            raise AttachmentError(f'"path" {path!r} needs the prompt file\'s S3 location: use "s3" here')
        if path.startswith("/") or ".." in path.split("/") or not path.strip("/"):
            raise AttachmentError(f'"path" {path!r} must be relative, inside the prompt file\'s folder')
        folder = source_uri.rsplit("/", 1)[0]
        uri = f"{folder}/{posixpath.normpath(path)}"
    if len(uri) > _MAX_URI_CHARS or not _S3_URI.match(uri) or "/" not in uri.removeprefix("s3://"):
        raise AttachmentError(f"{uri!r} is not an S3 object URI (s3://bucket/key)")
    return uri


def content_block(uri: str) -> dict[str, Any]:
    """The Converse content block for the object at ``uri``, by its extension."""
    name = uri.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in FORMATS:
        raise AttachmentError(
            f"{uri}: cannot tell the format from the extension {extension!r}; one of {sorted(FORMATS)}"
        )
    kind, file_format = FORMATS[extension]
    block: dict[str, Any] = {"format": file_format, "source": {"s3Location": {"uri": uri}}}
    if kind == "document":
        stem = name.rsplit(".", 1)[0]
        block["name"] = re.sub(r" +", " ", _NAME_UNSAFE.sub(" ", stem)).strip()[:200] or "document"
    return {kind: block}


def is_attachment_key(key: str) -> bool:
    """Whether an object's name is an attachment format's (not a prompt file: ingest skips it)."""
    name = key.rsplit("/", 1)[-1]
    return "." in name and name.rsplit(".", 1)[-1].lower() in FORMATS


def check_counts(request: Mapping[str, Any]) -> None:
    """Bedrock's limits on media per request (module docstring)."""
    counts = dict.fromkeys(MAX_PER_REQUEST, 0)
    for media in media_sources(request):
        if media.kind in counts:
            counts[media.kind] += 1
    for kind, count in counts.items():
        if count > MAX_PER_REQUEST[kind]:
            raise AttachmentError(
                f"{count} {kind}s in one request; Bedrock's limit is {MAX_PER_REQUEST[kind]}"
            )


def s3_locations(request: Mapping[str, Any]) -> dict[str, str]:
    """URI -> media kind of every s3Location source in a request."""
    found: dict[str, str] = {}
    for media in media_sources(request):
        location = media.source.get("s3Location")
        if isinstance(location, dict) and isinstance(location.get("uri"), str):
            found[location["uri"]] = media.kind
    return found


def reads_s3_links(model_id: str) -> bool:
    """Whether Converse takes an s3Location source for this foundation model (module docstring)."""
    return PriceTable.base_model_id(model_id).startswith(S3_LINK_MODEL_PREFIXES)


def with_s3_media_inlined(
    request: Mapping[str, Any], model_id: str, read: Callable[[str], bytes]
) -> Mapping[str, Any]:
    """The request as ``model_id`` takes it: s3Location sources read (``read(uri)``) into base64 bytes
    for a model that cannot read S3 links; otherwise the request as it is (not copied)."""
    if reads_s3_links(model_id) or not s3_locations(request):
        return request
    inlined = copy.deepcopy(dict(request))
    for media in media_sources(inlined):
        location = media.source.get("s3Location")
        if isinstance(location, dict) and isinstance(location.get("uri"), str):
            media.source.clear()
            # base64, as everywhere before the Bedrock adapter (media.py says why).
            media.source["bytes"] = base64.b64encode(read(location["uri"])).decode("ascii")
    return inlined
