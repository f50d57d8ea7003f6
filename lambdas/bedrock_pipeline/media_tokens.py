"""Input tokens of a request's images and documents, by each model family's published rule (estimate).

* Anthropic Claude (docs.claude.com, "Vision", Evaluate image size): tokens = width * height / 750; an
  image whose long edge is over 1568 px, or over ~1,600 tokens, is first scaled down (aspect kept).
* Amazon Nova (Amazon Nova User Guide, "Image understanding", Image to tokens conversion): the image is
  matched to the closest aspect ratio and resolution of a published table (900x450 ~800, 900x900
  ~1300, 1400x900 ~1800, 1800x900 ~2400, 1300x1300 ~2600); e.g. 800x400 -> 900x450 -> ~800.
* Other families publish no rule: Anthropic's is used.
* Documents: text formats (txt, md, csv, html) count as their text. A PDF counts 3,000 tokens a page,
  the top of Anthropic's 1,500-3,000 (docs.claude.com, "PDF support": text plus each page as an image).
  Other binary formats (doc, docx, xls, xlsx) are not estimated.
* Video is not estimated (no published per-frame rule for Converse).

An image whose size is not known (a header that does not say) counts as the family's largest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline.image_size import image_size
from bedrock_pipeline.media import decode_base64, media_sources
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.tokenizer import count_tokens

ANTHROPIC_PIXELS_PER_TOKEN = 750
ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX_IMAGE_TOKENS = 1600
# (long side, short side) -> tokens.
NOVA_IMAGE_TABLE = (
    ((900, 450), 800),
    ((900, 900), 1300),
    ((1400, 900), 1800),
    ((1800, 900), 2400),
    ((1300, 1300), 2600),
)
PDF_TOKENS_PER_PAGE = 3000
TEXT_DOCUMENT_FORMATS = frozenset({"txt", "md", "csv", "html"})
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True)
class MediaFacts:
    """What ingest learnt of one S3 object: its size, an image's pixels, a document's own tokens."""

    size: int
    width: int | None = None
    height: int | None = None
    document_tokens: int | None = None


def image_tokens(model_id: str, size: tuple[int, int] | None) -> int:
    """Input tokens of one image of ``size`` (width, height) on ``model_id`` (module docstring)."""
    base = PriceTable.base_model_id(model_id)
    if base.startswith("amazon.nova"):
        if size is None:
            return max(tokens for _, tokens in NOVA_IMAGE_TABLE)
        return _nova(*size)
    if size is None:
        return ANTHROPIC_MAX_IMAGE_TOKENS
    width, height = size
    scale = min(1.0, ANTHROPIC_MAX_EDGE / max(width, height, 1))
    tokens = math.ceil(width * scale * height * scale / ANTHROPIC_PIXELS_PER_TOKEN)
    return min(tokens, ANTHROPIC_MAX_IMAGE_TOKENS)


def _nova(width: int, height: int) -> int:
    long, short = max(width, height), max(1, min(width, height))
    ratio = long / short
    closest = min(abs(a / b - ratio) for (a, b), _ in NOVA_IMAGE_TABLE)
    rows = sorted(((a, b), tokens) for (a, b), tokens in NOVA_IMAGE_TABLE if abs(a / b - ratio) == closest)
    for (a, b), tokens in rows:  # the smallest resolution of that ratio the image fits in
        if long <= a and short <= b:
            return tokens
    return rows[-1][1]


def document_tokens(document_format: str, data: bytes) -> int | None:
    """Input tokens of one document's bytes (module docstring); None where there is no rule."""
    if document_format in TEXT_DOCUMENT_FORMATS:
        return count_tokens(data.decode("utf-8", errors="replace"))
    if document_format == "pdf":
        return PDF_TOKENS_PER_PAGE * max(1, len(_PDF_PAGE.findall(data)))
    return None


def request_media_tokens(
    request: Mapping[str, Any], model_id: str, facts: Mapping[str, MediaFacts] | None = None
) -> int:
    """Input tokens of every image and document of a request: inline bytes are read here, S3 objects
    from ``facts`` (what ingest read of them, by URI)."""
    total = 0
    for media in media_sources(request):
        data = _inline(media.source)
        known = _facts(media.source, facts or {})
        if media.kind == "image":
            if data is not None:
                size = image_size(data)
            else:
                size = (known.width, known.height) if known and known.width and known.height else None
            total += image_tokens(model_id, size)
        elif media.kind == "document":
            document_format = str(media.block.get("format", ""))
            if data is not None:
                total += document_tokens(document_format, data) or 0
            elif known is not None and known.document_tokens is not None:
                total += known.document_tokens
    return total


def _inline(source: Mapping[str, Any]) -> bytes | None:
    value = source.get("bytes")
    if isinstance(value, str):
        try:
            return decode_base64(value)
        except ValueError:
            return None
    return None


def _facts(source: Mapping[str, Any], facts: Mapping[str, MediaFacts]) -> MediaFacts | None:
    location = source.get("s3Location")
    uri = location.get("uri") if isinstance(location, dict) else None
    return facts.get(uri) if isinstance(uri, str) else None
