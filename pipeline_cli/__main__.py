"""bedrock-pipeline: submit prompt files, estimate their cost, follow jobs.

Run as `python -m pipeline_cli ...` (or `make cli ARGS="..."`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import boto3

from bedrock_pipeline.estimate import estimate_items, over_budget_reason
from bedrock_pipeline.model_catalog import BedrockModelCatalog
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.prompt_file import read_prompt_file
from bedrock_pipeline.settings import DEFAULT_MODELS
from bedrock_pipeline.use_cases.model_check import drop_unknown_models
from local_stack.config import LocalStackConfig
from pipeline_cli import benchmark, dlq, evaluate
from pipeline_cli.errors import EXIT_FAILURE, CliError, OneLineParser, describe, read_input, report
from pipeline_cli.follow import submit, wait_for_jobs
from pipeline_cli.status import print_status
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


def _model_catalog(args: argparse.Namespace) -> BedrockModelCatalog:
    """What the account offers: the deployed account's control plane (--aws) or the local emulator's."""
    if args.aws:
        catalog, where = BedrockModelCatalog(), "the account's Bedrock control plane (your AWS credentials)"
    else:
        local = local_target()
        url = LocalStackConfig().emulator_url
        catalog = BedrockModelCatalog(
            lambda: boto3.client("bedrock", **{**local.client_kwargs, "endpoint_url": url})
        )
        where = f"the local stack's Bedrock emulator at {url}: is it up (make up)?"
    # The adapter logs why for the Lambda's log; here the one-line error below says it.
    logging.getLogger(BedrockModelCatalog.__module__).addHandler(logging.NullHandler())
    if not catalog.readable():
        raise CliError(f"--check-models: cannot list the models of {where}")
    return catalog


ESTIMATE_BUCKET = "estimate-only"  # a placeholder bucket: attachments are not read by `estimate`


def cmd_estimate(args: argparse.Namespace) -> int:
    body = read_input(args.file, "a JSON Lines prompt file")
    # The very function ingest calls: the same rejections, in the same words.
    # A "path" attachment resolves beside the file wherever it lands; nothing is read here, so an
    # attached image counts as its model family's largest (media_tokens.py): an upper estimate.
    where = f"s3://{ESTIMATE_BUCKET}/{Path(str(args.file)).name}"
    parsed = read_prompt_file(body, default_models=args.models or DEFAULT_MODELS, source_uri=where)
    if args.check_models and not parsed.rejected:
        parsed = drop_unknown_models(_model_catalog(args), parsed)  # as ingest does, before any call
    for error in parsed.errors:
        print(f"line {error.line_number}: {error.reason}", file=sys.stderr)
    for warning in parsed.warnings:
        print(f"line {warning.line_number}: warning: {warning.reason}", file=sys.stderr)
    if parsed.rejected:
        raise CliError(f"file rejected: {parsed.rejected}")
    estimate = estimate_items(parsed.items, PriceTable.load())
    print(f"{'model':<48} {'items':>6} {'input tok':>10} {'max out tok':>12} {'max cost USD':>13}")
    for model_id, m in sorted(estimate.models.items()):
        cost = f"{m.cost_usd:.6f}" if m.priced else "no price"
        print(f"{model_id:<48} {m.items:>6} {m.input_tokens:>10,} {m.max_output_tokens:>12,} {cost:>13}")
    print(
        f"{'total':<48} {sum(m.items for m in estimate.models.values()):>6} {estimate.input_tokens:>10,} "
        f"{estimate.max_output_tokens:>12,} {estimate.cost_usd:>13.6f}"
    )
    over = over_budget_reason(estimate, parsed.job.budget_usd) if parsed.job.budget_usd is not None else None
    if over:
        raise CliError(f"file rejected: {over}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    target = _target(args)
    bodies = [
        (Path(f), read_input(f, "a JSON Lines prompt file")) for f in args.files
    ]  # all, before any upload
    submitted = [submit(target, path, args.folder, body=body) for path, body in bodies]
    for s in submitted:
        print(f"{s.path} -> s3://{target.bucket}/{s.key}  job {s.job_id}")
    if not args.wait:
        print("follow with: python -m pipeline_cli status " + " ".join(s.job_id for s in submitted))
        return 0
    done = wait_for_jobs(target, [s.job_id for s in submitted], args.timeout)
    codes = [print_status(target, s.job_id) for s in submitted]
    if not done:
        raise CliError(f"not every job ended within {args.timeout:.0f} s: follow them with `status`")
    return max(codes)


def cmd_status(args: argparse.Namespace) -> int:
    target = _target(args)
    return max(print_status(target, job_id) for job_id in args.job_ids)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("estimate", help="count tokens and estimate cost of a prompt file, offline")
    p.add_argument("file", help="a JSON Lines prompt file")
    p.add_argument("--models", nargs="+", help="models to fan out over when the file names none")
    p.add_argument(
        "--check-models",
        action="store_true",
        help="report records on models the account does not offer, as ingest does (asks the local "
        "stack, or the account with --aws; not offline)",
    )
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("submit", help="upload prompt files to the bucket's incoming/ folder")
    p.add_argument("files", nargs="+", help="JSON Lines prompt files")
    p.add_argument(
        "--folder", default="", help="sub-folder under incoming/ (one MLflow experiment per folder)"
    )
    p.add_argument("--wait", action="store_true", help="wait with a progress bar and print the summary")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait with --wait (default 900)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "status",
        help="a job's progress and summary (batch, evaluation or benchmark); exit 1 if rejected or failed",
    )
    p.add_argument("job_ids", nargs="+", help="job ids printed by submit or evaluate, or benchmark run ids")
    p.set_defaults(func=cmd_status)

    evaluate.register(sub)
    benchmark.register(sub)
    dlq.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        report(describe(exc))
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
