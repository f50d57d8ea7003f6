"""What `status` says about a job's Bedrock batch inference jobs (issue 20): each one's state and
progress, from GetModelInvocationJob (its record counts; manifest.json.out has the same once it ends),
and whether the collector has fanned its records out yet."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from bedrock_pipeline.batch.adapters import BedrockBatchJobs, DynamoBatchRegistry
from bedrock_pipeline.ports import BatchJobStatus, BatchPart
from pipeline_cli.target import Target


def batch_job_lines(target: Target, job_id: str) -> list[str]:
    """One line per Bedrock batch job of the pipeline job (none for a job that ran on demand)."""
    registry = DynamoBatchRegistry(target.client("dynamodb"), target.jobs_table)
    parts = registry.parts(job_id)
    if not parts:
        return []
    jobs = BedrockBatchJobs(target.client("bedrock"))
    lines = []
    for part in parts:
        try:
            state = jobs.get_job(part.arn)
        except (ClientError, BotoCoreError) as exc:
            lines.append(f"  Bedrock batch job {part.name} ({part.model_id}): state unknown ({exc})")
            continue
        collected = "; records handed to the runners" if registry.collected(part.arn) else ""
        lines.append(f"  Bedrock batch job {part.name} ({part.model_id}): {describe(state, part)}{collected}")
    return lines


def describe(state: BatchJobStatus, part: BatchPart) -> str:
    """``InProgress; 420/1,000 records processed (3 failed)``; the message of a job that failed."""
    total = state.total_records or part.records
    text = f"{state.status}; {state.processed_records or 0:,}/{total:,} records processed"
    if state.error_records:
        text += f" ({state.error_records:,} failed)"
    if state.message:
        text += f": {state.message}"
    return text
