"""`evaluate`: enqueue an evaluation job on the evaluation queue (local stack or deployed stack).

The job is a JSON file (batch_prompts/eval/job.json) or built from flags; flags override the file.
`--dataset-file` uploads a local JSON Lines dataset to the bucket first. The same message can be
sent without this CLI:

  aws sqs send-message --queue-url "$EVALUATION_QUEUE_URL" --message-body file://job.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bedrock_pipeline import settings
from bedrock_pipeline.evaluation.job import EvaluationJob, new_job_id
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

  # the same message with the AWS CLI
  aws sqs send-message --queue-url "$EVALUATION_QUEUE_URL" --message-body file://job.json
"""


def evaluation_queue_url(target: Target, stack_name: str = DEPLOYED_STACK_NAME) -> str:
    if target.name == "local":
        return str(target.client("sqs").get_queue_url(QueueName=settings.EVALUATION_QUEUE_NAME)["QueueUrl"])
    stack = target.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if OUTPUT_EVALUATION_QUEUE_URL not in outputs:
        raise SystemExit(f"stack {stack_name} has no output {OUTPUT_EVALUATION_QUEUE_URL}: is it deployed?")
    return outputs[OUTPUT_EVALUATION_QUEUE_URL]


def build_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job document: the file (if any), then the flags on top."""
    job: dict[str, Any] = json.loads(Path(args.job_file).read_text()) if args.job_file else {"version": 1}
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    target = deployed_target(args.stack) if args.aws else local_target()
    job = build_job(args)
    if args.dataset_file:
        path = Path(args.dataset_file)
        key = (job.get("dataset") or {}).get("key") if isinstance(job.get("dataset"), dict) else None
        key = key or f"{DATASETS_PREFIX}{path.name}"
        target.client("s3").put_object(Bucket=target.bucket, Key=key, Body=path.read_bytes())
        job["dataset"] = {"bucket": target.bucket, "key": key}
        print(f"{path} -> s3://{target.bucket}/{key}")
    if isinstance(job.get("dataset"), dict) and not job["dataset"].get("bucket"):
        job["dataset"] = {**job["dataset"], "bucket": target.bucket}
    try:
        sent = send_job(target.client("sqs"), evaluation_queue_url(target, args.stack), job)
    except ValidationError as exc:
        print(f"invalid evaluation job:\n{exc}", file=sys.stderr)
        return 2
    print(
        f"evaluation job {sent.job_id} enqueued ({len(sent.models)} models, scorers {', '.join(sent.scorers)})"
    )
    print(f"results: s3://{target.bucket}/{settings.RESULTS_PREFIX}{sent.job_id}/comparison.json")
    print(f"MLflow experiment: {sent.experiment_name()} (parent run tagged pipeline.job_id={sent.job_id})")
    return 0


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
    p.set_defaults(func=cmd_evaluate)
    return p
