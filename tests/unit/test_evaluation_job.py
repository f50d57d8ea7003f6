"""Evaluation jobs without servers: the job schema, the dataset parser, the scorers, the estimate
and the comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bedrock_pipeline.domain import JobRef
from bedrock_pipeline.evaluation.answering import work_items
from bedrock_pipeline.evaluation.comparison import ModelScore, compare, scores_from_metrics
from bedrock_pipeline.evaluation.evaluate import Evaluator
from bedrock_pipeline.evaluation.job import EvaluationJob, JobRejected, parse_dataset, parse_job
from bedrock_pipeline.evaluation.scorers import contains_match, exact_match, judge_request
from bedrock_pipeline.pricing import PriceTable
from local_stack.bedrock_emulator.judge import judge_reply

EXAMPLES = Path(__file__).resolve().parents[2] / "batch_prompts" / "eval"


def job_document(**overrides: object) -> dict[str, object]:
    document = json.loads((EXAMPLES / "job.json").read_text())
    document.update(overrides)
    return document


def test_example_job_is_valid_and_fills_defaults() -> None:
    """Given the example job file without job id or dataset bucket
    When it is parsed as a queue message
    Then it validates, and gets the fallback job id and the deployment's bucket."""
    job = parse_job(json.dumps(job_document()), default_bucket="prompts", fallback_job_id="eval-x")

    assert job.job_id == "eval-x"
    assert job.dataset.uri == "s3://prompts/datasets/eval/arithmetic.jsonl"
    assert job.experiment_name() == "bedrock-eval/arithmetic"
    assert "correctness_judge" in job.scorers


def test_dataset_may_be_an_s3_uri() -> None:
    """Given a dataset written as an s3:// URI
    When the job is validated
    Then bucket and key are split out, and the default experiment follows the file name."""
    job = EvaluationJob.model_validate(
        {"version": 1, "dataset": "s3://my-bucket/evals/qa-set.jsonl", "models": ["amazon.nova-lite-v1:0"]}
    )

    assert (job.dataset.bucket, job.dataset.key) == ("my-bucket", "evals/qa-set.jsonl")
    assert job.experiment_name() == "bedrock-eval/qa-set"
    assert job.scorers == ["exact_match", "contains_match", "latency", "cost"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"version": 2}, "version"),
        ({"models": []}, "models"),
        ({"models": ["a", "a"]}, "models must be distinct"),
        ({"scorers": ["bleu"]}, "scorers.0"),
        ({"judge_model": None}, "correctness_judge needs judge_model"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"modells": ["x"]}, "modells: Extra inputs are not permitted"),
        ({"dataset": "http://example.com/x.jsonl"}, "dataset must be s3://bucket/key"),
    ],
)
def test_invalid_jobs_are_rejected_with_a_reason(change: dict[str, object], fragment: str) -> None:
    """Given the example job with one mistake
    When it is parsed
    Then JobRejected names the field and the problem."""
    with pytest.raises(JobRejected) as caught:
        parse_job(json.dumps(job_document(**change)), default_bucket="b", fallback_job_id="eval-x")

    assert fragment in caught.value.reason


def test_a_body_that_is_not_json_is_rejected() -> None:
    """Given a message body that is not JSON
    When it is parsed
    Then the reason says so and no job id is known."""
    with pytest.raises(JobRejected) as caught:
        parse_job("run my eval please", default_bucket="b", fallback_job_id="eval-x")

    assert caught.value.reason.startswith("message body is not JSON")
    assert caught.value.job_id is None


def test_example_dataset_has_twenty_valid_rows_or_more() -> None:
    """Given the example dataset
    When it is parsed
    Then every line is a row in MLflow's evaluation-dataset shape, with no errors."""
    dataset = parse_dataset((EXAMPLES / "arithmetic.jsonl").read_bytes())

    assert len(dataset.rows) >= 20 and not dataset.errors
    assert all(row.expectations["expected_response"].startswith("The answer is") for row in dataset.rows)


