"""Fixtures shared by the integration tests (the harness module holds them; pytest finds them here)."""

from tests.integration.harness import emulator, stack

__all__ = ["emulator", "stack"]
