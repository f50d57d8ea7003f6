"""`evaluate`: enqueue an evaluation job on the evaluation queue (local stack or deployed stack).

The job is a JSON file (batch_prompts/eval/job.json) or built from flags; flags override the file.
`--dataset-file` uploads a local JSON Lines dataset to the bucket first. The same message can be
sent without this CLI:

  aws sqs send-message --queue-url "$EVALUATION_QUEUE_URL" --message-body file://job.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from bedrock_pipeline import settings
from bedrock_pipeline.evaluation.job import EvaluationJob, JobRejected, new_job_id, parse_dataset
from bedrock_pipeline.prompt_file.schema import describe
from pipeline_cli.errors import CliError, UsageError, read_input
from pipeline_cli.status import EvaluationOutcome, evaluation_outcome
from pipeline_cli.target import DEPLOYED_STACK_NAME, Target, deployed_target, local_target

OUTPUT_EVALUATION_QUEUE_URL = "EvaluationQueueUrl"
DATASETS_PREFIX = "datasets/"

EPILOG = """
examples:
  # upload the example dataset and enqueue the example job on the local stack (`make up` first)
  python -m pipeline_cli evaluate batch_prompts/eval/job.json --dataset-file batch_prompts/eval/arithmetic.jsonl

  # a job from flags, against a dataset already in the bucket
  python -m pipeline_cli evaluate --dataset s3://bedrock-prompts/datasets/qa.jsonl \\
      --models amazon.nova-lite-v1:0 anthropic.claude-3-haiku-20240307-v1:0 \\
      --scorers contains_match correctness_judge --judge-model anthropic.claude-3-5-sonnet-20240620-v1:0

  # for CI: wait with a progress bar, print the comparison, exit 1 if the best model scores under 0.8
  python -m pipeline_cli evaluate batch_prompts/eval/job.json --dataset-file batch_prompts/eval/arithmetic.jsonl \\
      --wait --fail-under contains_match=0.8

  # the same message with the AWS CLI
  aws sqs send-message --queue-url "$EVALUATION_QUEUE_URL" --message-body file://job.json
"""


def evaluation_queue_url(target: Target, stack_name: str = DEPLOYED_STACK_NAME) -> str:
    if target.name == "local":
        return str(target.client("sqs").get_queue_url(QueueName=settings.EVALUATION_QUEUE_NAME)["QueueUrl"])
    stack = target.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if OUTPUT_EVALUATION_QUEUE_URL not in outputs:
        raise CliError(f"stack {stack_name} has no output {OUTPUT_EVALUATION_QUEUE_URL}: is it deployed?")
    return outputs[OUTPUT_EVALUATION_QUEUE_URL]


def build_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job document: the file (if any), then the flags on top."""
    job: dict[str, Any] = {"version": 1}
    if args.job_file:
        try:
            job = json.loads(read_input(args.job_file, "a JSON evaluation job"))
        except ValueError as exc:
            raise UsageError(f"{args.job_file} is not valid JSON: {exc}") from None
        if not isinstance(job, dict):
            raise UsageError(f"{args.job_file} must hold a JSON object (an evaluation job)")
    if args.dataset:
        job["dataset"] = args.dataset
    for name in ("models", "scorers", "judge_model", "experiment", "budget_usd", "job_id"):
        value = getattr(args, name)
        if value is not None:
            job[name] = value
    return job


def send_job(sqs: Any, queue_url: str, job: dict[str, Any]) -> EvaluationJob:
    """Validate (the same model the evaluator uses), give the job an id, send it; returns the job."""
    validated = EvaluationJob.model_validate(job)
    if validated.job_id is None:
        validated = validated.model_copy(update={"job_id": new_job_id(validated.dataset.key)})
    sqs.send_message(QueueUrl=queue_url, MessageBody=validated.model_dump_json(exclude_none=True))
    return validated


def parse_gates(values: list[str] | None) -> dict[str, float]:
    """`--fail-under SCORER=VALUE` flags as {scorer: minimum}."""
    gates: dict[str, float] = {}
    for value in values or []:
        name, _, number = value.partition("=")
        try:
            gates[name.strip()] = float(number)
        except ValueError:
            raise UsageError(
                f"--fail-under wants SCORER=VALUE (e.g. contains_match=0.8), not {value!r}"
            ) from None
        if not name.strip():
            raise UsageError(f"--fail-under wants SCORER=VALUE (e.g. contains_match=0.8), not {value!r}")
    return gates


