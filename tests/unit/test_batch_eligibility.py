"""Execution modes (issue 20): which records may run as Bedrock batch inference, and what each mode
does with a job; the conversion of Converse requests to each family's batch record and back."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedrock_pipeline.batch.eligibility import ineligibility, plan_execution, supports_batch
from bedrock_pipeline.batch.native import family_of, from_model_output, to_model_input, unsupported
from bedrock_pipeline.domain import WorkItem
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import parse_prompt_file

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"  # no batch inference for it here
MIN = 5


def _item(n: int, model: str, *, stream: bool = False, tools: bool = False) -> WorkItem:
    request: dict = {"messages": [{"role": "user", "content": [{"text": f"prompt {n}"}]}]}
    if tools:
        request["toolConfig"] = {"tools": []}
    return WorkItem(record_id=f"r{n}", line_number=n, model_id=model, request=request, stream=stream)


items = st.builds(
    _item,
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from([HAIKU, NOVA, LLAMA, TITAN, f"us.{HAIKU}"]),
    stream=st.booleans(),
    tools=st.booleans(),
)
jobs = st.lists(items, max_size=40)


@settings(max_examples=200, deadline=None)
@given(jobs)
def test_on_demand_runs_everything_as_given(job: list[WorkItem]) -> None:
    plan = plan_execution("on_demand", job, min_records=MIN)
    assert plan.execution == "on_demand" and list(plan.items) == job and not plan.refused


@settings(max_examples=200, deadline=None)
@given(jobs)
def test_auto_chooses_batch_exactly_when_every_item_is_eligible_and_each_model_has_the_minimum(
    job: list[WorkItem],
) -> None:
    plan = plan_execution("auto", job, min_records=MIN)
    counts = Counter(item.model_id for item in job)
    batchable = bool(job) and all(ineligibility(i) is None for i in job) and min(counts.values()) >= MIN
    assert plan.execution == ("batch" if batchable else "on_demand")
    assert list(plan.items) == job and not plan.refused  # auto never drops a record
    assert plan.reason.startswith("auto: ")


@settings(max_examples=200, deadline=None)
@given(jobs)
def test_batch_mode_accounts_for_every_item_once(job: list[WorkItem]) -> None:
    plan = plan_execution("batch", job, min_records=MIN)
    assert plan.execution == "batch"
    running = list(plan.items)
    refused = [item for item, _ in plan.refused]
    assert sorted(map(id, running + refused)) == sorted(map(id, job))
    assert all(ineligibility(item) is None for item in running)
    # What runs is a valid batch job per model: at least the minimum each.
    assert all(n >= MIN for n in Counter(item.model_id for item in running).values())
    assert all(reason for _, reason in plan.refused)


def test_each_ineligibility_is_named() -> None:
    assert "streaming" in (ineligibility(_item(1, HAIKU, stream=True)) or "")
    assert "tool calling" in (ineligibility(_item(1, HAIKU, tools=True)) or "")
    assert TITAN in (ineligibility(_item(1, TITAN)) or "")
    image = _item(1, NOVA).model_copy(
        update={"request": {"messages": [{"role": "user", "content": [{"image": {}}]}]}}
    )
    assert "image" in (ineligibility(image) or "")
    assert ineligibility(_item(1, f"us.{NOVA}")) is None  # a cross-region profile of a batch model
    assert supports_batch(LLAMA) and not supports_batch(TITAN)


def test_batch_mode_refuses_a_model_below_the_minimum_with_bedrocks_quota_named() -> None:
    job = [_item(n, HAIKU) for n in range(MIN)] + [_item(100 + n, NOVA) for n in range(MIN - 1)]
    plan = plan_execution("batch", job, min_records=MIN)
    assert [i.model_id for i in plan.items] == [HAIKU] * MIN
    assert len(plan.refused) == MIN - 1
    assert all("Minimum number of records per batch inference job" in r for _, r in plan.refused)


def test_an_unknown_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="mode"):
        plan_execution("fast", [])


def test_the_job_header_sets_the_mode_and_rejects_an_unknown_one() -> None:
    data = b'{"job": {"mode": "auto", "models": ["m"]}}\n{"prompt": "hi"}\n'
    assert parse_prompt_file(data).job.mode == "auto"
    bad = parse_prompt_file(b'{"job": {"mode": "cheap"}}\n{"prompt": "hi"}\n')
    assert bad.rejected is not None and "mode" in bad.rejected
    assert parse_prompt_file(b'{"prompt": "hi"}\n', default_models=["m"]).job.mode is None


REQUEST = {
    "system": [{"text": "be brief"}],
    "messages": [
        {"role": "user", "content": [{"text": "hello"}]},
        {"role": "assistant", "content": [{"text": "hi"}]},
        {"role": "user", "content": [{"text": "again"}]},
    ],
    "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9},
}


def test_anthropic_records_use_the_messages_api_body() -> None:
    body = to_model_input("anthropic", REQUEST)
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["max_tokens"] == 64 and body["system"] == "be brief"
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["messages"][2] == {"role": "user", "content": [{"type": "text", "text": "again"}]}
    answer = from_model_output(
        "anthropic",
        {
            "content": [{"type": "text", "text": "Hi!"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 12, "output_tokens": 3},
        },
    )
    assert answer.text == "Hi!" and answer.stop_reason == "max_tokens"
    assert answer.usage == {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}
    assert answer.latency_ms is None


def test_nova_records_use_novas_native_schema() -> None:
    body = to_model_input("nova", REQUEST)
    assert body["messages"] == REQUEST["messages"] and body["system"] == [{"text": "be brief"}]
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "topP": 0.9}
    answer = from_model_output(
        "nova",
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 7, "outputTokens": 1, "totalTokens": 8},
        },
    )
    assert answer.text == "ok" and answer.usage["totalTokens"] == 8


def test_llama_records_use_the_llama3_chat_template() -> None:
    body = to_model_input("llama", REQUEST)
    prompt = body["prompt"]
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert prompt.count("<|eot_id|>") == 4
    assert body["max_gen_len"] == 64 and body["top_p"] == 0.9
    answer = from_model_output(
        "llama",
        {"generation": "yes", "prompt_token_count": 30, "generation_token_count": 2, "stop_reason": "length"},
    )
    assert answer.text == "yes" and answer.stop_reason == "max_tokens"
    assert answer.usage == {"inputTokens": 30, "outputTokens": 2, "totalTokens": 32}


def test_requests_a_batch_record_cannot_carry_are_named() -> None:
    assert (
        unsupported({**REQUEST, "guardrailConfig": {}})
        == "guardrailConfig cannot be carried into a batch record"
    )
    assert "structured output" in (unsupported({**REQUEST, "outputConfig": {}}) or "")
    assert family_of("mistral.mistral-large-2407-v1:0") is None


def test_batch_prices_are_half_of_on_demand_for_every_batch_model() -> None:
    table = PriceTable.load()
    usage = {"inputTokens": 1_000_000, "outputTokens": 1_000_000}
    priced = 0
    for model in table.model_ids:
        batch = table.cost(model, usage, tier="batch")
        if supports_batch(model):
            standard = table.cost(model, usage)
            assert batch is not None and standard is not None, model
            assert batch.total_usd == pytest.approx(standard.total_usd / 2)
            priced += 1
        else:
            assert batch is None, model
    assert priced >= 10
