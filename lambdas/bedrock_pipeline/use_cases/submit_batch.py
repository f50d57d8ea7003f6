"""Use case: submit a job's batch-eligible items as Bedrock batch inference jobs (issue 20).

Writes each part's records (Bedrock's input format, batch/files.py) and the work items behind them,
then calls CreateModelInvocationJob with a client request token derived from the job id and the part:
a redelivered S3 event (or a retry after a crash half-way) writes the same files and gets the same
Bedrock job back instead of a second one ("If this token matches a previous request, Amazon Bedrock
ignores the request": https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelInvocationJob.html).
The ledger then knows each Bedrock job's ARN, which is how the collector finds the pipeline job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from bedrock_pipeline import settings
from bedrock_pipeline.batch.files import BatchLimits, PlannedPart, plan_parts
from bedrock_pipeline.domain import JobRef, WorkItem
from bedrock_pipeline.ports import BatchFiles, BatchInference, BatchPart, BatchRegistry


@dataclass(frozen=True)
class BatchDeps:
    jobs: BatchInference
    files: BatchFiles
    registry: BatchRegistry
    bucket: str
    role_arn: str  # the service role Bedrock assumes (trusted by bedrock.amazonaws.com; CDK)
    limits: BatchLimits = field(default_factory=BatchLimits)
    min_records: int = settings.BATCH_MIN_RECORDS_PER_JOB  # Bedrock's quota, per model (eligibility.py)


def client_token(job_id: str, part_name: str) -> str:
    """The same on every delivery of the job's event: 64 hex characters (Bedrock allows 1-256)."""
    return hashlib.sha256(f"{job_id}\0{part_name}".encode()).hexdigest()


def submit_batch(deps: BatchDeps, job: JobRef, items: Sequence[WorkItem]) -> list[BatchPart]:
    """One Bedrock batch job per planned part of ``items`` (bound, eligible); their parts, as recorded."""
    return [_submit(deps, job, planned) for planned in plan_parts(job.job_id, items, limits=deps.limits)]


def _submit(deps: BatchDeps, job: JobRef, planned: PlannedPart) -> BatchPart:
    # The items first: the job's outputs are useless to the collector without them.
    deps.files.put(planned.items_key, planned.items_body)
    for key, body in planned.files:
        deps.files.put(key, body)
    input_uri = f"s3://{deps.bucket}/{planned.input_prefix}"
    output_uri = f"s3://{deps.bucket}/{planned.output_prefix}"
    arn = deps.jobs.create_job(
        name=planned.name,
        model_id=planned.model_id,
        role_arn=deps.role_arn,
        input_uri=input_uri,
        output_uri=output_uri,
        token=client_token(job.job_id, planned.name),
    )
    part = BatchPart(
        name=planned.name,
        model_id=planned.model_id,
        arn=arn,
        input_uri=input_uri,
        output_uri=output_uri,
        items_key=planned.items_key,
        records=planned.records,
    )
    deps.registry.record_part(job, part)
    return part
