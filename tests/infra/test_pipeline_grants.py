"""Each pipeline function may do what its code does and nothing more.

The expectations below are written from the code, not from the stack: a grant the code does not need
fails here as surely as a missing one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bedrock_pipeline import function_catalogue as catalogue
from tests.infra.conftest import Synthesized

# Queues each function sends to. Ingest: SqsWorkQueue.send (work items). Evaluator: dead_letter.reject
# parks a job that can never run in its queue's DLQ. Runner: work_queue.requeue (pacing sends an item its
# model has no room for again as a fresh message); the benchmark only its failed async invocations (Lambda sends the on-failure record with the function role). Consuming their
# own queue (receive, delete, change visibility for back-off) comes with the event source.
SENDS_TO = {
    "ingest": {"work"},
    "runner": {"work"},
    "evaluator": {"evaluation-dlq"},
    "benchmark": {"benchmark-async-failures"},  # Lambda's on-failure destination, sent with its role
    "collector": {"work"},  # collect_batch.collect_job: a finished batch job's chunks
}
# Prompt-bucket keys each function reads. Ingest: the prompt file and its attachments (attachment_check).
# Runner: cached model responses, item results and by-reference item bodies under results/
# (S3AnswerCache, S3ResultStore.item_results, ItemBodies), attachments beside the prompt files
# (S3MediaStore). Evaluator: a dataset anywhere in the bucket (the job names its key). Benchmark: its
# suite under benchmarks/.
READS = {
    "ingest": {"incoming/*"},
    "runner": {
        "results/*",
        "incoming/*",
        "batch/*/chunks/*",
    },  # + a batch chunk's file, its items and output lines (record_chunk)
    "collector": {"batch/*"},  # a batch job's items and Bedrock's output files
    "evaluator": {"*"},
    "benchmark": {"benchmarks/*"},
}
# Prompt-bucket keys each function writes: results/<job>/ (errors, item results, responses, summary,
# comparison); the benchmark only results/benchmarks/<run>/.
WRITES = {
    "ingest": {"results/*", "batch/*"},  # + the batch input files and their items (submit_batch)
    "collector": {"batch/*/chunks/*"},  # the chunk files (collect_job)
    "runner": {"results/*"},
    "evaluator": {"results/*"},
    "benchmark": {"results/benchmarks/*"},
}
# Tables. Ingest registers jobs in the ledger; the runner also keeps Powertools idempotency records.
# The evaluator and the benchmark touch neither.
TABLES = {
    "ingest": {"jobs"},
    "collector": {"jobs"},  # the batch registry (which pipeline job, collected once)
    "runner": {"jobs", "idempotency"},
    "evaluator": set(),
    "benchmark": set(),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _labels(synth: Synthesized) -> dict[str, str]:
    """Logical id -> a readable name: queues by role, their DLQs, the bucket, the tables."""
    resources = synth.json("pipeline")["Resources"]
    labels: dict[str, str] = {}
    functions = {
        lid: res["Properties"].get("Handler")
        or res["Properties"].get("ImageConfig", {}).get("Command", [""])[0]
        for lid, res in synth.resources("pipeline", "AWS::Lambda::Function").items()
    }
    for mapping in synth.resources("pipeline", "AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        handler = functions[props["FunctionName"]["Ref"]]
        (spec,) = [f for f in catalogue.queue_consumers() if f.handler == handler]
        assert spec.queue is not None
        queue_id = props["EventSourceArn"]["Fn::GetAtt"][0]
        labels[queue_id] = spec.queue.role
        dlq_id = resources[queue_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        labels[dlq_id] = f"{spec.queue.role}-dlq"
    for config in synth.resources("pipeline", "AWS::Lambda::EventInvokeConfig").values():
        props = config["Properties"]
        destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if destination:
            (spec,) = [f for f in catalogue.FUNCTIONS if f.handler == functions[props["FunctionName"]["Ref"]]]
            labels[destination["Fn::GetAtt"][0]] = f"{spec.name}-async-failures"
    for lid in synth.resources("pipeline", "AWS::S3::Bucket"):
        if lid.startswith("PromptsBucket"):
            labels[lid] = "prompts"
    for lid in synth.resources("pipeline", "AWS::DynamoDB::GlobalTable"):
        labels[lid] = "idempotency" if lid.startswith("Idempotency") else "jobs"
    return labels


def _render(value: Any, labels: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if "Fn::GetAtt" in value:
        return labels.get(value["Fn::GetAtt"][0], value["Fn::GetAtt"][0])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_render(part, labels) for part in parts)
    return json.dumps(value)


def _statements_of(synth: Synthesized, name: str) -> list[dict[str, Any]]:
    """Every statement of every policy attached to the named catalogue function's role."""
    (spec,) = [f for f in catalogue.FUNCTIONS if f.name == name]
    functions = synth.resources("pipeline", "AWS::Lambda::Function").values()
    (function,) = [
        f
        for f in functions
        if spec.handler
        in (f["Properties"].get("Handler"), *f["Properties"].get("ImageConfig", {}).get("Command", []))
    ]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in synth.resources("pipeline", "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _resources_with(synth: Synthesized, name: str, action: str) -> set[str]:
    labels = _labels(synth)
    return {
        _render(resource, labels)
        for statement in _statements_of(synth, name)
        if action in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    }


def _bucket_keys(resources: set[str]) -> set[str]:
    return {resource.removeprefix("prompts/") for resource in resources if resource.startswith("prompts/")}


@pytest.mark.parametrize("name", sorted(SENDS_TO))
def test_given_a_function_when_its_policy_is_read_then_it_may_send_only_to_the_queues_it_uses(
    synthesized: Synthesized, name: str
) -> None:
    assert _resources_with(synthesized, name, "sqs:SendMessage") == SENDS_TO[name]


@pytest.mark.parametrize("name", sorted(READS))
def test_given_a_function_when_its_policy_is_read_then_it_reads_only_the_keys_its_code_reads(
    synthesized: Synthesized, name: str
) -> None:
    readable = _resources_with(synthesized, name, "s3:GetObject*")
    assert _bucket_keys(readable) == READS[name]
    # ListBucket on the bucket itself: a missing key is then 404 (handled), not 403 (an error).
    assert "prompts" in readable


@pytest.mark.parametrize("name", sorted(WRITES))
def test_given_a_function_when_its_policy_is_read_then_it_writes_only_the_keys_its_code_writes(
    synthesized: Synthesized, name: str
) -> None:
    writable = _resources_with(synthesized, name, "s3:PutObject")
    assert writable == {f"prompts/{key}" for key in WRITES[name]}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_given_a_function_when_its_policy_is_read_then_it_touches_only_the_tables_it_uses(
    synthesized: Synthesized, name: str
) -> None:
    tables = _resources_with(synthesized, name, "dynamodb:UpdateItem")
    assert {t for t in tables if not t.endswith("/index/*")} == TABLES[name]


def test_given_every_policy_when_read_then_nothing_may_write_under_jobs(synthesized: Synthesized) -> None:
    """Nothing writes job manifests under jobs/ (the job ledger is a DynamoDB table)."""
    for lid, policy in synthesized.all_resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if any(str(action).startswith("s3:Put") for action in _as_list(statement["Action"])):
                assert "/jobs/" not in json.dumps(statement["Resource"]), lid


def test_given_the_functions_when_their_policies_are_read_then_every_function_is_covered() -> None:
    assert set(SENDS_TO) == set(READS) == set(WRITES) == set(TABLES) == {f.name for f in catalogue.FUNCTIONS}
