"""Pre-flight token and cost estimate of work items, offline (tiktoken with the shipped encoding).

Input tokens are counted with cl100k_base, an approximation for non-OpenAI models, plus images and
documents by each family's rule (media_tokens.py); output tokens are bounded by each item's maxTokens
(or DEFAULT_OUTPUT_TOKENS), so the cost is an upper estimate. A thinking budget is billed as output and
counts within maxTokens (reasoning.py); without a maxTokens the bound is the budget plus
DEFAULT_OUTPUT_TOKENS. Items are priced in their service tier; a tier the table has no price for leaves
the model unpriced, as an unknown model does. An item on an application inference profile is priced
as the model ingest resolved it to (``WorkItem.pricing_model_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bedrock_pipeline.domain import WorkItem
from bedrock_pipeline.media_tokens import MediaFacts, request_media_tokens
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.reasoning import thinking_budget
from bedrock_pipeline.service_tiers import price_tier, service_tier
from bedrock_pipeline.tokenizer import count_message_tokens

DEFAULT_OUTPUT_TOKENS = 512  # assumed when a request sets no maxTokens


@dataclass
class ModelEstimate:
    items: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True


@dataclass
class Estimate:
    models: dict[str, ModelEstimate] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float:
        return round(sum(m.cost_usd for m in self.models.values()), 10)

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.models.values())

    @property
    def max_output_tokens(self) -> int:
        return sum(m.max_output_tokens for m in self.models.values())


def estimate_items(
    items: Iterable[WorkItem],
    prices: PriceTable,
    *,
    media: Mapping[str, MediaFacts] | None = None,
    tier: str | None = None,
) -> Estimate:
    """Work items, bound to a job or not (only their model and request count). ``media``: what ingest
    read of the S3 objects the items attach, by URI (their images' pixels, documents' tokens). ``tier``:
    the price tier every item is billed in ("batch" for a job run in Bedrock batch mode); None: each
    item's own service tier."""
    estimate = Estimate()
    for item in items:
        model_id = item.pricing_model_id
        input_tokens = count_message_tokens(item.request) + request_media_tokens(
            item.request, model_id, media
        )
        max_tokens = item.request.get("inferenceConfig", {}).get("maxTokens")
        output_tokens = int(max_tokens or (thinking_budget(item.request) or 0) + DEFAULT_OUTPUT_TOKENS)
        model = estimate.models.setdefault(item.model_id, ModelEstimate())
        model.items += 1
        model.input_tokens += input_tokens
        model.max_output_tokens += output_tokens
        usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
        cost = prices.cost(model_id, usage, tier=tier or price_tier(service_tier(item.request)))
        if cost is None:
            model.priced = False
        else:
            model.cost_usd = round(model.cost_usd + cost.total_usd, 10)
    return estimate


def over_budget_reason(estimate: Estimate, budget_usd: float) -> str | None:
    """Why a job over its budget is refused (ingest and `estimate` print the same words)."""
    if estimate.cost_usd <= budget_usd:
        return None
    return f"estimated cost {estimate.cost_usd:.4f} USD exceeds the job budget {budget_usd:.4f} USD"
