"""A versioned Bedrock price table: model id (or inference profile, or ARN) -> USD cost of a call.

Prices live in ``data/prices.json`` (USD per 1M tokens: input, output, cache_read, cache_write, with
``version``, ``source`` and ``as_of``). A model's entry may add ``tiers``: the same four prices for
each other way Bedrock bills that model's tokens (``flex``, ``priority``, ``latency_optimized``,
``batch``); standard on-demand is the entry itself. Arithmetic is done in Decimal so that sums of many small
calls do not drift; results are floats rounded to 10 decimal places.

Cost definition (Bedrock's Converse ``usage``: ``inputTokens`` EXCLUDES cache tokens)::

    cache_read_usd  = cacheReadInputTokens  * cache_read  / 1e6   (input price if none is published)
    cache_write_usd = cacheWriteInputTokens * cache_write / 1e6   (input price if none is published)
    input_usd       = inputTokens * input / 1e6 + cache_read_usd + cache_write_usd
    output_usd      = outputTokens * output / 1e6
    total_usd       = input_usd + output_usd

so ``input_usd`` is everything paid for the prompt side, and the two cache fields are a breakdown
already included in it (do not add them again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRICES_PATH = Path(__file__).resolve().parent / "data" / "prices.json"

# Geography prefixes of system-defined cross-region inference profiles ("us.anthropic.claude-...").
INFERENCE_PROFILE_PREFIXES = ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca")

# The tier every model's own entry prices; other tiers are listed under its "tiers".
STANDARD_TIER = "standard"

_PER_TOKEN = Decimal(1_000_000)
_ROUND = 10
# Provisioned-throughput variants carry a context-window suffix ("...-v1:0:200k"); same model, same price.
_CONTEXT_SUFFIX = re.compile(r":\d+k$")

# Converse usage keys first; Anthropic-native snake_case names are accepted as aliases.
_USAGE_KEYS = {
    "input": ("inputTokens", "input_tokens"),
    "output": ("outputTokens", "output_tokens"),
    "cache_read": ("cacheReadInputTokens", "cache_read_input_tokens"),
    "cache_write": ("cacheWriteInputTokens", "cache_creation_input_tokens"),
}


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens. A None cache price means none is published: those tokens cost the input price."""

    model_id: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    # Other tiers' prices (tier name -> price); standard on-demand is this price itself.
    tiers: Mapping[str, ModelPrice] = field(default_factory=dict)

    def for_tier(self, tier: str | None) -> ModelPrice | None:
        """This model's price in ``tier`` (None or STANDARD_TIER: on-demand standard); None if the table
        publishes no price for that tier."""
        if tier is None or tier == STANDARD_TIER:
            return self
        return self.tiers.get(tier)


@dataclass(frozen=True)
class Cost:
    """USD. ``input_usd`` includes ``cache_read_usd`` and ``cache_write_usd``; ``total = input + output``."""

    input_usd: float
    output_usd: float
    cache_read_usd: float
    cache_write_usd: float
    total_usd: float

    @classmethod
    def of_total(cls, total_usd: float) -> Cost:
        """A cost known only as its total (a results line carries no more; its parts are on the run)."""
        return cls(
            input_usd=0.0, output_usd=0.0, cache_read_usd=0.0, cache_write_usd=0.0, total_usd=total_usd
        )


class _TierEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_read: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)


class _PriceEntry(_TierEntry):
    tiers: dict[str, _TierEntry] = Field(default_factory=dict)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    version: str = Field(min_length=1)
    source: str = Field(min_length=1)
    as_of: str = Field(min_length=1)
    models: dict[str, _PriceEntry]