def test_bad_dataset_lines_are_reported_and_good_ones_kept() -> None:
    """Given a dataset with good rows and four kinds of bad line
    When it is parsed
    Then the good rows remain (with ids) and each bad line is reported with its number."""
    lines = [
        {"inputs": {"question": "What is 2 + 2?"}, "expectations": {"expected_response": "4"}},
        "not json",
        {"inputs": "What is 3 + 3?"},
        {"inputs": {"context": "no question"}},
        {"id": "row-1", "inputs": {"prompt": "duplicate id of line 1"}},
        {"id": "q7", "inputs": {"query": "What is MLflow?"}, "tags": {"topic": "ml"}},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()

    dataset = parse_dataset(body)

    assert [(r.record_id, r.prompt) for r in dataset.rows] == [
        ("row-1", "What is 2 + 2?"),
        ("q7", "What is MLflow?"),
    ]
    assert [e["lineNumber"] for e in dataset.errors] == [2, 3, 4, 5]
    assert "duplicate id 'row-1'" in dataset.errors[3]["reason"]


def test_dataset_without_rows_cannot_run() -> None:
    """Given an empty dataset
    When it is parsed
    Then there are no rows (the evaluator rejects the job with the first reason)."""
    assert parse_dataset(b"\n\n").rows == []


@pytest.mark.parametrize(
    ("answer", "exact", "contains"),
    [
        ("The answer is 42.", True, True),
        ("  the answer is 42 ", True, True),
        ("I think the answer is 42. Really.", False, True),
        ("The answer is 43.", False, False),
    ],
)
def test_match_scorers(answer: str, exact: bool, contains: bool) -> None:
    """Given an answer and the expectation "The answer is 42."
    When the exact and contains scorers run
    Then case, spacing and a trailing full stop do not matter; extra text only passes contains."""
    expectations = {"expected_response": "The answer is 42."}

    assert exact_match(outputs=answer, expectations=expectations).value is exact
    assert contains_match(outputs=answer, expectations=expectations).value is contains


def test_match_scorers_report_a_missing_expectation_as_an_error() -> None:
    """Given a row without expectations
    When a match scorer runs
    Then the feedback carries an error rather than a made-up value."""
    feedback = exact_match(outputs="x", expectations={})

    assert feedback.value is None and "expected_response" in str(feedback.error)


def test_emulator_judge_reads_the_judge_prompt() -> None:
    """Given the judge prompt the correctness scorer sends
    When the emulator's judge skill reads it
    Then it says yes exactly when the candidate contains the expected answer."""

    def verdict(candidate: str) -> str | None:
        request = judge_request("What is 40 + 2?", "The answer is 42.", candidate)
        return judge_reply(request["messages"][0]["content"][0]["text"])

    assert verdict("Sure. The answer is 42.") is not None and verdict("Sure. The answer is 42.").startswith(
        "VERDICT: yes"
    )
    assert str(verdict("The answer is 41.")).startswith("VERDICT: no")
    assert judge_reply("What is 40 + 2?") is None


def test_estimate_counts_the_judge_calls() -> None:
    """Given the example job and dataset
    When the pre-flight estimate runs with and without the judge
    Then the judge adds one priced call per answer."""
    dataset = parse_dataset((EXAMPLES / "arithmetic.jsonl").read_bytes())
    job = parse_job(json.dumps(job_document()), default_bucket="b", fallback_job_id="eval-x")
    ref = JobRef(
        job_id="eval-x",
        kind="evaluation",
        experiment_id="1",
        parent_run_id="r",
        source_bucket="b",
        source_key="k",
        source_etag="e",
    )
    evaluator = Evaluator(s3=None, tracker=None, prices=PriceTable.load(), gateway=None, bucket="b")  # type: ignore[arg-type]
    messages = work_items(job, ref, dataset.rows)

    with_judge = evaluator.estimate(job, dataset.rows, messages)
    without = evaluator.estimate(job.model_copy(update={"scorers": ["exact_match"]}), dataset.rows, messages)

    assert len(messages) == 2 * len(dataset.rows)
    assert with_judge.judge.models[str(job.judge_model)].items == len(messages)
    assert with_judge.cost_usd > without.cost_usd > 0
    assert without.judge.cost_usd == 0


def test_comparison_ranks_by_quality_then_cost() -> None:
    """Given three models' scores (two tie on quality)
    When they are compared
    Then the cheaper of the tied best leads, the margin is in percentage points, and the table,
    the markdown and the chart all come out."""
    models = [
        ModelScore("a", 10, 10, {"correctness_judge": 0.9, "exact_match": 0.5}, cost_usd=0.02),
        ModelScore("b", 10, 10, {"correctness_judge": 0.9, "exact_match": 0.4}, cost_usd=0.01),
        ModelScore("c", 10, 8, {"correctness_judge": 0.6, "exact_match": 0.1}, cost_usd=0.001),
    ]

    comparison = compare(models, ["exact_match", "correctness_judge"])

    assert comparison.primary_metric == "correctness_judge"
    assert [m.model_id for m in comparison.ranked] == ["b", "a", "c"]
    assert comparison.margin_points() == 0.0
    assert comparison.rows()[2]["gap_points"] == 30.0
    csv_text = comparison.to_csv()
    assert csv_text.splitlines()[0].startswith("rank,model,correctness_judge,exact_match,answered")
    assert "Best: **b**" in comparison.to_markdown()
    png = comparison.to_png()
    assert png is not None and png.startswith(b"\x89PNG")


def test_scores_from_mlflow_metrics_keep_the_means() -> None:
    """Given the metrics mlflow.genai.evaluate logs
    When they are read as scores
    Then each scorer's mean is kept under the scorer's name."""
    assert scores_from_metrics({"exact_match/mean": 0.5, "latency/mean": 1.0, "other": 3.0}) == {
        "exact_match": 0.5,
        "latency": 1.0,
    }
