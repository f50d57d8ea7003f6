"""The MLflow names other tools read (README "MLflow names"): tags, params, metrics.

Apart from the MLflow adapter (tracking.py) so code that only names things (ingest) imports no MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping

from bedrock_pipeline.pricing import INFERENCE_PROFILE_PREFIXES

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
# The inference profile a call went through (its id or ARN, as written: system cross-region profiles
# and application profiles), and the foundation model an application profile resolved to.
TAG_INFERENCE_PROFILE = "pipeline.inference_profile"
TAG_RESOLVED_MODEL_ID = "pipeline.resolved_model_id"
# How a job ran and why (parent run), and how each call was made (call runs): "on_demand" or "batch".
TAG_EXECUTION = "pipeline.execution"
TAG_EXECUTION_REASON = "pipeline.execution_reason"
RESERVED_TAG_PREFIXES = ("pipeline.", "mlflow.")

PARAM_NAMES = ("model_id", "temperature", "top_p", "max_tokens", "stream")
METRIC_NAMES = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "latency_ms",
    "time_to_first_token_ms",  # streamed calls only
    "input_cost_usd",
    "output_cost_usd",
    "cost_usd",
    "reasoning_tokens",  # when the usage reports them
    "guardrail_cost_usd",  # with a guardrail trace to price
)


def user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A record's own tags, minus any that would override the pipeline's or MLflow's own."""
    return {k: str(v) for k, v in tags.items() if not k.startswith(RESERVED_TAG_PREFIXES)}


def inference_profile_of(model_id: str) -> str | None:
    """``model_id`` itself when it names an inference profile (an application or cross-region profile
    ARN, or a cross-region id such as ``us.anthropic...``), else None."""
    if model_id.startswith("arn:"):
        resource = model_id.split(":", 5)[-1]
        return (
            model_id
            if resource.startswith(("inference-profile/", "application-inference-profile/"))
            else None
        )
    prefix, dot, rest = model_id.partition(".")
    return model_id if dot and prefix.lower() in INFERENCE_PROFILE_PREFIXES and "." in rest else None