class PriceTable:
    """Resolve model ids to prices and compute call costs. Unknown models give None, never an error."""

    def __init__(self, version: str, source: str, as_of: str, prices: Mapping[str, ModelPrice]) -> None:
        self.version = version
        self.source = source
        self.as_of = as_of
        self._prices = {model_id.lower(): price for model_id, price in prices.items()}

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The packaged table (loaded once per process) or the table at ``path``."""
        if path is None:
            return _default_table()
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> PriceTable:
        # parse_float=Decimal keeps "0.035" exact instead of the nearest binary float.
        raw: Any = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
        parsed = _PriceFile.model_validate(raw)
        prices = {
            model_id: ModelPrice(
                model_id,
                e.input,
                e.output,
                e.cache_read,
                e.cache_write,
                tiers={
                    tier: ModelPrice(model_id, t.input, t.output, t.cache_read, t.cache_write)
                    for tier, t in e.tiers.items()
                },
            )
            for model_id, e in parsed.models.items()
        }
        return cls(parsed.version, parsed.source, parsed.as_of, prices)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(p.model_id for p in self._prices.values())

    @staticmethod
    def base_model_id(model_id: str) -> str:
        """The foundation-model id behind a model id, cross-region inference-profile id or ARN.

        ``us.anthropic.claude-3-haiku-20240307-v1:0``,
        ``arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-...`` and
        ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-...`` all give
        ``anthropic.claude-3-haiku-20240307-v1:0``. Ids it cannot interpret (application inference
        profiles, provisioned models) come back unchanged.
        """
        resource = model_id.strip()
        if resource.startswith("arn:"):
            # arn:partition:bedrock:region:account:resource-type/resource-id (the id may contain ':').
            parts = resource.split(":", 5)
            if len(parts) == 6 and "/" in parts[5]:
                resource_type, resource_id = parts[5].split("/", 1)
                if resource_type in ("foundation-model", "inference-profile"):
                    resource = resource_id
        prefix, dot, rest = resource.partition(".")
        if dot and prefix.lower() in INFERENCE_PROFILE_PREFIXES and "." in rest:
            resource = rest
        return resource

    def resolve(self, model_id: str) -> ModelPrice | None:
        base = self.base_model_id(model_id).lower()
        price = self._prices.get(base)
        if price is None and _CONTEXT_SUFFIX.search(base):
            price = self._prices.get(_CONTEXT_SUFFIX.sub("", base))
        return price

    def cost(self, model_id: str, usage: Mapping[str, Any], *, tier: str | None = None) -> Cost | None:
        """Cost of one call from Bedrock's Converse ``usage`` in ``tier`` (default standard on-demand);
        None for a model, or a model's tier, not in the table.

        Missing or null token counts count as 0; a negative or non-integer count raises ValueError.
        """
        model_price = self.resolve(model_id)
        price = model_price.for_tier(tier) if model_price is not None else None
        if price is None:
            return None
        tokens = {name: _token_count(usage, keys) for name, keys in _USAGE_KEYS.items()}
        cache_read_price = price.input if price.cache_read is None else price.cache_read
        cache_write_price = price.input if price.cache_write is None else price.cache_write
        uncached = tokens["input"] * price.input / _PER_TOKEN
        cache_read = tokens["cache_read"] * cache_read_price / _PER_TOKEN
        cache_write = tokens["cache_write"] * cache_write_price / _PER_TOKEN
        input_usd = uncached + cache_read + cache_write
        output_usd = tokens["output"] * price.output / _PER_TOKEN
        return Cost(
            input_usd=_usd(input_usd),
            output_usd=_usd(output_usd),
            cache_read_usd=_usd(cache_read),
            cache_write_usd=_usd(cache_write),
            total_usd=_usd(input_usd + output_usd),
        )


def _token_count(usage: Mapping[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        value = usage.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"usage[{key!r}] must be a non-negative integer, got {value!r}")
        return value
    return 0


def _usd(amount: Decimal) -> float:
    return float(round(amount, _ROUND))


@lru_cache(maxsize=1)
def _default_table() -> PriceTable:
    return PriceTable._read(DEFAULT_PRICES_PATH)
