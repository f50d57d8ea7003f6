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
# Pacing calls under Bedrock's quotas (bedrock_pipeline/pacing.py, README "Sizing to your quotas"):
# "adaptive" (a schedule per model shared by all runners, rate cut on throttles) or "off" (each client
# on its own with botocore's adaptive retries, the behaviour before issue 19).
ENV_BEDROCK_PACING: Final = "BEDROCK_PACING"
# The model quotas the account has, if known: "model-id=600,other-id=300" (requests per minute, as
# Service Quotas lists them); the schedule then starts at quota x target utilisation.
ENV_BEDROCK_MODEL_RPM: Final = "BEDROCK_MODEL_RPM"
ENV_BEDROCK_TARGET_UTILISATION: Final = "BEDROCK_TARGET_UTILISATION"
# Longest a runner holds an item waiting for its model's slot before returning it to the queue.
ENV_BEDROCK_PACING_MAX_HOLD_SECONDS: Final = "BEDROCK_PACING_MAX_HOLD_SECONDS"

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
BEDROCK_MAX_ATTEMPTS: Final = 6  # botocore adaptive retry mode (pacing off)

# --- Pacing (pacing.py; the defaults of the variables above, and the AIMD constants) ---
# On when asked (BEDROCK_PACING=adaptive) or once any model's quota is given (BEDROCK_MODEL_RPM:
# pace_policy.pacing_mode); this is the mode when neither is. It finds a quota far below the one it is
# given, or none given, and tells the quota's throttles from those of a busy capacity pool (AWS support
# on re:Post, QU11DRlMZfRDy0ngHxpO1VCw), which come at a share of the calls whatever the rate, by
# testing each cut: a quota's throttles stop below it (docs/PERFORMANCE.md, "Under Bedrock's quotas";
# learning the noise costs minutes once). Not on for everyone: it adds a DynamoDB write per call to the
# runner's hot path, and where throttling is not what binds it gains nothing (docs/PERFORMANCE.md).
BEDROCK_PACING: Final = "off"
# Below 1.0 leaves room for what a sliding-minute count and clocks across instances disagree on.
BEDROCK_TARGET_UTILISATION: Final = 0.95
BEDROCK_PACING_MAX_HOLD_SECONDS: Final = 30  # a batch of 10 at 20 requests/min is 30 s: held, not requeued
PACING_START_RPM: Final = 60.0  # a model whose quota is not given starts here and probes up
PACING_UNKNOWN_CEILING_RPM: Final = 1000.0  # ...up to this; give the quota for a faster model
# With no quota found yet the rate grows from its start to its ceiling over this long; after a cut's
# test (pacing.py) it grows back to the quota found over this long. Bedrock counts a minute (quotas-runtime.html).
PACING_RECOVERY_SECONDS: Final = 60.0
# A throttle after a full minute cuts the rate to this share of the calls that minute admitted (what
# the quota admits: a throttled call counts nothing). Not the current rate: cutting that by 30 % once
# per 15 s while growing back by the ceiling/60 each second held the rate near 0.58 x an overstated
# ceiling, throttled all along (docs/PERFORMANCE.md, "Under Bedrock's quotas").
PACING_DECREASE_FACTOR: Final = 0.9
# Past the quota found the rate probes up by this share of it per minute, up to 1 + span times it
# (then by the quota found per minute): a quota raised, or found a little low, is found again.
PACING_PROBE_PER_MINUTE: Final = 0.1
PACING_PROBE_SPAN: Final = 0.2
# Throttles within this long of a cut are the same overshoot: the quota's sliding minute still holds
# the calls made before the cut, whatever the rate now (a 45 s cooldown, cutting again on them,
# over-cut in the simulation of tests/unit/test_pacing_under_quota.py).
PACING_COOLDOWN_SECONDS: Final = 60.0
PACING_MAX_LAG_SECONDS: Final = 1.0  # an idle schedule banks at most this much burst
# Throttles (and other transient errors) one held item retries in the runner before it is requeued.
PACING_MAX_RETRIES_IN_PLACE: Final = 4
# A requeued item carries its count (message attribute); past this it takes the queue's failure path.
PACING_MAX_DEFERRALS: Final = 100
PACING_DEFERRALS_ATTRIBUTE: Final = "pacing-deferrals"
# SendMessage DelaySeconds is 0 to 900 (SQS API Reference, SendMessage).
SQS_MAX_DELAY_SECONDS: Final = 900
BEDROCK_READ_TIMEOUT_SECONDS: Final = 120

DEFAULT_MODELS: Final = (
    "anthropic.claude-3-haiku-20240307-v1:0",
    "amazon.nova-lite-v1:0",
    "meta.llama3-1-8b-instruct-v1:0",
)


def visibility_timeout_for(function_timeout_seconds: int) -> int:
    """Queue visibility timeout for a function timeout (6x, per the SQS event source guidance)."""
    return function_timeout_seconds * VISIBILITY_TIMEOUT_FACTOR
