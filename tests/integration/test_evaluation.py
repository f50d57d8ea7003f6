"""Evaluation jobs end to end: the evaluation queue -> handlers.evaluator.handler (event pump) -> the
runner's core on the Bedrock emulator -> mlflow.genai.evaluate on a real MLflow server (PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient

from bedrock_pipeline.evaluation.dead_letter import REJECT_REASON_ATTRIBUTE
from local_stack.bedrock_emulator.server import EmulatorServer
from local_stack.event_pump import EventPump, QueueRoute
from local_stack.resources import LocalResources, handler_environment
from pipeline_cli.evaluate import send_job, wait_for_evaluation
from pipeline_cli.status import print_status
from pipeline_cli.target import Target

EXAMPLES = Path(__file__).resolve().parents[2] / "batch_prompts" / "eval"
GOOD_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
WEAK_MODEL = "amazon.nova-lite-v1:0"
JUDGE_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
DATASET_KEY = "datasets/eval/arithmetic.jsonl"


@dataclass
class EvalStack:
    resources: LocalResources
    mlflow: MlflowClient
    s3: Any
    sqs: Any
    emulator: EmulatorServer
    mlflow_uri: str

    def target(self) -> Target:
        """The CLI's view of this stack (its clients find moto through the test's AWS environment)."""
        return Target(
            name="tests",
            bucket=self.resources.bucket,
            jobs_table=self.resources.jobs_table,
            mlflow_uri=self.mlflow_uri,
            client_kwargs={},
        )

    def enqueue(self, job: dict[str, Any]) -> str:
        return str(send_job(self.sqs, self.resources.evaluation.url, job).job_id)

    def wait_for_object(self, key: str, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.s3.get_object(Bucket=self.resources.bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                time.sleep(0.3)
        raise AssertionError(f"s3://{self.resources.bucket}/{key} did not appear in {timeout} s")

    def wait_for_dead_letter(self, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.sqs.receive_message(
                QueueUrl=self.resources.evaluation.dlq_url,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=1,
            ).get("Messages", [])
            if messages:
                return messages[0]
        raise AssertionError(f"no message reached the evaluation DLQ in {timeout} s")

    def job_run(self, experiment: str, job_id: str) -> Any:
        found = self.mlflow.get_experiment_by_name(experiment)
        assert found is not None, f"experiment {experiment} was not created"
        runs = self.mlflow.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'job'",
        )
        assert len(runs) == 1
        return runs[0]


@pytest.fixture
def eval_stack(
    aws_env: dict[str, str],
    moto_server: str,
    mlflow_server_postgres: str,
    local_resources_factory: Any,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[EvalStack]:
    """A cold start of the evaluator on fresh resources, its queue pumped like Lambda's event source."""
    # A job runs for seconds: a long visibility timeout keeps the message from being delivered twice.
    resources = local_resources_factory(visibility_timeouts={"ingest": 2, "work": 2, "evaluation": 120})
    env = handler_environment(
        moto_url=moto_server,
        mlflow_url=mlflow_server_postgres,
        resources=resources,
        emulator_url=emulator.url,
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from handlers import evaluator, runtime

    caches = (
        runtime.environment,
        evaluator.evaluator,
        evaluator.dlq_url,
        evaluator.evaluator_environment,
    )
    for cache in caches:
        cache.cache_clear()
    runtime.reset_core()
    emulator.reset()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=resources.bucket, Key=DATASET_KEY, Body=(EXAMPLES / "arithmetic.jsonl").read_bytes())
    pump = EventPump(
        [QueueRoute(resources.evaluation.url, "handlers.evaluator.handler", function_timeout_seconds=120)],
        endpoint_url=moto_server,
    )
    pump.start()
    try:
        yield EvalStack(
            resources,
            MlflowClient(tracking_uri=mlflow_server_postgres),
            s3,
            boto3.client("sqs"),
            emulator,
            mlflow_server_postgres,
        )
    finally:
        pump.stop()
        emulator.reset()  # the emulator is shared by the session: back to its start-up config
        for cache in caches:
            cache.cache_clear()
        runtime.reset_core()


