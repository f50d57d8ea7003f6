"""MLflow adapter: experiments, one parent run per job, one child run per (record, model).

Uses MlflowClient rather than the fluent API: it is thread-safe for concurrent items and costs three
tracking requests per call (create_run, log_batch, update_run) instead of the fluent API's six.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

# Set up with the tracking client (handlers/runtime.py); it reaches into MLflow, so it lives in the adapter.
from bedrock_pipeline.mlflow_internals.request_headers import (
    ask_databricks_context_once as ask_databricks_context_once,
)

# Fixed names other tools read (README: "MLflow names").
TAG_KIND = "pipeline.kind"
TAG_JOB_ID = "pipeline.job_id"
TAG_RECORD_ID = "pipeline.record_id"
TAG_SOURCE = "pipeline.source"
TAG_SOURCE_ETAG = "pipeline.source_etag"
TAG_ROLE = "pipeline.role"  # "job" on parent runs, "call" on child runs
TAG_TRACE_ID = "pipeline.trace_id"
TAG_ERROR = "pipeline.error"
# Deterministic identity of a (source version, record, model) call run: a retry finds the run an
# earlier attempt created (and reuses it) instead of making a second one.
TAG_ITEM_DIGEST = "pipeline.item_digest"
RESERVED_TAG_PREFIXES = ("pipeline.", "mlflow.")

PARAM_NAMES = ("model_id", "temperature", "top_p", "max_tokens", "stream")
METRIC_NAMES = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "latency_ms",
    "input_cost_usd",
    "output_cost_usd",
    "cost_usd",
)


@dataclass(frozen=True)
class CallRecord:
    """What one child run records; the caller has already computed tokens and cost."""

    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    failed: bool


def user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A record's own tags, minus any that would override the pipeline's or MLflow's own."""
    return {k: str(v) for k, v in tags.items() if not k.startswith(RESERVED_TAG_PREFIXES)}


class RunTracker:
    def __init__(self, client: MlflowClient | None = None) -> None:
        self.client = client or MlflowClient()

    def ensure_experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by a concurrent ingest
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def find_job_run(self, experiment_id: str, job_id: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_JOB_ID}` = '{job_id}' and tags.`{TAG_ROLE}` = 'job'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_job_run(self, experiment_id: str, job_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        """The job's parent run; the same job (a redelivered event) gets the same run back."""
        existing = self.find_job_run(experiment_id, job_id)
        if existing:
            return existing
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, TAG_JOB_ID: job_id, TAG_ROLE: "job"},
        )
        return run.info.run_id

    def create_call_run(
        self, experiment_id: str, parent_run_id: str, run_name: str, tags: Mapping[str, str]
    ) -> str:
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: run_name, TAG_ROLE: "call"},
        )
        return run.info.run_id

    def finish_call_run(self, run_id: str, record: CallRecord) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in record.metrics.items()],
            params=[Param(k, str(v)) for k, v in record.params.items() if v is not None],
            tags=[RunTag(k, str(v)) for k, v in record.tags.items()],
        )
        self.client.set_terminated(run_id, "FAILED" if record.failed else "FINISHED")

    def finish_job_run(self, run_id: str, metrics: Mapping[str, float], failed: bool = False) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_job_artifact_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def find_call_run(self, experiment_id: str, job_id: str, item_digest: str) -> Any | None:
        """The (not deleted) call run an earlier attempt at this item created, if any."""
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_JOB_ID}` = '{job_id}' and tags.`{TAG_ITEM_DIGEST}` = '{item_digest}' "
                f"and tags.`{TAG_ROLE}` = 'call'"
            ),
            max_results=10,
            order_by=["attributes.start_time ASC"],
        )
        for extra in runs[1:]:  # never expected; if it happens, keep one run per item
            self.client.delete_run(extra.info.run_id)
        return runs[0] if runs else None

    def search_call_runs(self, experiment_id: str, job_id: str) -> list[Any]:
        return self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_JOB_ID}` = '{job_id}' and tags.`{TAG_ROLE}` = 'call'",
            max_results=50_000,
        )
