"""Names, sizes and timeouts shared by the handlers, the CDK app and the local stack.

One place so the deployed stack, the offline twin and the tests cannot drift apart.
"""

from __future__ import annotations

from typing import Final

# --- Resource names (logical; the CDK app and the local stack create them under these names) ---
PROMPT_BUCKET_NAME: Final = "bedrock-prompts"  # local stack bucket; CDK lets CloudFormation name it
INCOMING_PREFIX: Final = "incoming/"
RESULTS_PREFIX: Final = "results/"
INGEST_QUEUE_NAME: Final = "bedrock-ingest"
WORK_QUEUE_NAME: Final = "bedrock-work"
EVALUATION_QUEUE_NAME: Final = "bedrock-evaluation"
DLQ_SUFFIX: Final = "-dlq"
IDEMPOTENCY_TABLE_NAME: Final = "bedrock-idempotency"
JOBS_TABLE_NAME: Final = "bedrock-jobs"  # the job ledger: jobs, their end shards, attempts (pk "pk")

# --- Bedrock batch inference (issue 20): what the pipeline, the stack and the emulator share ---
BATCH_PREFIX: Final = "batch/"  # batch/<job id>/input/ (files we write), batch/<job id>/output/ (Bedrock's)
BATCH_EVENTS_QUEUE_NAME: Final = (
    "bedrock-batch-events"  # the EventBridge rule's target, read by the collector
)
# The event Bedrock sends when a batch inference job changes state (EventBridge source and detail type).
BATCH_EVENT_SOURCE: Final = "aws.bedrock"
BATCH_EVENT_DETAIL_TYPE: Final = "Batch Inference Job State Change"
# How a job runs (the job header's "mode"; README "Batch mode"). A deployment sets its default with
# ENV_DEFAULT_EXECUTION_MODE (stacks/settings.py default_execution_mode).
EXECUTION_MODES: Final = ("on_demand", "batch", "auto")
DEFAULT_EXECUTION_MODE: Final = "on_demand"
# Bedrock's batch inference quotas, at their defaults (the per-model quotas "Minimum number of records
# per batch inference job", "Records per input file per batch inference job", "Records per batch
# inference job", "Batch inference input file size (in GB)", "Batch inference job size (in GB)":
# https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock, as the user guide names
# them in https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html). Sizes in
# decimal GB, the smaller reading, so a file is never split later than Bedrock would accept it.
BATCH_MIN_RECORDS_PER_JOB: Final = 100
BATCH_MAX_RECORDS_PER_FILE: Final = 50_000
BATCH_MAX_RECORDS_PER_JOB: Final = 50_000
BATCH_MAX_FILE_BYTES: Final = 1_000_000_000
BATCH_MAX_JOB_BYTES: Final = 5_000_000_000
# Records of a finished batch job one work-queue message (a chunk) carries to a runner. A runner
# records a chunk's records one after another, its WORK_BATCH_SIZE chunks side by side: an invocation
# then records as many records per thread as there are here, far within its timeout, and a 50,000-record
# job is 5,000 messages instead of 50,000.
BATCH_CHUNK_RECORDS: Final = 10

# --- No network beyond the configured endpoints ---
# `import mlflow` starts a usage-telemetry client that calls MLflow's public endpoints (in a VPC
# without NAT: a connection that hangs in a background thread). Set before mlflow is imported, by
# every process of ours that imports it (handlers, CLI, local stack, benchmarks) and by the CDK app.
OFFLINE_ENVIRONMENT: Final = {"MLFLOW_DISABLE_TELEMETRY": "true"}

