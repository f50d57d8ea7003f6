"""Messages that travel between the handlers: a job's identity and one work item per (record, model)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bedrock_pipeline import settings

JobKind = Literal["batch", "evaluation", "benchmark"]
MESSAGE_VERSION = 1


class JobRef(BaseModel):
    """Everything a runner needs to record one call under its job, carried in every work message."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: JobKind = "batch"
    experiment_id: str
    parent_run_id: str
    source_bucket: str
    source_key: str
    source_etag: str

    @property
    def source_uri(self) -> str:
        return f"s3://{self.source_bucket}/{self.source_key}"

    @property
    def results_prefix(self) -> str:
        return f"{settings.RESULTS_PREFIX}{self.job_id}/"


class WorkMessage(BaseModel):
    """The body of one work-queue message: one record on one model."""

    version: int = MESSAGE_VERSION
    job: JobRef
    record_id: str
    line_number: int
    model_id: str
    request: dict[str, Any]
    stream: bool = False
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def item_key(self) -> str:
        """Stable identity of this unit of work: the same source version, record and model."""
        return f"{self.job.source_etag}:{self.record_id}:{self.model_id}"


def job_id_for(key: str, etag: str) -> str:
    """A job id that is the same for the same object version, so a redelivered S3 event is one job."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", stem).strip("-").lower()[:48] or "prompts"
    digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def experiment_for(key: str, explicit: str | None) -> str:
    """One experiment per prompt-file folder, unless the job names one."""
    if explicit:
        return explicit
    relative = key[len(settings.INCOMING_PREFIX) :] if key.startswith(settings.INCOMING_PREFIX) else key
    folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
    return f"bedrock-batch/{folder}" if folder else "bedrock-batch"