def cmd_evaluate(args: argparse.Namespace) -> int:
    gates = parse_gates(args.fail_under)
    if gates and not args.wait:
        raise UsageError("--fail-under needs --wait (the gate is checked once the job has ended)")
    job = build_job(args)
    dataset_body = read_input(args.dataset_file, "a JSON Lines dataset") if args.dataset_file else None
    if dataset_body is not None:  # uploaded below, to the target's bucket
        given = job.get("dataset")
        key = given.get("key") if isinstance(given, dict) else None
        job["dataset"] = {"key": key or f"{DATASETS_PREFIX}{Path(args.dataset_file).name}"}
    try:  # before anything is uploaded or sent: a bad job is a usage error
        EvaluationJob.model_validate(job)
    except ValidationError as exc:
        raise UsageError(f"invalid evaluation job: {describe(exc)}") from None
    target = deployed_target(args.stack) if args.aws else local_target()
    if dataset_body is not None:
        key = job["dataset"]["key"]
        target.client("s3").put_object(Bucket=target.bucket, Key=key, Body=dataset_body)
        job["dataset"] = {"bucket": target.bucket, "key": key}
        print(f"{args.dataset_file} -> s3://{target.bucket}/{key}")
    if isinstance(job.get("dataset"), dict) and not job["dataset"].get("bucket"):
        job["dataset"] = {**job["dataset"], "bucket": target.bucket}
    sent = send_job(target.client("sqs"), evaluation_queue_url(target, args.stack), job)
    print(
        f"evaluation job {sent.job_id} enqueued ({len(sent.models)} models, scorers {', '.join(sent.scorers)})"
    )
    print(f"results: s3://{target.bucket}/{settings.RESULTS_PREFIX}{sent.job_id}/comparison.json")
    print(f"MLflow experiment: {sent.experiment_name()} (parent run tagged pipeline.job_id={sent.job_id})")
    if not args.wait:
        print(f"follow with: python -m pipeline_cli status {sent.job_id}")
        return 0
    outcome = wait_for_evaluation(target, sent, dataset_body, args.timeout)
    if outcome is None:
        raise CliError(
            f"evaluation job {sent.job_id} did not end within {args.timeout:.0f} s: "
            f"follow it with `status {sent.job_id}`, or `dlq inspect --queue evaluation`"
        )
    return outcome.print(gates)


def wait_for_evaluation(
    target: Target, job: EvaluationJob, dataset_body: bytes | None, timeout_s: float, *, progress: bool = True
) -> EvaluationOutcome | None:
    """Poll until the job's comparison (or its refusal) is written; a bar counts the answers recorded."""
    assert job.job_id is not None
    total = len(job.models) * _dataset_rows(target, job, dataset_body)
    deadline = time.monotonic() + timeout_s
    bar = tqdm(total=total, unit="answer", desc="evaluating", disable=not progress, dynamic_ncols=True)
    counter = _AnswerCounter(target.mlflow_uri, job)
    try:
        while True:
            outcome = evaluation_outcome(target, job.job_id)
            if outcome is not None:
                bar.n = bar.total if outcome.comparison is not None else bar.n
                bar.refresh()
                return outcome
            answered = counter.count()
            if answered is not None:
                bar.n = min(answered, total) if total else answered
                bar.set_postfix(phase="scoring" if total and answered >= total else "answering")
                bar.refresh()
            if time.monotonic() > deadline:
                return None
            time.sleep(1.0)
    finally:
        bar.close()


def _dataset_rows(target: Target, job: EvaluationJob, body: bytes | None) -> int:
    try:
        if body is None:
            response = target.client("s3").get_object(Bucket=job.dataset.bucket, Key=job.dataset.key)
            body = response["Body"].read()
        return len(parse_dataset(body).rows)
    except (JobRejected, Exception):  # the evaluator reports a bad dataset; the bar just has no total
        return 0


class _AnswerCounter:
    """Answers recorded so far: the job's finished call runs in MLflow (None while it cannot tell)."""

    def __init__(self, tracking_uri: str, job: EvaluationJob) -> None:
        self._uri, self._job = tracking_uri, job
        self._experiment_id: str | None = None

    def count(self) -> int | None:
        if not self._uri:
            return None
        try:
            from mlflow.tracking import MlflowClient  # only --wait pays for importing MLflow

            client = MlflowClient(tracking_uri=self._uri)
            if self._experiment_id is None:
                experiment = client.get_experiment_by_name(self._job.experiment_name())
                if experiment is None:
                    return 0
                self._experiment_id = experiment.experiment_id
            runs = client.search_runs(
                [self._experiment_id],
                filter_string=f"tags.`pipeline.job_id` = '{self._job.job_id}' and tags.`pipeline.role` = 'call' "
                "and attributes.status != 'RUNNING'",
                max_results=50_000,
            )
            return len(runs)
        except Exception:  # progress is a courtesy: MLflow unreachable only stalls the bar
            return None


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="enqueue an evaluation job (answer a dataset with several models, score, compare)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job_file", nargs="?", help="a JSON evaluation job (see batch_prompts/eval/job.json)")
    p.add_argument("--dataset", help="s3://bucket/key of a JSON Lines dataset")
    p.add_argument("--dataset-file", help="a local JSON Lines dataset to upload first (under datasets/)")
    p.add_argument("--models", nargs="+", help="model or inference-profile ids to compare")
    p.add_argument(
        "--scorers",
        nargs="+",
        choices=["exact_match", "contains_match", "latency", "cost", "correctness_judge"],
        help="scorers (default: exact_match contains_match latency cost)",
    )
    p.add_argument("--judge-model", dest="judge_model", help="Bedrock model for correctness_judge")
    p.add_argument("--experiment", help="MLflow experiment (default bedrock-eval/<dataset name>)")
    p.add_argument(
        "--budget-usd", dest="budget_usd", type=float, help="stop before any call above this estimate"
    )
    p.add_argument("--job-id", dest="job_id", help="job id (default: generated)")
    p.add_argument(
        "--wait", action="store_true", help="wait with a progress bar and print the comparison table"
    )
    p.add_argument(
        "--fail-under",
        dest="fail_under",
        action="append",
        metavar="SCORER=VALUE",
        help="with --wait: exit 1 unless the best model's mean SCORER reaches VALUE (0-1); repeatable",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait with --wait (default 900)")
    p.set_defaults(func=cmd_evaluate)
    return p
