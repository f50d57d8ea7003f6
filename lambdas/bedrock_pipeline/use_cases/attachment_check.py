"""Part of ingest: every S3 object a record attaches exists, is within Bedrock's limits, and is what
its format says; what is learnt (sizes, image pixels, document tokens) feeds the estimate.

A record with an attachment that fails is a line error (results/<job>/errors.jsonl), never a call.
The limits and their sources are in attachments.py.
"""

from __future__ import annotations

from bedrock_pipeline.attachments import MAX_BYTES, MAX_IMAGE_PIXELS
from bedrock_pipeline.image_size import HEADER_BYTES, image_size
from bedrock_pipeline.media import IMAGE_SIGNATURES, is_image_of, media_sources
from bedrock_pipeline.media_tokens import MediaFacts, document_tokens
from bedrock_pipeline.ports import MediaStore
from bedrock_pipeline.prompt_file import ParsedPromptFile
from bedrock_pipeline.prompt_file.schema import LineError
from bedrock_pipeline.use_cases.fan_out import fan_out

INSPECT_CONCURRENCY = 16  # S3 HEAD/GETs at once: a file attaching many objects is checked in parallel


def check_attachments(
    store: MediaStore | None, parsed: ParsedPromptFile, *, read_documents: bool
) -> tuple[ParsedPromptFile, dict[str, MediaFacts]]:
    """``parsed`` without the items whose attachments fail (each an error of its line), and the facts
    of the ones that pass, by URI. Objects are headed (an image's first bytes read) concurrently;
    ``read_documents``: documents are read whole for their tokens (only an estimate needs them)."""
    if store is None or not parsed.items:
        return parsed, {}
    objects: dict[str, tuple[str, str]] = {}  # uri -> (kind, format)
    for item in parsed.items:
        for media in media_sources(item.request):
            location = media.source.get("s3Location")
            if isinstance(location, dict) and isinstance(location.get("uri"), str):
                objects[location["uri"]] = (media.kind, str(media.block.get("format", "")))
    if not objects:
        return parsed, {}

    def inspect(uri: str) -> tuple[MediaFacts | None, str | None]:
        kind, file_format = objects[uri]
        try:
            return _inspect(store, uri, kind, file_format, read_documents=read_documents)
        except (PermissionError, FileNotFoundError) as exc:
            return None, str(exc)

    facts: dict[str, MediaFacts] = {}
    problems: dict[str, str] = {}
    uris = list(objects)
    inspected = fan_out(uris, inspect, max_workers=INSPECT_CONCURRENCY)
    for uri, (fact, problem) in zip(uris, inspected, strict=True):
        if problem is not None:
            problems[uri] = problem
        elif fact is not None:
            facts[uri] = fact
    if not problems:
        return parsed, facts
    kept, errors = [], list(parsed.errors)
    reported: set[int] = set()
    for item in parsed.items:
        failing = [uri for uri in _uris(item.request) if uri in problems]
        if not failing:
            kept.append(item)
        elif item.line_number not in reported:
            reported.add(item.line_number)
            reason = "; ".join(f"attachment {uri}: {problems[uri]}" for uri in failing)
            errors.append(LineError(line_number=item.line_number, reason=reason))
    errors.sort(key=lambda error: error.line_number)
    return parsed.model_copy(update={"items": kept, "errors": errors}), facts


def _inspect(
    store: MediaStore, uri: str, kind: str, file_format: str, *, read_documents: bool
) -> tuple[MediaFacts | None, str | None]:
    size = store.size(uri)
    if size is None:
        return None, "does not exist"
    limit = MAX_BYTES.get(kind)
    if limit is not None and size > limit:
        return None, f"is {size:,} bytes; Bedrock's limit for a {kind} is {limit:,}"
    if size == 0:
        return None, "is empty"
    if kind == "image":
        head = store.read(uri, first_bytes=HEADER_BYTES)
        if file_format in IMAGE_SIGNATURES and not is_image_of(file_format, head):
            return None, f"is not a {file_format} image"
        pixels = image_size(head)
        if pixels is not None and max(pixels) > MAX_IMAGE_PIXELS:
            width, height = pixels
            return None, f"is {width}x{height} px; Bedrock's limit is {MAX_IMAGE_PIXELS} px a side"
        return MediaFacts(size, *(pixels or (None, None))), None
    if kind == "document" and read_documents:
        return MediaFacts(size, document_tokens=document_tokens(file_format, store.read(uri))), None
    return MediaFacts(size), None


def _uris(request: dict[str, object]) -> list[str]:
    found = []
    for media in media_sources(request):
        location = media.source.get("s3Location")
        if isinstance(location, dict) and isinstance(location.get("uri"), str):
            found.append(location["uri"])
    return found
