"""`python -m pipeline_cli benchmark`: run a benchmark suite now against the local stack, or every N
minutes while the stack is up (the local stand-in for the EventBridge schedule).

The suite file is uploaded to the bucket's benchmarks/ prefix and the real benchmark handler is invoked
in this process with the environment a Lambda would have on the local stack, as the schedule would.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from bedrock_pipeline.benchmark import settings as bench
from bedrock_pipeline.benchmark.service import suite_key
from local_stack.config import REPO_ROOT, LocalStackConfig
from local_stack.event_pump import LambdaContext
from local_stack.resources import LocalResources, handler_environment, lookup_resources
from local_stack.running import read_pids, stack_is_up

SUITES_DIR = REPO_ROOT / "batch_prompts" / "benchmarks"
EMULATOR_SERVICE = "bedrock-emulator"


@dataclass(frozen=True)
class LocalBenchmarkTarget:
    """The local stack's endpoints and resources, as the benchmark handler would see them."""

    moto_url: str
    mlflow_url: str
    resources: LocalResources
    emulator_url: str | None = None

    @classmethod
    def from_config(cls, config: LocalStackConfig) -> LocalBenchmarkTarget:
        with_emulator = any(p.name == EMULATOR_SERVICE for p in read_pids(config.state_dir))
        return cls(
            moto_url=config.moto_url,
            mlflow_url=config.mlflow_url,
            resources=lookup_resources(config.moto_url),
            emulator_url=config.emulator_url if with_emulator else None,
        )


def suite_path(suite: str) -> Path:
    """A suite id (file stem in batch_prompts/benchmarks/, or "default") or a path to a suite file."""
    path = Path(suite)
    if path.suffix == ".jsonl" or path.exists():
        return path
    return SUITES_DIR / f"{bench.resolve_suite_id(suite)}.jsonl"


def run_once(target: LocalBenchmarkTarget, suite_file: Path, models: Sequence[str] | None) -> dict[str, Any]:
    """Upload the suite, invoke the benchmark handler as the schedule would, return its answer."""
    env = handler_environment(
        moto_url=target.moto_url,
        mlflow_url=target.mlflow_url,
        resources=target.resources,
        emulator_url=target.emulator_url,
    )
    os.environ.update(env)
    # Locally nobody reads EMF lines or JSON logs on stdout; the table below says what matters.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from handlers.benchmark import handler  # after the environment: handlers validate it at cold start

    suite_id = suite_file.name.removesuffix(".jsonl")
    s3 = boto3.client("s3", endpoint_url=target.moto_url)
    s3.put_object(Bucket=target.resources.bucket, Key=suite_key(suite_id), Body=suite_file.read_bytes())
    event: dict[str, Any] = {"suite": suite_id}
    if models:
        event["models"] = list(models)
    context = LambdaContext(
        function_name="benchmark",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:benchmark",
        memory_limit_in_mb=1024,
        aws_request_id=str(uuid.uuid4()),
        timeout_seconds=900,
    )
    result: dict[str, Any] = handler(event, context)
    return result


def format_result(result: dict[str, Any], figures: dict[str, dict[str, float]]) -> str:
    headers = ["model", "ok %", "quality", "p50 ms", "p95 ms", "tokens", "USD/100", "regression"]
    rows = []
    for model in result["models"]:
        m = figures.get(model["modelId"], {})

        def num(name: str, fmt: str, metrics: dict[str, float] = m) -> str:
            return "-" if name not in metrics else format(metrics[name], fmt)

        verdict = model["regression"]
        if model["regressedMetrics"]:
            verdict += ": " + ", ".join(model["regressedMetrics"])
        rows.append(
            [
                model["modelId"],
                "-" if "success_rate" not in m else f"{m['success_rate'] * 100:.0f}",
                num("quality_score", ".2f"),
                num("p50_latency_ms", ".0f"),
                num("p95_latency_ms", ".0f"),
                num("total_tokens", ",.0f"),
                num("cost_per_100_prompts_usd", ".6f"),
                verdict,
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" if i in (0, 7) else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*r) for r in rows)
    out = [text.rstrip() for text in out]
    return "\n".join(out)


def _figures(mlflow_url: str, result: dict[str, Any]) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    return {m["modelId"]: dict(client.get_run(m["mlflowRunId"]).data.metrics) for m in result["models"]}


def run_schedule(
    run: Callable[[], dict[str, Any]],
    *,
    every_minutes: float | None,
    stack_up: Callable[[], bool],
    max_runs: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """Run now; with `every_minutes`, again each interval while the stack is up (or `max_runs` is reached)."""
    results = [run()]
    while every_minutes is not None and (max_runs is None or len(results) < max_runs):
        deadline = clock() + every_minutes * 60
        while clock() < deadline:
            if not stack_up():
                return results
            sleep(min(1.0, max(0.0, deadline - clock())))  # short naps: notice `make down`
        if not stack_up():
            return results
        results.append(run())
    return results


def cmd_benchmark(args: argparse.Namespace) -> int:
    if getattr(args, "aws", False):
        print(
            "benchmark runs against the local stack; on AWS the EventBridge schedule runs it "
            '(or: aws lambda invoke --function-name <Benchmark function> --payload \'{"suite": "core-v1"}\')',
            file=sys.stderr,
        )
        return 2
    config = LocalStackConfig()
    if not stack_is_up(config):
        print("the local stack is not running: start it with `make up`", file=sys.stderr)
        return 2
    suite_file = suite_path(args.suite)
    if not suite_file.is_file():
        print(f"no suite file {suite_file}", file=sys.stderr)
        return 2
    target = LocalBenchmarkTarget.from_config(config)

    def once() -> dict[str, Any]:
        result = run_once(target, suite_file, args.models)
        print(
            f"\nbenchmark {result['benchmarkRunId']}: suite {result['suite']} "
            f"(content {result['suiteHash'][:12]}), {result['regressions']} regression(s)"
        )
        print(format_result(result, _figures(target.mlflow_url, result)))
        print(f"summary: {result['summary']}")
        print(f"MLflow:  {target.mlflow_url}/#/experiments/{result['experimentId']}")
        return result

    try:
        results = run_schedule(
            once,
            every_minutes=args.every,
            stack_up=lambda: stack_is_up(config),
            max_runs=args.max_runs,
        )
    except KeyboardInterrupt:
        return 130
    if args.every is not None and not stack_is_up(config):
        print("the local stack stopped: no more benchmark runs")
    return 1 if args.fail_on_regression and any(r["regressions"] for r in results) else 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `benchmark` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "benchmark",
        help="run a benchmark suite now on the local stack (or every N minutes while it is up)",
        description=(
            "Runs a suite from batch_prompts/benchmarks/ through the benchmark handler on the local stack "
            "(`make up` first), records one MLflow run per model under benchmarks/<suite>, and flags "
            "regressions against the previous runs of the same suite content."
        ),
    )
    p.add_argument(
        "--suite",
        default="default",
        help=f"suite id or path to a suite file (default: {bench.DEFAULT_SUITE})",
    )
    p.add_argument("--models", nargs="+", help="models to run on (default: the stack's DEFAULT_MODELS)")
    p.add_argument(
        "--every",
        type=float,
        metavar="N",
        help="repeat every N minutes while the local stack is up (Ctrl-C stops)",
    )
    p.add_argument("--max-runs", type=int, help="with --every: stop after this many runs")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 if any run found a regression")
    p.set_defaults(func=cmd_benchmark)
    return p
