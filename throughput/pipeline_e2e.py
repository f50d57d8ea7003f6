"""(c) The pipeline end to end: a prompt file uploaded to the bucket until its last run is recorded.

    python -m throughput.pipeline_e2e --tracking-uri URL --emulator-url URL --moto-url URL --access-log PATH

The deployed handlers (handlers.ingest, handlers.runner) run in this process behind the event pump,
with Lambda's settings: the work queue's batch size and ``max_concurrency``
(settings.WORK_MAX_CONCURRENCY) as concurrent pollers. Completion is read from the job ledger. A
small warm-up file goes first, so the figure is the warm pipeline (cold starts are measured apart).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from throughput.access_log import AccessLog
from throughput.phase import emit_result, phase_parser

MODEL_ID = "amazon.nova-lite-v1:0"


def prompt_file(records: int, experiment: str) -> bytes:
    lines = [json.dumps({"job": {"models": [MODEL_ID], "experiment": experiment}})]
    lines += [
        json.dumps(
            {"id": f"q{index:05d}", "prompt": f"Question {index}: what is {index} + 1?", "max_tokens": 64}
        )
        for index in range(records)
    ]
    return ("\n".join(lines) + "\n").encode()


def measure(
    tracking_uri: str,
    emulator_url: str,
    moto_url: str,
    access_log: Path,
    *,
    prompts: int,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    from bedrock_pipeline import settings
    from bedrock_pipeline.domain import job_id_for
    from bedrock_pipeline.ledger import JobLedger
    from local_stack.event_pump import EventPump, default_routes
    from local_stack.resources import ResourceNames, aws_client, ensure_resources, handler_environment

    resources = ensure_resources(moto_url, ResourceNames.unique("bench"))
    os.environ.update(
        handler_environment(
            moto_url=moto_url,
            mlflow_url=tracking_uri,
            resources=resources,
            emulator_url=emulator_url,
            default_models=[MODEL_ID],
        )
    )
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # one JSON line per item otherwise
    # moto answers some concurrent TransactWriteItems with a 500 (docs/PERFORMANCE.md); the item comes
    # back after the runner's backoff (20 s base by default), which would measure moto, not the pipeline.
    os.environ.setdefault("RETRY_BASE_SECONDS", "1")
    routes = [
        dataclasses.replace(route, concurrency=concurrency)
        if route.queue_url == resources.work.url
        else route
        for route in default_routes(resources, wait_time_seconds=1)
    ]
    s3 = aws_client("s3", moto_url)
    ledger = JobLedger(aws_client("dynamodb", moto_url), resources.jobs_table)

    def run_job(key: str, records: int) -> dict[str, float]:
        started = time.perf_counter()
        etag = s3.put_object(Bucket=resources.bucket, Key=key, Body=prompt_file(records, f"bench/{key}"))[
            "ETag"
        ]
        job_id = job_id_for(key, etag.strip('"'))
        ended_at = None
        deadline = started + timeout
        while time.perf_counter() < deadline:
            counts = ledger.counts(job_id)
            if counts is not None and counts.complete and ended_at is None:
                ended_at = time.perf_counter()
            if counts is not None and counts.finalized:
                return {
                    "all_ended_s": (ended_at or time.perf_counter()) - started,
                    "finalized_s": time.perf_counter() - started,
                    "succeeded": counts.succeeded,
                    "failed": counts.failed,
                }
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} did not finish in {timeout} s: {ledger.counts(job_id)}")

    pump = EventPump(routes, endpoint_url=moto_url)
    pump.start()
    try:
        warmup_prompts = 2 * concurrency
        warm = run_job(f"{settings.INCOMING_PREFIX}bench/warmup-{time.time_ns()}.jsonl", warmup_prompts)
        log = AccessLog(access_log)
        offset = log.mark()
        job = run_job(f"{settings.INCOMING_PREFIX}bench/prompts-{time.time_ns()}.jsonl", prompts)
        counts = log.settled_since(offset)
    finally:
        pump.stop(timeout=60)
    return {
        "name": "pipeline",
        "prompts": prompts,
        "work_concurrency": concurrency,
        "runner_item_concurrency": settings.RUNNER_ITEM_CONCURRENCY,
        "batch_size": settings.WORK_BATCH_SIZE,
        "warmup_seconds": round(warm["finalized_s"], 2),
        "seconds_to_last_run": round(job["all_ended_s"], 2),
        "seconds_to_finalized": round(job["finalized_s"], 2),
        "prompts_per_s": prompts / job["all_ended_s"],
        "records_in_phase": warmup_prompts + prompts,
        "succeeded": job["succeeded"],
        "failed": job["failed"],
        **counts.summary(15),
        "pump": dataclasses.asdict(pump.counters),
    }


def main() -> None:
    from bedrock_pipeline import settings

    parser = phase_parser(__doc__)
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=settings.WORK_MAX_CONCURRENCY)
    parser.add_argument("--timeout", type=float, default=500.0)
    args = parser.parse_args()
    emit_result(
        measure(
            args.tracking_uri,
            args.emulator_url,
            args.moto_url,
            args.access_log,
            prompts=args.prompts,
            concurrency=args.concurrency,
            timeout=args.timeout,
        )
    )


if __name__ == "__main__":
    main()
