"""What `make demo` puts beside its prompt files for records to attach, and the application inference
profile it creates: made here, so the repository holds no binary files.

* ``media/chart.png``: a 480x320 bar chart (four bars), a real PNG.
* ``media/report.pdf``: a two-page PDF with one line of text a page.
* The profile ``demo-support-team`` copies Claude 3 Haiku on the emulator's control plane
  (CreateInferenceProfile); its ARN is known beforehand (the emulator's ids come from the name).
"""

from __future__ import annotations

import contextlib
from typing import Any

from local_stack import media_files
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

    def row(y: int) -> bytes:
        pixels = bytearray()
        for x in range(width):
            share, colour = bars[min(x // slot, len(bars) - 1)]
            inside = slot // 5 < x % slot < slot - slot // 5 and y >= height * (1 - share)
            pixels += bytes(colour if inside else (250, 250, 250))
        return bytes(pixels)

    return media_files.png(width, height, (row(y) for y in range(height)))


def report_pdf() -> bytes:
    return media_files.pdf(
        [
            "Q3 report: revenue grew 12 percent, driven by the support plan.",
            "Q4 outlook: flat costs, 8 percent growth.",
        ]
    )


def demo_media() -> dict[str, bytes]:
    """Name (under the demo folder) -> bytes of every file the demo's records may attach."""
    return {f"{MEDIA_FOLDER}/chart.png": chart_png(), f"{MEDIA_FOLDER}/report.pdf": report_pdf()}
