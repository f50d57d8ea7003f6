"""Specification of the price table: resolution of model ids and costs checked against hand-computed figures.

Every expected figure below is worked out by hand from the published per-1M-token prices written in
the test itself, never read from the table under test.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bedrock_pipeline.pricing import DEFAULT_PRICES_PATH, Cost, PriceTable

HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET_35_V2 = "anthropic.claude-3-5-sonnet-20241022-v2:0"

# (model id, USD per 1M input tokens, USD per 1M output tokens): Bedrock us-east-1 on-demand, as published.
PUBLISHED = [
    (HAIKU_3, "0.25", "1.25"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "0.80", "4.00"),
    (SONNET_35_V2, "3.00", "15.00"),
    ("anthropic.claude-3-7-sonnet-20250219-v1:0", "3.00", "15.00"),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "3.00", "15.00"),
    ("amazon.nova-micro-v1:0", "0.035", "0.14"),
    ("amazon.nova-lite-v1:0", "0.06", "0.24"),
    ("amazon.nova-pro-v1:0", "0.80", "3.20"),
    ("meta.llama3-1-8b-instruct-v1:0", "0.22", "0.22"),
    ("meta.llama3-1-70b-instruct-v1:0", "0.72", "0.72"),
    ("mistral.mistral-large-2407-v1:0", "2.00", "6.00"),
]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_given_the_packaged_file_then_it_is_versioned_and_names_its_source(table: PriceTable) -> None:
    raw = json.loads(DEFAULT_PRICES_PATH.read_text(encoding="utf-8"))
    assert table.version == raw["version"] and table.version
    assert table.source.startswith("https://aws.amazon.com/bedrock/pricing")
    assert table.as_of == raw["as_of"]
    assert raw["unit"] == "per 1M tokens" and raw["currency"] == "USD"


def test_given_no_path_when_loaded_twice_then_the_same_cached_table_is_returned() -> None:
    assert PriceTable.load() is PriceTable.load()


@pytest.mark.parametrize(("model_id", "input_price", "output_price"), PUBLISHED)
def test_given_a_published_model_when_1m_input_and_1m_output_tokens_then_cost_is_the_two_list_prices(
    table: PriceTable, model_id: str, input_price: str, output_price: str
) -> None:
    cost = table.cost(model_id, {"inputTokens": 1_000_000, "outputTokens": 1_000_000})
    assert cost is not None
    assert cost.input_usd == float(input_price)
    assert cost.output_usd == float(output_price)
    assert cost.total_usd == float(Decimal(input_price) + Decimal(output_price))


def test_given_claude_3_haiku_when_1000_in_and_500_out_then_cost_is_0_000875_usd(table: PriceTable) -> None:
    # $0.25/1M * 1000 = 0.00025; $1.25/1M * 500 = 0.000625; total 0.000875
    cost = table.cost(HAIKU_3, {"inputTokens": 1000, "outputTokens": 500, "totalTokens": 1500})
    assert cost == Cost(
        input_usd=0.00025, output_usd=0.000625, cache_read_usd=0.0, cache_write_usd=0.0, total_usd=0.000875
    )


def test_given_nova_micro_when_a_small_call_then_fractions_of_a_cent_are_exact(table: PriceTable) -> None:
    # $0.035/1M * 123 = 0.000004305; $0.14/1M * 45 = 0.0000063; total 0.000010605
    cost = table.cost("amazon.nova-micro-v1:0", {"inputTokens": 123, "outputTokens": 45})
    assert cost is not None
    assert (cost.input_usd, cost.output_usd, cost.total_usd) == (0.000004305, 0.0000063, 0.000010605)


def test_given_cache_tokens_when_costed_then_they_are_priced_separately_and_included_in_input(
    table: PriceTable,
) -> None:
    # Claude 3.5 Sonnet v2: input $3, output $15, cache read $0.30, cache write $3.75 per 1M.
    # Bedrock's inputTokens excludes cache tokens, so each count is priced once:
    # 2000*3 = 0.006; 10000*0.30 = 0.003; 4000*3.75 = 0.015; input side 0.024; 1000*15 = 0.015.
    usage = {
        "inputTokens": 2000,
        "outputTokens": 1000,
        "cacheReadInputTokens": 10_000,
        "cacheWriteInputTokens": 4000,
    }
    cost = table.cost(SONNET_35_V2, usage)
    assert cost == Cost(
        input_usd=0.024, output_usd=0.015, cache_read_usd=0.003, cache_write_usd=0.015, total_usd=0.039
    )


def test_given_nova_lite_cache_reads_when_costed_then_the_75_percent_discount_applies(
    table: PriceTable,
) -> None:
    # Nova Lite input $0.06/1M, cache read $0.015/1M: 1M cached tokens read = 0.015.
    cost = table.cost("amazon.nova-lite-v1:0", {"inputTokens": 0, "cacheReadInputTokens": 1_000_000})
    assert cost is not None and cost.cache_read_usd == 0.015 and cost.input_usd == 0.015


def test_given_a_model_without_cache_prices_when_cache_tokens_then_they_cost_the_input_price(
    table: PriceTable,
) -> None:
    # Llama 3.1 8B publishes no caching price: 1000 cache-read tokens at the $0.22/1M input price = 0.00022.
    cost = table.cost("meta.llama3-1-8b-instruct-v1:0", {"cacheReadInputTokens": 1000})
    assert cost is not None and cost.cache_read_usd == 0.00022 and cost.total_usd == 0.00022


def test_given_anthropic_snake_case_usage_when_costed_then_it_counts_like_converse_usage(
    table: PriceTable,
) -> None:
    native = {"input_tokens": 1000, "output_tokens": 500, "cache_creation_input_tokens": 0}
    assert table.cost(HAIKU_3, native) == table.cost(HAIKU_3, {"inputTokens": 1000, "outputTokens": 500})


def test_given_empty_usage_then_cost_is_zero(table: PriceTable) -> None:
    assert table.cost(HAIKU_3, {}) == Cost(0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_given_a_negative_or_non_integer_token_count_then_cost_raises_value_error(
    table: PriceTable, bad: object
) -> None:
    with pytest.raises(ValueError, match="inputTokens"):
        table.cost(HAIKU_3, {"inputTokens": bad})


@pytest.mark.parametrize(
    "model_id",
    [
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "eu.anthropic.claude-3-haiku-20240307-v1:0",
        "apac.anthropic.claude-3-haiku-20240307-v1:0",
        "global.anthropic.claude-3-haiku-20240307-v1:0",
        "us-gov.anthropic.claude-3-haiku-20240307-v1:0",
        "jp.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-3-haiku-20240307-v1:0",
        "anthropic.claude-3-haiku-20240307-v1:0:200k",
        "  anthropic.claude-3-haiku-20240307-v1:0 ",
    ],
)
def test_given_a_profile_id_or_arn_then_it_resolves_to_the_base_model_price(
    table: PriceTable, model_id: str
) -> None:
    price = table.resolve(model_id)
    assert price is not None and price.model_id == HAIKU_3
    assert table.cost(model_id, {"inputTokens": 1000, "outputTokens": 500}).total_usd == 0.000875  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("model_id", "base"),
    [
        ("us.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
        ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
        ("arn:aws:bedrock:eu-west-1:111122223333:inference-profile/eu.meta.llama3-1-8b-instruct-v1:0",
         "meta.llama3-1-8b-instruct-v1:0"),
        # An application inference profile's id says nothing about its model: left as is.
        ("arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc123",
         "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc123"),
    ],
)  # fmt: skip
def test_given_an_id_when_base_model_id_then_the_foundation_model_id_is_returned(
    model_id: str, base: str
) -> None:
    assert PriceTable.base_model_id(model_id) == base


@pytest.mark.parametrize(
    "model_id",
    [
        "acme.unknown-model-v1:0",
        "us.acme.unknown-model-v1:0",
        "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc123",
        "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/xyz",
        "",
        "us.",
    ],
)
def test_given_an_unknown_model_then_resolve_and_cost_return_none(table: PriceTable, model_id: str) -> None:
    assert table.resolve(model_id) is None
    assert table.cost(model_id, {"inputTokens": 10, "outputTokens": 10}) is None


def test_given_a_custom_file_when_loaded_then_its_prices_and_version_are_used(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "version": "test-1",
                "source": "https://example.invalid/prices",
                "as_of": "2025-01-01",
                "models": {
                    "acme.model-v1:0": {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.5}
                },
            }
        )
    )
    custom = PriceTable.load(path)
    assert custom.version == "test-1"
    assert custom.model_ids == ("acme.model-v1:0",)
    # 1000*1 + 1000*0.1 + 1000*1.5 = 0.0026 input side; 1000*2 = 0.002 output.
    usage = {
        "inputTokens": 1000,
        "outputTokens": 1000,
        "cacheReadInputTokens": 1000,
        "cacheWriteInputTokens": 1000,
    }
    assert custom.cost("eu.acme.model-v1:0", usage) == Cost(0.0026, 0.002, 0.0001, 0.0015, 0.0046)


def test_given_a_file_with_a_negative_price_when_loaded_then_it_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"version": "x", "source": "s", "as_of": "d", "models": {"m": {"input": -1, "output": 1}}})
    )
    with pytest.raises(ValidationError):
        PriceTable.load(path)


@given(
    model=st.sampled_from([m for m, _, _ in PUBLISHED]),
    tokens=st.tuples(*[st.integers(min_value=0, max_value=10_000_000)] * 4),
)
def test_property_total_is_input_plus_output_and_input_covers_cache_parts(
    model: str, tokens: tuple[int, int, int, int]
) -> None:
    table = PriceTable.load()
    usage = dict(
        zip(
            ["inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"],
            tokens,
            strict=True,
        )
    )
    cost = table.cost(model, usage)
    assert cost is not None
    assert cost.total_usd == pytest.approx(cost.input_usd + cost.output_usd, abs=1e-9)
    assert cost.input_usd >= cost.cache_read_usd + cost.cache_write_usd - 1e-9
    assert all(round(v, 10) == v for v in (cost.input_usd, cost.output_usd, cost.total_usd))


def test_given_the_pipelines_default_models_then_every_one_has_a_price(table: PriceTable) -> None:
    from bedrock_pipeline import settings

    assert [m for m in settings.DEFAULT_MODELS if table.resolve(m) is None] == []


def test_a_tier_is_priced_from_its_own_entry_and_an_unpublished_tier_has_no_cost(tmp_path) -> None:
    table_file = tmp_path / "prices.json"
    table_file.write_text(
        '{"version": "t", "source": "s", "as_of": "d", "models": {"m.x-v1:0": {"input": 2, "output": 8,'
        ' "tiers": {"batch": {"input": 1, "output": 4}}}}}'
    )
    table = PriceTable.load(table_file)
    usage = {"inputTokens": 1_000_000, "outputTokens": 1_000_000}
    assert table.cost("m.x-v1:0", usage).total_usd == 10.0
    assert table.cost("m.x-v1:0", usage, tier="standard").total_usd == 10.0
    assert table.cost("m.x-v1:0", usage, tier="batch").total_usd == 5.0
    assert table.cost("m.x-v1:0", usage, tier="flex") is None
