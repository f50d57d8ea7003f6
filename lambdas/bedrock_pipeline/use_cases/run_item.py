"""Use case: run one work item once, record it, and end it in the job's ledger (docs/RELIABILITY.md).

`record_call` is the part every kind of job shares (runner, evaluator, benchmark): call the model
inside a trace linked to the item's own MLflow run, price the answer once, record it. `run_item`
adds what the queue needs: a duplicate delivery does nothing, a retry reuses what an earlier
attempt left, the ledger counts the item once. `item_failed` is what happens when it could not.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from bedrock_pipeline import settings
from bedrock_pipeline.attachments import with_s3_media_inlined
from bedrock_pipeline.domain import (
    CallError,
    CallOutcome,
    ModelResponse,
    ResultLine,
    RunRef,
    WorkItem,
)
from bedrock_pipeline.guardrails import GuardrailPrices, text_units
from bedrock_pipeline.ports import (
    AnswerCache,
    BedrockCallError,
    JobLedger,
    MediaStore,
    ModelGateway,
    ResultStore,
    RunRecorder,
    ThrottledItem,
    TransientItemError,
)
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.service_tiers import price_tier, service_tier
from bedrock_pipeline.use_cases.paced_calls import RETRY_AFTER, Pacing

logger = logging.getLogger(__name__)

# How long a completed item's idempotency record answers duplicates. After it expires the ledger's end
# mark still stops a duplicate; the record matters for concurrent duplicates and the crash window.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
ATTACHMENT_MISSING = "AttachmentNotFound"  # the pipeline's error code: an attachment is gone
# Powertools keys a record "<function>.<module>.<qualname>#<hash>" unless told otherwise. The name the
# attempt had before the use cases moved out of the Pipeline class, fixed here: records written by
# earlier deployments (in flight during a deploy, or within their TTL) still match, so a concurrent
# duplicate across a deploy cannot call Bedrock twice, and moving code never changes a key again.
IDEMPOTENCY_KEY_NAME = "bedrock_pipeline.pipeline.Pipeline._run_item_body"


@dataclass(frozen=True)
class CallDeps:
    """What recording one call needs."""

    gateway: ModelGateway
    recorder: RunRecorder
    prices: PriceTable
    # Optional: where answers are kept so a retry after a failure *after* the call only re-records.
    answers: AnswerCache | None = None
    # Where attachments are read for a model that cannot read S3 links (None: sent as written).
    media: MediaStore | None = None
    tier: str | None = None  # the price tier the calls are billed in (None: standard on-demand; "batch")


@dataclass(frozen=True)
class OncePerItem:
    """Powertools idempotency for items: concurrent deliveries of one item make one model call."""

    persistence: BasePersistenceLayer
    config: IdempotencyConfig

    @classmethod
    def with_persistence(cls, persistence: BasePersistenceLayer) -> OncePerItem:
        config = IdempotencyConfig(
            event_key_jmespath="item_key",
            expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
            lambda_context=_FallbackContext(),
        )
        return cls(persistence, config)

    def register_lambda_context(self, context: Any) -> None:
        """An in-progress record then expires with the invocation: a crashed one does not block."""
        if context is not None:
            self.config.register_lambda_context(context)

    @functools.cached_property
    def attempt(self) -> Callable[..., dict[str, Any]]:
        """`_attempt`, at most once per item at a time (Powertools `idempotent_function`)."""
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "test-func")  # Powertools' own default
        return idempotent_function(  # type: ignore[no-any-return]
            data_keyword_argument="work",
            persistence_store=self.persistence,
            config=self.config,
            key_prefix=f"{function}.{IDEMPOTENCY_KEY_NAME}",
        )(_attempt)


@dataclass(frozen=True)
class RunnerDeps:
    call: CallDeps
    ledger: JobLedger
    results: ResultStore
    # Without it an item still never counts twice (ledger), but concurrent duplicates could both call.
    once: OncePerItem | None = None
    # With pacing an item whose model is booked beyond the hold is requeued before it starts anything.
    pacing: Pacing | None = None


@dataclass(frozen=True)
class ItemOutcome:
    job_id: str
    succeeded: bool
    duplicate: bool = False


def priced(
    prices: PriceTable, item: WorkItem, answer: ModelResponse | CallError, *, tier: str | None = None
) -> CallOutcome:
    """The outcome of a call, priced here and only here: tokens in the tier that served it (``tier``
    when the caller knows it: "batch" for a batch inference record), and the guardrail's text units. A
    tier the table has no price for gives no cost and a warning."""
    if isinstance(answer, CallError):
        return CallOutcome(error=answer)
    billed = tier or price_tier(service_tier(item.request, answer.response_fields))
    # An application inference profile is priced as the model ingest resolved it to.
    model_id = item.pricing_model_id
    cost = prices.cost(model_id, answer.usage, tier=billed)
    if cost is None and prices.resolve(model_id) is not None:
        logger.warning("no %s-tier price for %s in the price table; no cost recorded", billed, model_id)
    guardrail_cost = None
    if "guardrailConfig" in item.request:
        guardrail_cost = GuardrailPrices.load().cost(text_units(answer.response_fields.get("trace") or {}))
    return CallOutcome(answer=answer, cost=cost, guardrail_cost_usd=guardrail_cost)


def record_call(item: WorkItem, deps: CallDeps, *, attempt: int = 1) -> ResultLine:
    """Call the model for one item inside a trace linked to its own run; return its result line.

    Raises TransientItemError when a retry can help. ``attempt`` > 1 means an earlier attempt may have
    left a run and a cached answer behind (docs/RELIABILITY.md, "the crash window"): the run is found
    by its item digest and reused, and a cached answer is re-recorded instead of calling again. Any
    other exception (MLflow unreachable, S3 down) propagates: the item returns to the queue.
    """
    job = item.bound_job
    cached: ModelResponse | CallError | None = None
    existing = None
    if attempt > 1:
        if deps.answers is not None:
            cached = deps.answers.get(job.job_id, item.digest)
        existing = deps.recorder.find_call_run(item)
        recorded = existing is not None and (
            (existing.status == "FINISHED" and isinstance(cached, ModelResponse))
            or (existing.status == "FAILED" and isinstance(cached, CallError))
        )
        if recorded and existing is not None and cached is not None:
            # Everything was recorded; only the ledger mark was missing. The run is the record.
            outcome = priced(deps.prices, item, cached, tier=deps.tier)
            return ResultLine.for_item(item, outcome, RunRef(existing.run_id, existing.trace_id))

    run_id = existing.run_id if existing is not None else deps.recorder.start_call_run(item)
    if cached is not None:
        answer = cached  # bind for the closure: mypy cannot see `cached` stays set

        def call() -> CallOutcome:
            return priced(deps.prices, item, answer, tier=deps.tier)
    else:

        def call() -> CallOutcome:
            return _call_model(item, deps)

    try:
        outcome, trace_id = deps.recorder.trace_call(item, run_id, call, replayed=cached is not None)
    except BedrockCallError as exc:  # transient: _call_model keeps permanent errors as outcomes
        # The retry makes a fresh run; drop this one so the job keeps one run per item.
        deps.recorder.discard_call_run(run_id)
        if RETRY_AFTER in exc.extra:  # the paced gateway gave up its hold: requeue, not a failure
            raise ThrottledItem(str(exc), retry_after_seconds=float(exc.extra[RETRY_AFTER])) from exc
        raise TransientItemError(str(exc)) from exc
    deps.recorder.finish_call_run(run_id, item, outcome, trace_id)
    return ResultLine.for_item(item, outcome, RunRef(run_id, trace_id))


def _call_model(item: WorkItem, deps: CallDeps) -> CallOutcome:
    """One model call; its answer (or permanent error) is cached before anything else can fail."""
    answer: ModelResponse | CallError
    try:
        request = item.request
        if deps.media is not None:
            # Read here, not at ingest: the item (and its identity, results line, trace) keeps the link.
            request = dict(with_s3_media_inlined(request, item.pricing_model_id, deps.media.read))
        answer = deps.gateway.invoke(item.model_id, request, stream=item.stream)
    except BedrockCallError as exc:
        if not exc.permanent:
            raise
        answer = CallError(exc.code, exc.message)
    except FileNotFoundError as exc:  # an attachment deleted since ingest: no retry brings it back
        answer = CallError(ATTACHMENT_MISSING, str(exc))
    if deps.answers is not None:
        deps.answers.put(item.bound_job.job_id, item.digest, answer)
    return priced(deps.prices, item, answer, tier=deps.tier)


def run_item(deps: RunnerDeps, item: WorkItem) -> ItemOutcome:
    """Run one work item once. A duplicate delivery of an ended item does nothing.

    Raises (TransientItemError or whatever failed) when the item should return to the queue;
    ThrottledItem when it should come back later without counting as a failure.
    """
    job_id = item.bound_job.job_id
    end = deps.ledger.item_end(job_id, item.key)
    redriven = end is not None and end.retryable
    if end is not None and not redriven:
        return ItemOutcome(job_id=job_id, succeeded=end.succeeded, duplicate=True)
    if deps.pacing is not None:
        deps.pacing.check_room(item.model_id)
    work = {"item_key": item.key}
    if deps.once is not None:
        try:
            done = deps.once.attempt(work=work, deps=deps, item=item)
        except IdempotencyAlreadyInProgressError as exc:
            # Another delivery of the same item is running right now: come back later.
            raise TransientItemError("another delivery of this item is in progress") from exc
    else:
        done = _attempt(work=work, deps=deps, item=item)
    succeeded = bool(done["succeeded"])
    if redriven:
        revised = deps.ledger.revise_end(job_id, item.key, succeeded=succeeded)
        return ItemOutcome(job_id=job_id, succeeded=succeeded, duplicate=not revised)
    first_time = deps.ledger.record_end(job_id, item.key, succeeded=succeeded)
    return ItemOutcome(job_id=job_id, succeeded=succeeded, duplicate=not first_time)


def _attempt(*, work: dict[str, Any], deps: RunnerDeps, item: WorkItem) -> dict[str, Any]:
    """Everything up to (not including) the ledger mark; its small result is the idempotency record."""
    del work  # only the idempotency key
    job_id = item.bound_job.job_id
    attempt = deps.ledger.begin_attempt(job_id, item.key)
    if attempt > 1:  # counted per job so status and the summary show it; the happy path pays nothing
        deps.ledger.count_retry(job_id)
    line = record_call(item, deps.call, attempt=attempt)
    deps.results.put_item_result(job_id, item.digest, line)
    # The idempotency record keeps only this; the line itself is in S3 (it can be large).
    return {"succeeded": line.succeeded, "runId": line.mlflow.run_id}


def item_failed(
    deps: RunnerDeps, item: WorkItem, *, body: str, reason: str, receive_count: int, last_receive: bool
) -> bool:
    """Record why an attempt failed; on the last receive before the DLQ end the item as a failure with
    that reason (an error line), so the job still finishes. True if this ended the item."""
    job_id = item.bound_job.job_id
    deps.ledger.note_failure(body, reason, receive_count, job_id=job_id, item_key=item.key)
    if not last_receive:
        return False
    error = CallError("RetriesExhausted", f"gave up after {receive_count} attempts: {reason}")
    if deps.ledger.item_end(job_id, item.key) is not None:
        return False
    deps.results.put_item_result(job_id, item.digest, ResultLine.for_item(item, CallOutcome(error=error)))
    # Retryable: a DLQ redrive may still run it, and then revises this end.
    ended = deps.ledger.record_end(job_id, item.key, succeeded=False, retryable=True)
    _close_orphan_run(deps.call.recorder, item, error.message)
    return ended


def malformed_message(deps: RunnerDeps, *, body: str, reason: str, receive_count: int) -> None:
    """A message that is no work item at all: its reason, for `dlq inspect` (it goes to the DLQ)."""
    deps.ledger.note_failure(body, reason, receive_count)


def _close_orphan_run(recorder: RunRecorder, item: WorkItem, reason: str) -> None:
    """Best effort: a run an attempt left RUNNING (MLflow went away mid-item) is marked FAILED with the
    reason. A redrive reuses it (and re-records the cached answer into it)."""
    try:
        run = recorder.find_call_run(item)
        if run is not None and run.status == "RUNNING":
            recorder.fail_call_run(run.run_id, reason)
    except Exception:  # MLflow may well be the reason the item gave up
        logger.warning("could not close the run of %s", item.key, exc_info=True)


@dataclass
class _FallbackContext:
    """Outside Lambda (bench, tests calling run_item directly) an in-progress record expires after the
    runner's function timeout, as it would on Lambda; a registered Lambda context replaces this."""

    timeout_seconds: float = settings.RUNNER_TIMEOUT_SECONDS
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_seconds * 1000)
