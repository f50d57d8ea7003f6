"""bedrock-pipeline: submit prompt files, estimate their cost, follow jobs.

Run as `python -m pipeline_cli ...` (or `make cli ARGS="..."`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bedrock_pipeline.estimate import estimate_items
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import parse_prompt_file
from bedrock_pipeline.results import format_table, summarize
from bedrock_pipeline.settings import DEFAULT_MODELS
from bedrock_pipeline.storage import S3ResultStore
from pipeline_cli import benchmark, dlq, evaluate
from pipeline_cli.follow import submit, wait_for_jobs
from pipeline_cli.target import DEPLOYED_STACK_NAME, Target, deployed_target, local_target

EPILOG = """
examples:
  # what would this file cost? (offline: tiktoken with the shipped encoding, output bounded by max_tokens)
  python -m pipeline_cli estimate batch_prompts/demo/questions.jsonl

  # run it on the local stack (`make up` first) and wait for the table
  python -m pipeline_cli submit batch_prompts/demo/questions.jsonl --wait

  # the same against the deployed stack (AWS credentials in the environment)
  python -m pipeline_cli --aws submit my-prompts.jsonl --folder team-a

  # a job's progress and, once finished, its per-model summary
  python -m pipeline_cli status questions-1a2b3c4d5e

  # compare models on a dataset, scored by mlflow.genai.evaluate (results in MLflow and S3)
  python -m pipeline_cli evaluate batch_prompts/eval/job.json --dataset-file batch_prompts/eval/arithmetic.jsonl

  # what is in the work queue's DLQ and why; then send it back
  python -m pipeline_cli dlq inspect --queue work
  python -m pipeline_cli dlq redrive --queue work

  # the benchmark suite now, then hourly while the local stack is up
  python -m pipeline_cli benchmark --every 60
"""


def _target(args: argparse.Namespace) -> Target:
    return deployed_target(args.stack) if args.aws else local_target()


def cmd_estimate(args: argparse.Namespace) -> int:
    parsed = parse_prompt_file(Path(args.file).read_bytes(), default_models=args.models or DEFAULT_MODELS)
    if parsed.rejected:
        print(f"rejected: {parsed.rejected}", file=sys.stderr)
        return 2
    estimate = estimate_items(parsed.items, PriceTable.load())
    print(f"{'model':<48} {'items':>6} {'input tok':>10} {'max out tok':>12} {'max cost USD':>13}")
    for model_id, m in sorted(estimate.models.items()):
        cost = f"{m.cost_usd:.6f}" if m.priced else "no price"
        print(f"{model_id:<48} {m.items:>6} {m.input_tokens:>10,} {m.max_output_tokens:>12,} {cost:>13}")
    print(
        f"{'total':<48} {sum(m.items for m in estimate.models.values()):>6} {estimate.input_tokens:>10,} "
        f"{estimate.max_output_tokens:>12,} {estimate.cost_usd:>13.6f}"
    )
    for error in parsed.errors:
        print(f"line {error.line_number}: {error.reason}", file=sys.stderr)
    if parsed.job.budget_usd is not None and estimate.cost_usd > parsed.job.budget_usd:
        print(f"over budget: the job allows {parsed.job.budget_usd} USD", file=sys.stderr)
        return 3
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    target = _target(args)
    submitted = [submit(target, Path(f), args.folder) for f in args.files]
    for s in submitted:
        print(f"{s.path} -> s3://{target.bucket}/{s.key}  job {s.job_id}")
    if not args.wait:
        print("follow with: python -m pipeline_cli status " + " ".join(s.job_id for s in submitted))
        return 0
    done = wait_for_jobs(target, [s.job_id for s in submitted], args.timeout)
    for s in submitted:
        _print_status(target, s.job_id)
    return 0 if done else 1


def cmd_status(args: argparse.Namespace) -> int:
    target = _target(args)
    return max(_print_status(target, job_id) for job_id in args.job_ids)


def _print_status(target: Target, job_id: str) -> int:
    counts = JobLedger(target.client("dynamodb"), target.jobs_table).counts(job_id)
    if counts is None:
        print(f"job {job_id}: not known (yet): the file may still be waiting for the ingest handler")
        return 1
    state = "finished" if counts.finalized else "running"
    print(
        f"job {job_id}: {state}; {counts.ended}/{counts.expected} items ended "
        f"({counts.succeeded} succeeded, {counts.failed} failed); {counts.rejected_lines} rejected lines"
    )
    store = S3ResultStore(target.client("s3"), target.bucket)
    summary = store.get_summary(job_id)
    if summary is not None:
        print(format_table(summarize(store.item_results(job_id))))
        print(f"results: s3://{target.bucket}/results/{job_id}/results.jsonl")
    if counts.rejected_lines:
        print(f"bad lines: s3://{target.bucket}/results/{job_id}/errors.jsonl")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_cli",
        description="Run prompt files against Amazon Bedrock as traced MLflow runs, locally or on AWS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--aws", action="store_true", help="use the deployed stack (default: the local stack)"
    )
    parser.add_argument(
        "--stack", default=DEPLOYED_STACK_NAME, help="deployed pipeline stack name (with --aws)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("estimate", help="count tokens and estimate cost of a prompt file, offline")
    p.add_argument("file", help="a JSON Lines prompt file")
    p.add_argument("--models", nargs="+", help="models to fan out over when the file names none")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("submit", help="upload prompt files to the bucket's incoming/ folder")
    p.add_argument("files", nargs="+", help="JSON Lines prompt files")
    p.add_argument(
        "--folder", default="", help="sub-folder under incoming/ (one MLflow experiment per folder)"
    )
    p.add_argument("--wait", action="store_true", help="wait with a progress bar and print the summary")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait with --wait (default 900)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's progress and its per-model summary")
    p.add_argument("job_ids", nargs="+", help="job ids printed by submit")
    p.set_defaults(func=cmd_status)

    evaluate.register(sub)
    benchmark.register(sub)
    dlq.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
