"""Small, real image files for tests, made here (no binary fixtures in the repository)."""

from __future__ import annotations

import base64
import random

from local_stack import media_files


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid RGB PNG of one colour."""
    return media_files.png(width, height, (bytes(rgb) * width for _ in range(height)))


def b64(data: bytes) -> str:
    """What a JSON prompt file carries for media bytes."""
    return base64.b64encode(data).decode("ascii")


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of random pixels: it does not compress, so its size is ~3 bytes a pixel."""
    rng = random.Random(seed)
    return media_files.png(width, height, (rng.randbytes(3 * width) for _ in range(height)))


def pdf(pages: int = 1, text: str = "Quarterly revenue grew 12 percent.") -> bytes:
    """A small valid PDF with one line of text a page."""
    return media_files.pdf([f"{text} Page {i + 1}." for i in range(pages)])
