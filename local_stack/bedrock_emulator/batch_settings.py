"""The batch-job settings of the emulator (``POST /_emulator/config {"batch": {...}}``).

Delays stand in for Bedrock's hours; quotas default to Bedrock's documented defaults and can be
lowered so tests need not upload 100 records (README, "Batch inference jobs").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("fail", "partial", "expire")


@dataclass(frozen=True)
class BatchSettings:
    # Seconds spent in each of Submitted, Validating and Scheduled before the next state.
    state_delay_seconds: float = 0.2
    ms_per_record: float = 0.0  # InProgress time per record (Bedrock takes hours; this is a stand-in)
    # "Minimum number of records per batch inference job" (Bedrock quota; 100 for most models, the number
    # apache/airflow's Bedrock batch system test, run against AWS, needs), and the
    # per-file and per-job maximums ("Records per input file per batch inference job", "Records per
    # batch inference job"; 50,000 by default).
    minimum_records: int = 100
    max_records_per_file: int = 50_000
    max_records_per_job: int = 50_000
    # Job-name substring (or "*" for every job) -> "fail" (Failed while Validating), "partial"
    # (PartiallyCompleted: partial_error_rate of the records get error records) or "expire" (Expired
    # while Scheduled, before it starts).
    faults: Mapping[str, str] = field(default_factory=dict)
    partial_error_rate: float = 0.2
    # The user guide says both that output order matches the input and that it is not guaranteed to
    # ("Format and upload your batch inference data", two versions); true writes each .out file's lines
    # in a seeded shuffled order, so a reader that matches by recordId can prove it does.
    shuffle_output: bool = False
    # Where the job's S3 input and output live (moto), and where PutEvents goes (moto's EventBridge).
    aws_endpoint: str | None = None
    # "eventbridge": PutEvents on the default bus (a rule routes it); "off": no events.
    events: str = "eventbridge"

    def merged(self, update: Mapping[str, Any]) -> BatchSettings:
        """A copy with ``update`` applied; ValueError (nothing changed) on an unknown key or bad value."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(update) - known
        if unknown:
            raise ValueError(f"unknown batch setting(s) {sorted(unknown)}; known: {sorted(known)}")
        merged = dataclasses.replace(self, **dict(update))
        for name in ("state_delay_seconds", "ms_per_record", "partial_error_rate"):
            value = getattr(merged, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"batch.{name} must be a number >= 0")
        if merged.partial_error_rate > 1:
            raise ValueError("batch.partial_error_rate must be between 0 and 1")
        for name in ("minimum_records", "max_records_per_file", "max_records_per_job"):
            value = getattr(merged, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"batch.{name} must be an integer >= 1")
        if not isinstance(merged.faults, Mapping) or any(v not in FAULTS for v in merged.faults.values()):
            raise ValueError(f"batch.faults must map job-name substrings to one of {FAULTS}")
        if not isinstance(merged.shuffle_output, bool):
            raise ValueError("batch.shuffle_output must be true or false")
        if merged.events not in ("eventbridge", "off"):
            raise ValueError('batch.events must be "eventbridge" or "off"')
        if merged.aws_endpoint is not None and not isinstance(merged.aws_endpoint, str):
            raise ValueError("batch.aws_endpoint must be a URL")
        return dataclasses.replace(merged, faults=dict(merged.faults))

    def fault_for(self, job_name: str) -> str | None:
        for pattern, fault in self.faults.items():
            if pattern == "*" or pattern in job_name:
                return fault
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "faults": dict(self.faults)}
