"""(d) The batch collector: records recorded per second from a finished Bedrock batch job (issue 20).

    python -m throughput.batch_collector --tracking-uri URL --emulator-url URL --moto-url URL --access-log PATH

A batch-mode prompt file (``--records``, default 10,000, one model) is submitted as a Bedrock batch job
to the emulator, which runs it on moto's S3 and sends its state change through moto's EventBridge to
the batch-events queue. The handlers (ingest, collector, runner) run in this process behind the event
pump with Lambda's settings. The figure is measured from the moment the collector has handed the
finished job's records to the work queue (the registry marks it collected) until the last record has
ended in the ledger: the recording rate, to set beside the on-demand pipeline's (phase c), which
includes the model calls.
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
ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-batch-inference"


def prompt_file(records: int, experiment: str) -> bytes:
    lines = [json.dumps({"job": {"models": [MODEL_ID], "experiment": experiment, "mode": "batch"}})]
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
    records: int,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    from bedrock_pipeline import settings
    from bedrock_pipeline.batch.adapters import DynamoBatchRegistry
    from bedrock_pipeline.domain import job_id_for
    from bedrock_pipeline.ledger import JobLedger
    from local_stack.bedrock_emulator.client import EmulatorAdmin
    from local_stack.event_pump import EventPump, default_routes
    from local_stack.resources import ResourceNames, aws_client, ensure_resources, handler_environment

    resources = ensure_resources(moto_url, ResourceNames.unique("bench"))
    os.environ.update(
        handler_environment(
            moto_url=moto_url, mlflow_url=tracking_uri, resources=resources, emulator_url=emulator_url
        )
    )
    os.environ[settings.ENV_BATCH_ROLE_ARN] = ROLE_ARN
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("RETRY_BASE_SECONDS", "1")
    # Batch jobs read and write moto's S3 and put their events on moto's EventBridge; no delay per record.
    EmulatorAdmin(emulator_url).configure_batch(
        aws_endpoint=moto_url, state_delay_seconds=0.2, ms_per_record=0
    )
    routes = [
        dataclasses.replace(route, concurrency=concurrency)
        if route.queue_url == resources.work.url
        else route
        for route in default_routes(resources, wait_time_seconds=1)
    ]
    s3 = aws_client("s3", moto_url)
    dynamodb = aws_client("dynamodb", moto_url)
    ledger = JobLedger(dynamodb, resources.jobs_table)
    registry = DynamoBatchRegistry(dynamodb, resources.jobs_table)

    key = f"{settings.INCOMING_PREFIX}bench/batch-{time.time_ns()}.jsonl"
    pump = EventPump(routes, endpoint_url=moto_url)
    pump.start()
    try:
        log = AccessLog(access_log)
        offset = log.mark()
        submitted = time.perf_counter()
        etag = s3.put_object(Bucket=resources.bucket, Key=key, Body=prompt_file(records, "bench/batch"))[
            "ETag"
        ]
        job_id = job_id_for(key, etag.strip('"'))
        deadline = submitted + timeout
        collected_at = ended_at = finalized_at = None
        while time.perf_counter() < deadline:
            parts = registry.parts(job_id)
            if collected_at is None and parts and all(registry.collected(p.arn) for p in parts):
                collected_at = time.perf_counter()
            counts = ledger.counts(job_id)
            if counts is not None and counts.complete and ended_at is None:
                ended_at = time.perf_counter()
            if counts is not None and counts.finalized and collected_at is not None:
                finalized_at = time.perf_counter()
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"job {job_id} did not finish in {timeout} s: {ledger.counts(job_id)}")
        counts = ledger.counts(job_id)
        settled = log.settled_since(offset)
    finally:
        pump.stop(timeout=60)
    assert counts is not None and collected_at is not None
    recording_s = (ended_at or time.perf_counter()) - collected_at
    return {
        "name": "batch_collector",
        "records": records,
        "work_concurrency": concurrency,
        "chunk_records": settings.BATCH_CHUNK_RECORDS,
        "seconds_to_collected": round(collected_at - submitted, 2),
        "seconds_recording": round(recording_s, 2),
        "records_per_s": records / recording_s if recording_s > 0 else None,
        # The finalizer's merge of every record's result line (finalize.py), read within 0.2 s.
        "seconds_finalizing": round(finalized_at - ended_at, 2) if finalized_at and ended_at else None,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        **settled.summary(15),
        "pump": dataclasses.asdict(pump.counters),
    }


def main() -> None:
    from bedrock_pipeline import settings

    parser = phase_parser(__doc__)
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=settings.WORK_MAX_CONCURRENCY)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    emit_result(
        measure(
            args.tracking_uri,
            args.emulator_url,
            args.moto_url,
            args.access_log,
            records=args.records,
            concurrency=args.concurrency,
            timeout=args.timeout,
        )
    )


if __name__ == "__main__":
    main()
