"""Every pipeline function and how it is deployed: one table, read by the CDK stack and the event pump.

The stack (stacks/pipeline.py) builds the functions, queues and event source mappings from it; the
offline event pump (local_stack/event_pump.py) runs the same handlers with the same batch sizes,
concurrency and timeouts. Neither keeps a table of its own, so the twin cannot drift from AWS
(tests/infra and tests/unit check both against this one).

Plain data: no CDK, no boto3, so the handlers' package can carry it and the stack can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bedrock_pipeline import settings

SQS_MAX_BATCH_SIZE: Final = 10  # ReceiveMessage (and so a standard queue's event source) limit
MIN_MAX_CONCURRENCY: Final = 2  # the lowest maximum concurrency an SQS event source accepts


@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue with its dead-letter queue; its visibility timeout derives from its consumer."""

    role: str  # "ingest", "work", "evaluation": the key the local stack, the CLI and the stack use
    name: str  # the local stack's queue name (on AWS, CloudFormation names it)
    max_receive_count: int = settings.MAX_RECEIVE_COUNT  # receives before SQS moves a message to its DLQ


@dataclass(frozen=True)
class EventSourceSpec:
    """An SQS event source mapping. Always with ReportBatchItemFailures: every queue-fed handler answers
    with a partial batch response, and the event pump imitates only that mode."""

    queue: QueueSpec
    batch_size: int
    max_concurrency: int  # concurrent invocations (Lambda) or pollers (event pump) for this queue

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= SQS_MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{SQS_MAX_BATCH_SIZE}, got {self.batch_size}")
        if self.max_concurrency < MIN_MAX_CONCURRENCY:
            raise ValueError(f"max_concurrency must be >= {MIN_MAX_CONCURRENCY}, got {self.max_concurrency}")


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: its handler, size, and what invokes it."""

    name: str  # function name in the pump, Powertools service name, and (capitalized) its construct id
    handler: str  # Lambda's handler setting, module.function under lambdas/
    timeout_seconds: int
    memory_mib: int
    event_source: EventSourceSpec | None = None  # None: not fed by a queue (the benchmark is scheduled)
    # A container image built from this Dockerfile in lambdas/, for dependencies over the zip limit.
    image_dockerfile: str | None = None
    # Lambda's own retries of a failed asynchronous invocation; None keeps Lambda's default (2).
    async_retry_attempts: int | None = None

    @property
    def queue(self) -> QueueSpec | None:
        return self.event_source.queue if self.event_source else None

    @property
    def visibility_timeout_seconds(self) -> int:
        """What the queue feeding this function needs (6x the function timeout)."""
        return settings.visibility_timeout_for(self.timeout_seconds)


INGEST_QUEUE: Final = QueueSpec(role="ingest", name=settings.INGEST_QUEUE_NAME)
WORK_QUEUE: Final = QueueSpec(role="work", name=settings.WORK_QUEUE_NAME)
EVALUATION_QUEUE: Final = QueueSpec(role="evaluation", name=settings.EVALUATION_QUEUE_NAME)
QUEUES: Final = (INGEST_QUEUE, WORK_QUEUE, EVALUATION_QUEUE)
# The target of the EventBridge rule on Bedrock's batch job state changes (issue 20). Apart from
# QUEUES, which the local stack creates by name per role: there the queue comes with the rule
# (local_stack/resources.py ensure_batch_events_rule).
BATCH_EVENTS_QUEUE: Final = QueueSpec(role="batch-events", name=settings.BATCH_EVENTS_QUEUE_NAME)
ALL_QUEUES: Final = (*QUEUES, BATCH_EVENTS_QUEUE)

# One prompt file per invocation. A file is the unit of work (up to 50 MB and 50,000 records, read,
# validated and split within the 120 s timeout), and a timeout fails the whole batch, not one item:
# with several files to a batch, one large file would push the others past the timeout and back onto
# the queue. S3 sends one message per object, so batching would save little.
INGEST_BATCH_SIZE: Final = 1
# One evaluation job per invocation: a job answers a dataset with every model and may take the
# whole 15-minute timeout.
EVALUATION_BATCH_SIZE: Final = 1

INGEST: Final = FunctionSpec(
    name="ingest",
    handler="handlers.ingest.handler",
    timeout_seconds=settings.INGEST_TIMEOUT_SECONDS,
    memory_mib=512,  # one prompt file in memory (50 MB at most) and its parsed records
    event_source=EventSourceSpec(INGEST_QUEUE, batch_size=INGEST_BATCH_SIZE, max_concurrency=2),
)
RUNNER: Final = FunctionSpec(
    name="runner",
    handler="handlers.runner.handler",
    timeout_seconds=settings.RUNNER_TIMEOUT_SECONDS,
    memory_mib=1024,
    event_source=EventSourceSpec(
        WORK_QUEUE, batch_size=settings.WORK_BATCH_SIZE, max_concurrency=settings.WORK_MAX_CONCURRENCY
    ),
)
EVALUATOR: Final = FunctionSpec(
    name="evaluator",
    handler="handlers.evaluator.handler",
    timeout_seconds=settings.EVALUATOR_TIMEOUT_SECONDS,
    memory_mib=1024,
    event_source=EventSourceSpec(EVALUATION_QUEUE, batch_size=EVALUATION_BATCH_SIZE, max_concurrency=2),
    image_dockerfile="analysis.Dockerfile",  # pandas (mlflow.genai.evaluate) is over the zip limit
)
BENCHMARK: Final = FunctionSpec(
    name="benchmark",
    handler="handlers.benchmark.handler",
    timeout_seconds=settings.BENCHMARK_TIMEOUT_SECONDS,
    memory_mib=1024,
    image_dockerfile="analysis.Dockerfile",  # matplotlib (trend charts) and pandas
    # Invoked by the schedule (asynchronously): a retry would run the whole suite twice.
    async_retry_attempts=0,
)

# One state change per invocation: a finished job's collection lists and counts its output files (up
# to 50,000 records), then only sends chunk messages; the runners record the records.
COLLECTOR: Final = FunctionSpec(
    name="collector",
    handler="handlers.collector.handler",
    timeout_seconds=settings.COLLECTOR_TIMEOUT_SECONDS,
    memory_mib=1024,  # one output file in memory while its lines are counted
    event_source=EventSourceSpec(BATCH_EVENTS_QUEUE, batch_size=1, max_concurrency=2),
)

FUNCTIONS: Final = (INGEST, RUNNER, EVALUATOR, BENCHMARK, COLLECTOR)


def queue_consumers() -> tuple[FunctionSpec, ...]:
    """The functions an SQS queue feeds, in catalogue order."""
    return tuple(function for function in FUNCTIONS if function.event_source is not None)


def consumer_of(queue: QueueSpec) -> FunctionSpec:
    """The one function a queue feeds."""
    for function in queue_consumers():
        if function.queue == queue:
            return function
    raise KeyError(f"no function consumes the {queue.role} queue")
