"""CLI: ``python -m local_stack.bedrock_emulator --port 4010 --seed 0 [--config f.json] [--quiet]``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local_stack.bedrock_emulator.server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.bedrock_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only by design)")
    parser.add_argument("--port", type=int, default=4010, help="0 picks a free port")
    parser.add_argument(
        "--seed", type=int, default=None, help="reply and fault seed (default: config's, else 0)"
    )
    parser.add_argument(
        "--config", type=Path, help='JSON {"seed": n, "models": {"*": {...}, "<model id>": {...}}}'
    )
    parser.add_argument("--quiet", action="store_true", help="no per-call log lines on stderr")
    parser.add_argument("--aws-endpoint", help="the local AWS (moto) batch jobs use for S3 and EventBridge")
    args = parser.parse_args(argv)

    config = json.loads(args.config.read_text()) if args.config else {}
    seed = args.seed if args.seed is not None else int(config.get("seed", 0))
    server = EmulatorServer(
        args.host, args.port, seed=seed, config=config, quiet=args.quiet, aws_endpoint=args.aws_endpoint
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it cannot run in the serving thread.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"bedrock emulator listening on {server.url} (seed {seed})", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
