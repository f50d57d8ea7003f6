"""A local bedrock-runtime server that real boto3 clients talk to through endpoint_url."""

from __future__ import annotations

import sys
from pathlib import Path

# The emulator counts tokens with the pipeline's tokenizer (lambdas/ is on the path in the venv and in
# pytest; this covers a bare `python -m local_stack.bedrock_emulator` from a checkout).
_LAMBDAS = str(Path(__file__).resolve().parents[2] / "lambdas")
if _LAMBDAS not in sys.path:
    sys.path.append(_LAMBDAS)

from local_stack.bedrock_emulator.client import EmulatorAdmin  # noqa: E402
from local_stack.bedrock_emulator.server import EmulatorServer, EmulatorState  # noqa: E402

__all__ = ["EmulatorAdmin", "EmulatorServer", "EmulatorState"]