# --- Environment variables the handlers read (validated by pydantic at cold start) ---
ENV_PROMPT_BUCKET: Final = "PROMPT_BUCKET"
ENV_WORK_QUEUE_URL: Final = "WORK_QUEUE_URL"
ENV_EVALUATION_QUEUE_URL: Final = "EVALUATION_QUEUE_URL"
ENV_IDEMPOTENCY_TABLE: Final = "IDEMPOTENCY_TABLE"
ENV_JOBS_TABLE: Final = "JOBS_TABLE"
ENV_MLFLOW_TRACKING_URI: Final = "MLFLOW_TRACKING_URI"
ENV_MLFLOW_CREDENTIALS_SECRET_ARN: Final = (
    "MLFLOW_CREDENTIALS_SECRET_ARN"  # optional; JSON {username,password}
)
ENV_DEFAULT_MODELS: Final = "DEFAULT_MODELS"  # comma-separated model or inference-profile ids
ENV_BENCHMARK_SUITE: Final = "BENCHMARK_SUITE"
ENV_RETRY_BASE_SECONDS: Final = "RETRY_BASE_SECONDS"
ENV_RETRY_MAX_SECONDS: Final = "RETRY_MAX_SECONDS"
# Calls one runner invocation makes at once (default RUNNER_ITEM_CONCURRENCY); a deployment lowers it to
# fit its Bedrock quotas (stacks/settings.py runner_item_concurrency).
ENV_RUNNER_ITEM_CONCURRENCY: Final = "RUNNER_ITEM_CONCURRENCY"
ENV_DEFAULT_EXECUTION_MODE: Final = "DEFAULT_EXECUTION_MODE"  # on_demand (default), batch or auto
# The service role Bedrock assumes to run batch jobs (read batch/*/input/, write batch/*/output/).
ENV_BATCH_ROLE_ARN: Final = "BATCH_ROLE_ARN"

# --- Lambda timeouts and batching the core code also reads (each function's whole deployment, memory
# and event source included, is in function_catalogue.py) ---
INGEST_TIMEOUT_SECONDS: Final = 120
RUNNER_TIMEOUT_SECONDS: Final = 300
EVALUATOR_TIMEOUT_SECONDS: Final = 900
BENCHMARK_TIMEOUT_SECONDS: Final = 900
COLLECTOR_TIMEOUT_SECONDS: Final = 300
VISIBILITY_TIMEOUT_FACTOR: Final = 6  # AWS guidance: queue visibility >= 6x the function timeout
MAX_RECEIVE_COUNT: Final = 5  # receives before a message moves to its DLQ
WORK_BATCH_SIZE: Final = 10
WORK_MAX_CONCURRENCY: Final = 10  # Lambda instances on the work queue (protects Bedrock and MLflow)
# Every item of a batch at once: a batch ends with its slowest item, so fewer threads than items
# (8 for 10) made each batch two rounds long (docs/PERFORMANCE.md).
RUNNER_ITEM_CONCURRENCY: Final = WORK_BATCH_SIZE
# A batch's finished traces are exported together when it ends (one span post for all of them);
# at most this many wait, so a batch shared with other invocations still exports in sets of one batch.
TRACE_EXPORT_MAX_HELD_TRACES: Final = WORK_BATCH_SIZE
LOG_RETENTION_DAYS: Final = 30
RETRY_BASE_SECONDS: Final = 20  # a failed work item's first back-off; doubles per receive, with jitter
RETRY_MAX_SECONDS: Final = 900

# --- Input limits ---
MAX_PROMPT_FILE_BYTES: Final = 50 * 1024 * 1024
# Room for a record with an inline 3.75 MB image or 4.5 MB document (Bedrock's limits: API reference,
# Message.content) as base64 (4/3 the size).
MAX_LINE_BYTES: Final = 8 * 1024 * 1024
MAX_RECORDS_PER_FILE: Final = 50_000
# A work item larger than this as JSON travels by reference (work_queue.ItemBodies): SQS messages, and
# a SendMessageBatch of them together, top out at 256 KiB.
MAX_WORK_ITEM_BYTES: Final = 200 * 1024
MAX_ITEM_BODY_BYTES: Final = 9 * 1024 * 1024  # one work item as JSON, inline or by reference

# --- Bedrock client ---
BEDROCK_MAX_ATTEMPTS: Final = 6  # botocore adaptive retry mode
BEDROCK_READ_TIMEOUT_SECONDS: Final = 120

DEFAULT_MODELS: Final = (
    "anthropic.claude-3-haiku-20240307-v1:0",
    "amazon.nova-lite-v1:0",
    "meta.llama3-1-8b-instruct-v1:0",
)


def visibility_timeout_for(function_timeout_seconds: int) -> int:
    """Queue visibility timeout for a function timeout (6x, per the SQS event source guidance)."""
    return function_timeout_seconds * VISIBILITY_TIMEOUT_FACTOR
