"""Soak: 1,000+ records across several files through the real handlers with faults on, then count.

    .venv/bin/python -m throughput.soak [--records 1000] [--files 5] [--throttle 0.05] [--errors 0.03]
                                        [--duplicates 60] [--no-mlflow-restart] [--postgres URI]

Starts its own moto, MLflow server (SQLite in a temp folder, or a fresh PostgreSQL database with
--postgres) and Bedrock emulator on free loopback ports; fresh resources; the event pump feeding the
ingest and runner handlers (two runner pollers). Faults: emulator throttling and 5xx at the given
rates with latency spikes, a few records on an unknown model (refused at ingest as line errors with
their reason, since ingest checks models: they are not items), one bad line per file, ``--duplicates`` work messages sent again, and the MLflow server killed and restarted once
about a third of the way through. Then it reads the ledger, the results files, MLflow and the
emulator's statistics and prints: submitted, succeeded, failed (by reason), rejected lines,
duplicates, lost, repeated model answers, time. Exit status 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

MODELS = ("amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0", "meta.llama3-1-8b-instruct-v1:0")
UNKNOWN_MODEL = "acme.unknown-model-v9:0"


def prompt_file(index: int, records: int) -> bytes:
    """One file: a job header (one model per file, rotating), ``records`` records with distinct prompts
    (1 in 50 on an unknown model: refused at ingest), and one broken line."""
    model = MODELS[index % len(MODELS)]
    lines = [json.dumps({"job": {"models": [model], "inference": {"max_tokens": 48}}})]
    for i in range(records):
        record: dict[str, Any] = {
            "id": f"f{index}-r{i}",
            "prompt": f"[soak {index}/{i}] Name a prime above {i}.",
        }
        if i % 50 == 49:
            record["model"] = UNKNOWN_MODEL
        lines.append(json.dumps(record))
        if i == records // 2:
            lines.append('{"id": "broken", "prompt": ')  # a bad line: reported, never blocks the rest
    return ("\n".join(lines) + "\n").encode()


def on_unknown_model(records: int) -> int:
    """How many of a file's ``records`` `prompt_file` puts on the unknown model."""
    return records // 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m throughput.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="records in total (default 1000)")
    parser.add_argument("--files", type=int, default=5, help="prompt files (default 5)")
    parser.add_argument("--throttle", type=float, default=0.05, help="emulator throttling rate")
    parser.add_argument("--errors", type=float, default=0.03, help="emulator 500/503 rate")
    parser.add_argument("--duplicates", type=int, default=60, help="work messages sent a second time")
    parser.add_argument("--no-mlflow-restart", action="store_true", help="keep the MLflow server up")
    parser.add_argument("--postgres", help="PostgreSQL admin URI: MLflow on a fresh database there")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args(argv)

    from local_stack.bedrock_emulator.server import EmulatorServer
    from local_stack.mlflow_server import MlflowServerOptions, start_mlflow_server
    from local_stack.processes import free_port, start_moto
    from local_stack.resources import ResourceNames, delete_resources, ensure_resources, handler_environment

    state = Path(tempfile.mkdtemp(prefix="soak-"))
    database = None
    backend = None
    if args.postgres:
        import psycopg

        database = f"mlflow_soak_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.postgres, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        backend = args.postgres.rsplit("/", 1)[0] + f"/{database}"
    print(f"soak: starting moto, MLflow and the emulator (state in {state}) ...", flush=True)
    moto = start_moto(free_port(), state / "moto.log")
    # Two workers on PostgreSQL (one per CPU of these 2-core machines, as the deployment gives one per
    # vCPU); SQLite serializes writes, one worker is enough.
    options = MlflowServerOptions(
        port=free_port(), state_dir=state / "mlflow", backend_store_uri=backend, workers=2 if backend else 1
    )
    mlflow_server = start_mlflow_server(options)
    emulator = EmulatorServer(seed=11, quiet=True).start()
    assert moto.url is not None and mlflow_server.url is not None
    resources = ensure_resources(
        moto.url,
        ResourceNames.unique("soak"),
        visibility_timeouts={"ingest": 30, "work": 30, "evaluation": 30},
        max_receive_count=10,
    )
    os.environ.update(
        handler_environment(
            moto_url=moto.url, mlflow_url=mlflow_server.url, resources=resources, emulator_url=emulator.url
        )
    )
    os.environ.update(
        {
            "RETRY_BASE_SECONDS": "2",
            "RETRY_MAX_SECONDS": "10",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }
    )
    # Every server started, the restarted one too: all are stopped at the end (none outlives the soak).
    servers = [mlflow_server]

    def restart(options: Any) -> Any:
        servers.append(start_mlflow_server(options))
        return servers[-1]

    try:
        return _soak(args, resources, emulator, mlflow_server, options, restart)
    finally:
        for server in servers:
            server.stop(grace_seconds=3)
        emulator.stop()
        delete_resources(moto.url, resources)
        moto.stop(grace_seconds=2)
        if database and args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _soak(args: Any, resources: Any, emulator: Any, mlflow_server: Any, options: Any, restart: Any) -> int:
    import boto3
    from mlflow.tracking import MlflowClient

    from bedrock_pipeline.domain import job_id_for
    from bedrock_pipeline.ledger import JobLedger
    from local_stack.event_pump import EventPump, QueueRoute
    from pipeline_cli import dlq

    emulator.configure("*", throttle_rate=args.throttle, error_rate=args.errors, latency_ms=20, jitter_ms=400)
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    ledger = JobLedger(boto3.client("dynamodb"), resources.jobs_table)
    per_file = [
        args.records // args.files + (1 if i < args.records % args.files else 0) for i in range(args.files)
    ]
    pump = EventPump(
        [
            QueueRoute(
                resources.ingest.url, "handlers.ingest.handler", batch_size=1, function_timeout_seconds=120
            ),
            QueueRoute(
                resources.work.url, "handlers.runner.handler", concurrency=2, function_timeout_seconds=300
            ),
        ]
    )
    started = time.monotonic()
    pump.start()
    jobs: list[str] = []
    for index, records in enumerate(per_file):
        key = f"incoming/soak/file-{index}.jsonl"
        etag = s3.put_object(Bucket=resources.bucket, Key=key, Body=prompt_file(index, records))["ETag"]
        jobs.append(job_id_for(key, etag.strip('"')))
    submitted = sum(per_file)
    refused = sum(on_unknown_model(records) for records in per_file)  # line errors at ingest, not items
    expected_items = submitted - refused
    print(f"soak: {args.files} files, {submitted:,} records submitted", flush=True)

    def ended() -> int:
        return sum(c.ended for c in (ledger.counts(j) for j in jobs) if c is not None)

    duplicated = 0
    restarted = args.no_mlflow_restart
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        done = ended()
        if not duplicated and args.duplicates and done >= expected_items // 10:
            copies = [m["Body"] for m in dlq.peek(sqs, resources.work.url, args.duplicates)]
            for start in range(0, len(copies), 10):
                chunk = copies[start : start + 10]
                sqs.send_message_batch(
                    QueueUrl=resources.work.url,
                    Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)],
                )
            duplicated = len(copies)
            print(f"soak: sent {duplicated} work messages a second time", flush=True)
        if not restarted and done >= expected_items // 3:
            print(f"soak: killing the MLflow server at {done:,} items ended ...", flush=True)
            mlflow_server.stop(grace_seconds=0)
            mlflow_server = restart(options)
            restarted = True
            print(
                f"soak: MLflow server back after the restart ({time.monotonic() - started:.0f} s)", flush=True
            )
        counts = [ledger.counts(j) for j in jobs]
        if all(c is not None and c.finalized for c in counts) and queue_depth(sqs, resources.work.url) == 0:
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    pump.stop()

    # --- count -------------------------------------------------------------------------------
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    lines: list[dict[str, Any]] = []
    rejected = 0
    runs_per_item: Counter[str] = Counter()
    for job_id in jobs:
        counts = ledger.counts(job_id)
        rejected += counts.rejected_lines if counts else 0
        try:
            body = s3.get_object(Bucket=resources.bucket, Key=f"results/{job_id}/results.jsonl")[
                "Body"
            ].read()
            lines.extend(json.loads(line) for line in body.decode().splitlines() if line)
        except s3.exceptions.NoSuchKey:
            pass
        for run in client.search_runs(
            experiments,
            filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
            max_results=50_000,
        ):
            runs_per_item[f"{job_id}/{run.data.tags['pipeline.item_digest']}"] += 1
    seen = Counter((line["recordId"], line["modelId"]) for line in lines)
    succeeded = sum(1 for line in lines if "error" not in line)
    failures = Counter(line["error"]["errorCode"] for line in lines if "error" in line)
    duplicate_lines = sum(n - 1 for n in seen.values() if n > 1)
    duplicate_runs = sum(n - 1 for n in runs_per_item.values() if n > 1)
    # A refused record whose line error is missing is lost too (each file also has one broken line).
    lost = expected_items - len(seen) + max(0, refused + args.files - rejected)
    stats = emulator.stats()
    in_dlq = queue_depth(sqs, resources.work.dlq_url)

    print()
    print(f"{'submitted':<26}{submitted:>8,}   in {args.files} files (+{args.files} broken lines)")
    print(f"{'refused at ingest':<26}{rejected:>8,}   line errors with their reason (unknown model, broken)")
    print(f"{'succeeded':<26}{succeeded:>8,}")
    reasons = ", ".join(f"{code}: {n}" for code, n in failures.most_common()) or "-"
    print(f"{'failed (with reason)':<26}{sum(failures.values()):>8,}   {reasons}")
    print(f"{'duplicates':<26}{duplicate_lines + duplicate_runs:>8,}   (extra result lines or MLflow runs)")
    print(f"{'lost':<26}{lost:>8,}")
    print(
        f"{'repeated model answers':<26}{stats['repeated_ok_requests']:>8,}   (emulator: same request answered twice)"
    )
    print(f"{'left in the work DLQ':<26}{in_dlq:>8,}")
    print(
        f"{'faults injected':<26}{stats['outcomes']['throttled']:>8,} throttled, {stats['outcomes']['error']:,} 5xx, "
        f"{refused} unknown-model, {duplicated} duplicated messages, "
        f"{'no' if args.no_mlflow_restart else '1'} MLflow restart"
    )
    print(f"{'time':<26}{elapsed:>8.1f} s   ({submitted / elapsed:.1f} records/s)")
    return 1 if lost or duplicate_lines or duplicate_runs else 0


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


if __name__ == "__main__":
    sys.exit(main())