def example_job(**overrides: Any) -> dict[str, Any]:
    job = json.loads((EXAMPLES / "job.json").read_text())
    job.update(overrides)
    return job


def test_job_answers_scores_and_compares_models(eval_stack: EvalStack) -> None:
    """Given the example dataset (24 rows) and job, a strong and a weak model and a judge on the emulator
    When the job is enqueued on the evaluation queue
    Then each model gets an evaluation run with MLflow's aggregate metrics, every answer's trace carries
    its assessments, the judge was called through the emulator, and the parent run ranks the strong model."""
    eval_stack.emulator.configure(GOOD_MODEL, accuracy=1.0)
    eval_stack.emulator.configure(WEAK_MODEL, accuracy=0.4)
    sent = send_job(
        eval_stack.sqs, eval_stack.resources.evaluation.url, example_job(experiment="tests/eval-happy")
    )
    job_id = str(sent.job_id)

    # What `evaluate --wait` does: wait for the comparison, print the table, check the gates.
    target = eval_stack.target()
    outcome = wait_for_evaluation(target, sent, None, 80, progress=False)
    assert outcome is not None and outcome.comparison is not None
    assert outcome.print({"correctness_judge": 0.5}) == 0
    assert outcome.print({"correctness_judge": 1.01}) == 1  # the gate is not met: CI fails
    assert print_status(target, job_id) == 0

    comparison = json.loads(eval_stack.wait_for_object(f"results/{job_id}/comparison.json", timeout=5))

    assert comparison["bestModel"] == GOOD_MODEL
    assert comparison["primaryMetric"] == "correctness_judge"
    assert comparison["marginPoints"] > 0
    parent = eval_stack.job_run("tests/eval-happy", job_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pipeline.kind"] == "evaluation"
    assert parent.data.tags["pipeline.eval.best_model"] == GOOD_MODEL
    assert parent.data.metrics["answered"] == 48
    artifacts = {a.path for a in eval_stack.mlflow.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "comparison.png", "comparison.json"} <= artifacts
    png = Path(eval_stack.mlflow.download_artifacts(parent.info.run_id, "comparison.png")).read_bytes()
    assert png.startswith(b"\x89PNG")

    experiment_id = parent.info.experiment_id
    eval_runs = eval_stack.mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'evaluation'",
    )
    by_model = {r.data.tags["pipeline.model_id"]: r for r in eval_runs}
    assert set(by_model) == {GOOD_MODEL, WEAK_MODEL}
    good, weak = by_model[GOOD_MODEL].data.metrics, by_model[WEAK_MODEL].data.metrics
    assert good["contains_match/mean"] == 1.0 and good["correctness_judge/mean"] == 1.0
    assert good["exact_match/mean"] == 1.0
    assert 0 < weak["correctness_judge/mean"] < 1.0
    assert weak["correctness_judge/mean"] == weak["contains_match/mean"]  # the emulator's judge is exact
    assert good["latency/mean"] == 1.0 and good["cost/mean"] == 1.0
    assert good["judge_calls"] == 24 and good["cost_usd"] > 0
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in eval_runs)

    calls = eval_stack.mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`pipeline.job_id` = '{job_id}' and tags.`pipeline.role` = 'call'",
    )
    assert len(calls) == 48
    assert {c.data.tags["pipeline.kind"] for c in calls} == {"evaluation"}
    wrong = [
        line
        for line in map(
            json.loads, eval_stack.wait_for_object(f"results/{job_id}/results.jsonl").splitlines()
        )
        if line["modelId"] == WEAK_MODEL and "modelOutput" in line
    ]
    trace = eval_stack.mlflow.get_trace(wrong[0]["mlflow"]["traceId"])
    assessments = {a.name: a for a in trace.info.assessments}
    assert {
        "exact_match",
        "contains_match",
        "latency",
        "cost",
        "correctness_judge",
        "expected_response",
    } <= set(assessments)
    answered = wrong[0]["modelOutput"]["output"]["message"]["content"][0]["text"]
    expected = assessments["expected_response"].value
    assert assessments["correctness_judge"].value == (expected.rstrip(".") in answered)
    assert assessments["correctness_judge"].source.source_id == JUDGE_MODEL

    stats = eval_stack.emulator.stats()["models"]
    assert stats[JUDGE_MODEL]["calls"] == 48
    assert stats[GOOD_MODEL]["calls"] == 24 and stats[WEAK_MODEL]["calls"] == 24


