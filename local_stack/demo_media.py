"""What `make demo` puts beside its prompt files for records to attach, and the application inference
profile it creates: made here, so the repository holds no binary files.

* ``media/chart.png``: a 480x320 bar chart (four bars), a real PNG.
* ``media/report.pdf``: a two-page PDF with one line of text a page.
* The profile ``demo-support-team`` copies Claude 3 Haiku on the emulator's control plane
  (CreateInferenceProfile); its ARN is known beforehand (the emulator's ids come from the name).
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from typing import Any

from local_stack.bedrock_emulator.catalog import ACCOUNT_ID
from local_stack.bedrock_emulator.profiles import application_profile_id

MEDIA_FOLDER = "media"
PROFILE_NAME = "demo-support-team"
PROFILE_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def profile_arn(region: str) -> str:
    return f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:application-inference-profile/{application_profile_id(PROFILE_NAME)}"


def create_profile(bedrock_client: Any, region: str) -> str:
    """Create the demo profile (again after a restart: the emulator forgets; a live one is kept)."""
    source = f"arn:aws:bedrock:{region}::foundation-model/{PROFILE_MODEL}"
    with contextlib.suppress(bedrock_client.exceptions.ConflictException):  # there: same name, same ARN
        bedrock_client.create_inference_profile(
            inferenceProfileName=PROFILE_NAME, modelSource={"copyFrom": source}
        )
    return profile_arn(region)


def chart_png(width: int = 480, height: int = 320) -> bytes:
    bars = [(0.35, (200, 60, 60)), (0.6, (60, 140, 200)), (0.8, (80, 170, 90)), (0.5, (230, 170, 40))]
    slot = width // len(bars)
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0
        for x in range(width):
            share, colour = bars[min(x // slot, len(bars) - 1)]
            inside = slot // 5 < x % slot < slot - slot // 5 and y >= height * (1 - share)
            row += bytes(colour if inside else (250, 250, 250))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    header = struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def report_pdf() -> bytes:
    lines = [
        "Q3 report: revenue grew 12 percent, driven by the support plan.",
        "Q4 outlook: flat costs, 8 percent growth.",
    ]
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>"]
    for i, line in enumerate(lines):
        content = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R /Resources "
            "<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return body + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def demo_media() -> dict[str, bytes]:
    """Name (under the demo folder) -> bytes of every file the demo's records may attach."""
    return {f"{MEDIA_FOLDER}/chart.png": chart_png(), f"{MEDIA_FOLDER}/report.pdf": report_pdf()}
