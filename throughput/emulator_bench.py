"""Sequential boto3 throughput against the Bedrock emulator (Converse and ConverseStream).

    .venv/bin/python -m throughput.emulator_bench [--calls 500] [--url http://127.0.0.1:4010] [--in-process]

Without --url it starts the emulator CLI in a child process on a free loopback port (so client and
server do not share a GIL, as in the local stack), measures, and stops it. Zero configured latency:
the figures are the protocol and framework overhead per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

MODEL_ID = "amazon.nova-lite-v1:0"


@contextmanager
def _emulator(url: str | None, in_process: bool) -> Iterator[str]:
    if url:
        yield url
        return
    if in_process:
        from local_stack.bedrock_emulator import EmulatorServer

        with EmulatorServer(quiet=True) as server:
            yield server.url
        return
    from throughput.services import emulator  # the CLI in a child process, as make throughput starts it

    with emulator(latency_ms=0.0) as child_url:
        yield child_url


def _measure(name: str, calls: int, call: Callable[[int], Any]) -> dict[str, float]:
    for i in range(min(20, calls)):  # warm-up: connection pool, imports, tokenizer
        call(-i - 1)
    durations = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        durations.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    result = {
        "calls_per_s": calls / elapsed,
        "ms_per_call": elapsed * 1000 / calls,
        "p50_ms": statistics.median(durations),
        "p95_ms": statistics.quantiles(durations, n=20)[-1],
    }
    print(
        f"{name:16s} {calls:6d} calls  {result['calls_per_s']:8.1f} calls/s"
        f"  {result['ms_per_call']:6.2f} ms/call"
        f"  p50 {result['p50_ms']:.2f} ms  p95 {result['p95_ms']:.2f} ms"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--url", help="an emulator that is already running")
    parser.add_argument("--in-process", action="store_true", help="run the emulator in this process")
    args = parser.parse_args(argv)

    with _emulator(args.url, args.in_process) as url:
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"total_max_attempts": 1}),
        )

        def converse(i: int) -> Any:
            return client.converse(
                modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": f"q {i}"}]}]
            )

        def converse_stream(i: int) -> Any:
            response = client.converse_stream(
                modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": f"q {i}"}]}]
            )
            return list(response["stream"])

        print(f"Bedrock emulator at {url}, sequential boto3 calls, zero configured latency")
        _measure("converse", args.calls, converse)
        _measure("converse_stream", args.calls, converse_stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
