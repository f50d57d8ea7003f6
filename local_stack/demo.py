"""`make demo`: the whole pipeline on one machine, from prompt files to a per-model table.

Starts the local stack, uploads every file in batch_prompts/demo/, waits with a progress bar, prints
the table, stops what it started and leaves the MLflow store on disk for `make ui`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import boto3
from mlflow.tracking import MlflowClient

from bedrock_pipeline import settings
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.results import ModelSummary, format_table
from local_stack import demo_media
from local_stack.bedrock_emulator.client import EmulatorAdmin
from local_stack.config import REPO_ROOT, LocalStackConfig
from local_stack.stack import LocalStack
from pipeline_cli.follow import job_rows, submit, wait_for_jobs
from pipeline_cli.target import Target, local_target

DEMO_DIR = REPO_ROOT / "batch_prompts" / "demo"
DEMO_LATENCIES = {
    "*": {"latency_ms": 250, "jitter_ms": 150, "ms_per_output_token": 2},
    "anthropic.claude-3-haiku-20240307-v1:0": {"latency_ms": 350, "jitter_ms": 250, "ms_per_output_token": 3},
    "anthropic.claude-3-5-haiku-20241022-v1:0": {
        "latency_ms": 500,
        "jitter_ms": 300,
        "ms_per_output_token": 4,
    },
    "meta.llama3-1-8b-instruct-v1:0": {"latency_ms": 200, "jitter_ms": 100, "ms_per_output_token": 1},
}


def experiment_names(ledger: JobLedger, client: MlflowClient, job_ids: list[str]) -> list[str]:
    """The MLflow experiments the jobs wrote to, as the ledger recorded them."""
    ids = {state.job.experiment_id for state in map(ledger.state, job_ids) if state is not None}
    return sorted(client.get_experiment(experiment_id).name for experiment_id in ids)


def _prepare_attachments_and_profile(target: Target, emulator_url: str | None) -> None:
    """What demo records attach (beside them, under incoming/demo/) and the application profile they
    name: both must exist before ingest checks the files (demo_media.py)."""
    s3 = target.client("s3")
    for name, body in demo_media.demo_media().items():
        s3.put_object(Bucket=target.bucket, Key=f"{settings.INCOMING_PREFIX}demo/{name}", Body=body)
    if emulator_url:
        bedrock = boto3.client("bedrock", **{**target.client_kwargs, "endpoint_url": emulator_url})
        arn = demo_media.create_profile(bedrock, bedrock.meta.region_name)
        print(f"  application inference profile {arn}", flush=True)


def batch_saving(rows: list[ModelSummary]) -> tuple[float, float] | None:
    """What the tokens would have cost on demand and what batch mode saved; None when nothing ran in
    batch (or a model is not priced)."""
    if any(r.on_demand_cost_usd is None for r in rows):
        return None
    on_demand = sum(r.on_demand_cost_usd or 0.0 for r in rows)
    saved = on_demand - sum(r.cost_usd for r in rows)
    return (on_demand, saved) if saved > 1e-12 else None


def run_demo(files: list[Path], timeout_s: float, config: LocalStackConfig) -> int:
    target = local_target(config)
    print(f"starting the local stack (logs in {config.logs_dir}) ...", flush=True)
    started = time.monotonic()
    with LocalStack(config) as stack:
        print(f"  up in {time.monotonic() - started:.1f} s: MLflow {stack.config.mlflow_url}", flush=True)
        if stack.emulator_url:
            # Model-like latencies (ms), so the table's p50/p95 columns say something.
            EmulatorAdmin(stack.emulator_url).update_config({"models": DEMO_LATENCIES})
            # Batch jobs move through Bedrock's states in seconds here (hours on AWS).
            EmulatorAdmin(stack.emulator_url).configure_batch(state_delay_seconds=1.0)
        _prepare_attachments_and_profile(target, stack.emulator_url)
        submitted = [submit(target, path, folder="demo") for path in files]
        for s in submitted:
            print(f"  uploaded {s.path.name} -> s3://{target.bucket}/{s.key} (job {s.job_id})")
        run_started = time.monotonic()
        finished = wait_for_jobs(target, [s.job_id for s in submitted], timeout_s)
        elapsed = time.monotonic() - run_started
        rows, rejected = job_rows(target, [s.job_id for s in submitted])
        experiments = experiment_names(
            JobLedger(target.client("dynamodb"), target.jobs_table),
            MlflowClient(tracking_uri=stack.mlflow_url),
            [s.job_id for s in submitted],
        )
    print()
    print(format_table(rows))
    calls = sum(r.records for r in rows)
    print(
        f"\n{calls} model calls in {elapsed:.1f} s; {rejected} bad line(s) reported in results/<job>/errors.jsonl"
    )
    print(
        f"total cost: {sum(r.cost_usd for r in rows):.6f} USD (priced from bedrock_pipeline/data/prices.json)"
    )
    saving = batch_saving(rows)
    if saving is not None:
        on_demand, saved = saving
        print(f"on demand, the same tokens: {on_demand:.6f} USD; batch mode saved {saved:.6f} USD")
    print(f"\nMLflow tracking URI: {config.local_store_uri}")
    print(f"experiments:        {', '.join(experiments)}")
    print("see the runs:       make ui")
    if not finished:
        print(
            f"error: not every job finished within {timeout_s:.0f} s; see {config.logs_dir}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "files", nargs="*", type=Path, help="prompt files (default: batch_prompts/demo/*.jsonl)"
    )
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    files = args.files or sorted(DEMO_DIR.glob("*.jsonl"))
    return run_demo(files, args.timeout, LocalStackConfig())


if __name__ == "__main__":
    sys.exit(main())
