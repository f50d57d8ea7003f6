"""Which records may run as Bedrock batch inference, and how a job runs (``mode``): pure functions.

* ``on_demand``: every item is a Converse call, as before.
* ``auto``: batch when every item is eligible and each model has at least Bedrock's minimum records
  per batch job; otherwise on demand. Either way the reason is kept (parent-run tag
  ``pipeline.execution_reason``).
* ``batch``: eligible items run in batch; each ineligible one (and each one of a model left with
  fewer records than the minimum) is reported as a line error and does not run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bedrock_pipeline import settings
from bedrock_pipeline.batch.native import family_of, unsupported
from bedrock_pipeline.domain import WorkItem
from bedrock_pipeline.pricing import PriceTable

Execution = Literal["on_demand", "batch"]

# Foundation models that take batch inference, of the families converted to their own format here
# (https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-supported.html). A cross-region
# profile of one of them ("us.anthropic...") is its base model here.
BATCH_MODELS = frozenset(
    {
        "amazon.nova-micro-v1:0",
        "amazon.nova-lite-v1:0",
        "amazon.nova-pro-v1:0",
        "amazon.nova-premier-v1:0",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "anthropic.claude-3-sonnet-20240229-v1:0",
        "anthropic.claude-3-opus-20240229-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-opus-4-20250514-v1:0",
        "meta.llama3-1-8b-instruct-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
        "meta.llama3-1-405b-instruct-v1:0",
        "meta.llama3-2-1b-instruct-v1:0",
        "meta.llama3-2-3b-instruct-v1:0",
        "meta.llama3-2-11b-instruct-v1:0",
        "meta.llama3-2-90b-instruct-v1:0",
        "meta.llama3-3-70b-instruct-v1:0",
    }
)


def supports_batch(model_id: str) -> bool:
    return PriceTable.base_model_id(model_id).lower() in BATCH_MODELS and family_of(model_id) is not None


def ineligibility(item: WorkItem) -> str | None:
    """Why this item cannot be a batch record; None when it can."""
    if item.stream:
        return "streaming: a batch job's answers arrive whole, in S3"
    if not supports_batch(item.model_id):
        return f"{item.model_id} does not take batch inference here"
    return unsupported(item.request)


@dataclass(frozen=True)
class ExecutionPlan:
    """How a job runs: ``items`` run that way; ``refused`` (batch mode only) become line errors."""

    execution: Execution
    reason: str
    items: tuple[WorkItem, ...]
    refused: tuple[tuple[WorkItem, str], ...] = ()


def plan_execution(
    mode: str,
    items: Sequence[WorkItem],
    *,
    min_records: int = settings.BATCH_MIN_RECORDS_PER_JOB,
) -> ExecutionPlan:
    """The plan for ``items`` in ``mode`` (one of settings.EXECUTION_MODES)."""
    if mode not in settings.EXECUTION_MODES:
        raise ValueError(f"mode must be one of {settings.EXECUTION_MODES}, not {mode!r}")
    if mode == "on_demand":
        return ExecutionPlan("on_demand", "mode on_demand", tuple(items))
    reasons = [(item, ineligibility(item)) for item in items]
    if mode == "auto":
        return _auto(items, reasons, min_records)
    eligible = [item for item, reason in reasons if reason is None]
    refused = [(item, reason) for item, reason in reasons if reason is not None]
    counts = Counter(item.model_id for item in eligible)
    short = {model: n for model, n in counts.items() if n < min_records}
    for item in eligible:
        if item.model_id in short:
            refused.append((item, _below_minimum(item.model_id, short[item.model_id], min_records)))
    running = tuple(item for item in eligible if item.model_id not in short)
    refused.sort(key=lambda pair: (pair[0].line_number, pair[0].model_id))
    reason = "mode batch" + (f"; {len(refused)} item(s) cannot run in batch" if refused else "")
    return ExecutionPlan("batch", reason, running, tuple(refused))


def _auto(
    items: Sequence[WorkItem], reasons: list[tuple[WorkItem, str | None]], min_records: int
) -> ExecutionPlan:
    if not items:
        return ExecutionPlan("on_demand", "auto: nothing to run", ())
    for item, reason in reasons:
        if reason is not None:
            why = f"auto: record {item.record_id} on {item.model_id} cannot run in batch ({reason})"
            return ExecutionPlan("on_demand", why, tuple(items))
    counts = Counter(item.model_id for item in items)
    for model, n in sorted(counts.items()):
        if n < min_records:
            return ExecutionPlan("on_demand", f"auto: {_below_minimum(model, n, min_records)}", tuple(items))
    models = ", ".join(f"{model} ({n})" for model, n in sorted(counts.items()))
    why = f"auto: every record can run in batch and each model has at least {min_records} ({models})"
    return ExecutionPlan("batch", why, tuple(items))


def _below_minimum(model_id: str, count: int, min_records: int) -> str:
    return (
        f"{model_id} has {count} record(s) for batch; a Bedrock batch job needs at least {min_records} "
        "(quota 'Minimum number of records per batch inference job')"
    )
