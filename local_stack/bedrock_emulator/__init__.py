"""A local bedrock-runtime server that real boto3 clients talk to through endpoint_url."""

from __future__ import annotations

from local_stack.bedrock_emulator.client import EmulatorAdmin
from local_stack.bedrock_emulator.server import EmulatorServer, EmulatorState

__all__ = ["EmulatorAdmin", "EmulatorServer", "EmulatorState"]
