"""Submit files and follow their jobs to the end, with a progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bedrock_pipeline import settings
from bedrock_pipeline.domain import ResultLine, job_id_for
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.results import ModelSummary, summarize
from bedrock_pipeline.storage import S3ResultStore
from pipeline_cli.target import Target


@dataclass(frozen=True)
class Submitted:
    path: Path
    key: str
    job_id: str


def submit(target: Target, path: Path, folder: str = "", *, body: bytes | None = None) -> Submitted:
    folder = folder.strip("/")
    key = f"{settings.INCOMING_PREFIX}{folder + '/' if folder else ''}{path.name}"
    body = path.read_bytes() if body is None else body
    response = target.client("s3").put_object(Bucket=target.bucket, Key=key, Body=body)
    return Submitted(path=path, key=key, job_id=job_id_for(key, response["ETag"].strip('"')))


def wait_for_jobs(target: Target, job_ids: list[str], timeout_s: float, *, progress: bool = True) -> bool:
    """Poll the job ledger until every job is finalized; True if all ended within the timeout."""
    ledger = JobLedger(target.client("dynamodb"), target.jobs_table)
    deadline = time.monotonic() + timeout_s
    bar = tqdm(total=0, unit="item", desc="running", disable=not progress, dynamic_ncols=True)
    try:
        while True:
            counts = [ledger.counts(job_id) for job_id in job_ids]
            known = [c for c in counts if c is not None]
            bar.total = sum(c.expected for c in known)
            bar.n = sum(c.ended for c in known)
            failed = sum(c.failed for c in known)
            bar.set_postfix(jobs=f"{sum(c.finalized for c in known)}/{len(job_ids)}", failed=failed)
            bar.refresh()
            if len(known) == len(job_ids) and all(c.finalized for c in known):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
    finally:
        bar.close()


def job_rows(target: Target, job_ids: list[str]) -> tuple[list[ModelSummary], int]:
    """Per-model rows over several finished jobs, and the number of rejected lines."""
    store = S3ResultStore(target.client("s3"), target.bucket)
    lines: list[ResultLine] = []
    rejected = 0
    for job_id in job_ids:
        summary = store.get_summary(job_id)
        if summary is not None:
            rejected += int(summary.get("rejectedLines", 0))
            lines.extend(store.item_results(job_id))
    return summarize(lines, PriceTable.load()), rejected