def test_invalid_job_is_parked_in_the_dlq_with_its_reason(eval_stack: EvalStack) -> None:
    """Given a message that is not a valid job (no models, an unknown scorer)
    When it arrives on the evaluation queue
    Then it is moved to the DLQ at once with the reason as a message attribute, and no model is called."""
    body = json.dumps(
        {"version": 1, "job_id": "bad-job-1", "dataset": "s3://bedrock-prompts/x.jsonl", "scorers": ["bleu"]}
    )
    eval_stack.sqs.send_message(QueueUrl=eval_stack.resources.evaluation.url, MessageBody=body)

    parked = eval_stack.wait_for_dead_letter()

    reason = parked["MessageAttributes"][REJECT_REASON_ATTRIBUTE]["StringValue"]
    assert "models: Field required" in reason and "scorers.0" in reason
    assert parked["Body"] == body
    assert parked["MessageAttributes"]["JobId"]["StringValue"] == "bad-job-1"
    errors = eval_stack.wait_for_object("results/bad-job-1/errors.jsonl", timeout=5).decode()
    assert "job rejected: invalid evaluation job" in errors
    assert eval_stack.emulator.stats()["total_calls"] == 0


def test_job_whose_dataset_is_missing_is_parked_in_the_dlq(eval_stack: EvalStack) -> None:
    """Given a valid job that names a dataset object that does not exist
    When it is enqueued
    Then the DLQ gets it with a reason naming the missing object, on its first receive (the wait is far
    shorter than the queue's 120 s visibility timeout, so no redelivery happened)."""
    job_id = eval_stack.enqueue(
        example_job(dataset={"key": "datasets/missing.jsonl", "bucket": eval_stack.resources.bucket})
    )

    parked = eval_stack.wait_for_dead_letter()

    reason = parked["MessageAttributes"][REJECT_REASON_ATTRIBUTE]["StringValue"]
    assert reason == f"dataset s3://{eval_stack.resources.bucket}/datasets/missing.jsonl does not exist"
    assert parked["MessageAttributes"]["JobId"]["StringValue"] == job_id
    assert parked["MessageAttributes"]["SourceMessageId"]["StringValue"]


def test_job_over_budget_stops_before_any_call(eval_stack: EvalStack) -> None:
    """Given the example job with a budget below its pre-flight estimate
    When it is enqueued
    Then the parent run is FAILED with the reason and the budget tag, no model or judge is called,
    and errors.jsonl says why."""
    job_id = eval_stack.enqueue(example_job(experiment="tests/eval-budget", budget_usd=0.0001))

    errors = eval_stack.wait_for_object(f"results/{job_id}/errors.jsonl").decode()

    assert "exceeds the job budget 0.000100 USD" in errors
    parent = eval_stack.job_run("tests/eval-budget", job_id)
    deadline = time.monotonic() + 10
    while parent.info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
        parent = eval_stack.mlflow.get_run(parent.info.run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["pipeline.budget_exceeded"] == "true"
    assert "no model was called" in parent.data.tags["pipeline.error"]
    assert parent.data.metrics["estimated_cost_usd"] > 0.0001
    assert eval_stack.emulator.stats()["total_calls"] == 0
