"""`dlq inspect` and `dlq redrive`: what sits in a dead-letter queue, why, and sending it back.

SQS cannot change a message's attributes on redrive, so the reason a message failed is not on the
message: the handlers record it in the jobs table keyed by the message body (ledger.note_failure),
and `inspect` looks it up. Registered into the CLI by `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.domain import WorkItem
from bedrock_pipeline.ledger import JobLedger
from bedrock_pipeline.work_queue import job_of_body_reference, queue_url_of
from pipeline_cli.errors import CliError
from pipeline_cli.target import Target, deployed_target, local_target

QUEUE_NAMES = {
    "ingest": settings.INGEST_QUEUE_NAME,
    "work": settings.WORK_QUEUE_NAME,
    "evaluation": settings.EVALUATION_QUEUE_NAME,
}
# Stack outputs naming the source queues of the deployed stack (stacks/pipeline.py).
QUEUE_OUTPUTS = {"ingest": "IngestQueueUrl", "work": "WorkQueueUrl", "evaluation": "EvaluationQueueUrl"}
PEEK_VISIBILITY_SECONDS = 30
MOVE_VISIBILITY_SECONDS = 60


@dataclass(frozen=True)
class QueuePair:
    role: str
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    sent_at: str
    receive_count: int
    job_id: str | None
    record_id: str | None
    model_id: str | None
    reason: str
    body_excerpt: str


def resolve_queue(
    target: Target, role: str, stack: str | None = None, queue_url: str | None = None
) -> QueuePair:
    """The source queue of a role (or ``queue_url``) and its DLQ (from the queue's own RedrivePolicy)."""
    sqs = target.client("sqs")
    if queue_url:
        url = queue_url
    elif target.name == "local":
        url = sqs.get_queue_url(QueueName=QUEUE_NAMES[role])["QueueUrl"]
    else:
        cloudformation = target.client("cloudformation")
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cloudformation.describe_stacks(StackName=stack or target.name)["Stacks"][0].get(
                "Outputs", []
            )
        }
        url = outputs[QUEUE_OUTPUTS[role]]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"])[
        "Attributes"
    ]
    if "RedrivePolicy" not in attributes:
        raise CliError(f"the {role} queue has no dead-letter queue")
    dlq_arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    dlq_url = queue_url_of(sqs, dlq_arn)
    return QueuePair(role, url, attributes["QueueArn"], dlq_url, dlq_arn)


def peek(sqs: Any, queue_url: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` messages of a queue, made visible again afterwards (a read, not a consume)."""
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            seen.setdefault(message["MessageId"], message)
    messages = list(seen.values())
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ],
        )
    return messages


def describe(message: dict[str, Any], ledger: JobLedger) -> DeadLetter:
    body = message["Body"]
    job_id = record_id = model_id = None
    try:
        work = WorkItem.from_message(body)
        job_id, record_id, model_id = work.bound_job.job_id, work.record_id, work.model_id
    except ValueError:  # not a work item (pydantic.ValidationError is one too)
        # A large item's message names its body (results/<job>/items/bodies/...): the job is in the key.
        job_id = job_of_body_reference(body)  # else an ingest or evaluation message, or a malformed one
    note = ledger.failure(body)
    attributes = message.get("Attributes", {})
    sent_ms = int(attributes.get("SentTimestamp", "0"))
    return DeadLetter(
        message_id=message["MessageId"],
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC).isoformat(timespec="seconds") if sent_ms else "",
        receive_count=note.receive_count if note else 0,
        job_id=job_id or (note.job_id if note else None),
        record_id=record_id,
        model_id=model_id,
        reason=note.reason
        if note
        else "(no reason recorded: the handler crashed or timed out before it could)",
        body_excerpt=body[:160],
    )


def inspect(
    target: Target, role: str, limit: int, stack: str | None = None, queue_url: str | None = None
) -> list[DeadLetter]:
    pair = resolve_queue(target, role, stack, queue_url)
    ledger = JobLedger(target.client("dynamodb"), target.jobs_table)
    return [describe(m, ledger) for m in peek(target.client("sqs"), pair.dlq_url, limit)]


def redrive_by_hand(sqs: Any, pair: QueuePair, limit: int | None = None) -> int:
    """Receive from the DLQ, send to the source queue, delete: for endpoints without StartMessageMoveTask
    (moto). A crash between send and delete leaves a duplicate, which the pipeline's idempotency absorbs."""
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(
            QueueUrl=pair.dlq_url,
            MaxNumberOfMessages=10 if limit is None else min(10, limit - moved),
            VisibilityTimeout=MOVE_VISIBILITY_SECONDS,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        entries = []
        for i, m in enumerate(batch):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = m["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=pair.url, Entries=entries)
        ok = {s["Id"] for s in sent.get("Successful", [])}
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch) if str(i) in ok
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=pair.dlq_url, Entries=done)
        moved += len(done)
        if len(done) < len(batch):
            raise RuntimeError(f"could not send {len(batch) - len(done)} messages back: {sent.get('Failed')}")
    return moved


def redrive(
    target: Target,
    role: str,
    stack: str | None = None,
    *,
    by_hand: bool = False,
    queue_url: str | None = None,
) -> str:
    pair = resolve_queue(target, role, stack, queue_url)
    sqs = target.client("sqs")
    if target.name != "local" and not by_hand:
        # SQS moves the messages itself (asynchronously), preserving them; this is the AWS console's redrive.
        task = sqs.start_message_move_task(SourceArn=pair.dlq_arn, DestinationArn=pair.arn)
        return f"move task {task['TaskHandle']} started: {pair.dlq_arn} -> {pair.arn}"
    moved = redrive_by_hand(sqs, pair)
    return f"moved {moved} message(s) from the {role} DLQ back to its queue"


def _target(args: argparse.Namespace) -> Target:
    return deployed_target(args.stack) if getattr(args, "aws", False) else local_target()


def cmd_inspect(args: argparse.Namespace) -> int:
    letters = inspect(_target(args), args.queue, args.limit, getattr(args, "stack", None))
    if args.json:
        print(json.dumps([asdict(d) for d in letters], indent=2))
        return 0
    if not letters:
        print(f"the {args.queue} DLQ is empty")
        return 0
    for d in letters:
        what = f"job {d.job_id} record {d.record_id} model {d.model_id}" if d.record_id else d.body_excerpt
        print(f"{d.message_id}  sent {d.sent_at}  receives {d.receive_count}\n  {what}\n  reason: {d.reason}")
    print(f"\n{len(letters)} message(s) in the {args.queue} DLQ; by reason:")
    for reason, n in Counter(d.reason.split(":", 1)[0] for d in letters).most_common():
        print(f"  {n:>5}  {reason}")
    print(
        f"send them back with: python -m pipeline_cli{' --aws' if args.aws else ''} dlq redrive --queue {args.queue}"
    )
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    print(redrive(_target(args), args.queue, getattr(args, "stack", None), by_hand=args.by_hand))
    return 0


def register(subparsers: Any) -> None:
    """Add `dlq inspect` and `dlq redrive` to the CLI's subcommands."""
    dlq = subparsers.add_parser(
        "dlq", help="inspect a dead-letter queue (with failure reasons) or redrive it"
    )
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    p = sub.add_parser("inspect", help="list DLQ messages with the reason each failed (nothing is consumed)")
    p.add_argument(
        "--queue", choices=sorted(QUEUE_NAMES), default="work", help="which queue's DLQ (default work)"
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many messages (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("redrive", help="send every DLQ message back to its queue")
    p.add_argument(
        "--queue", choices=sorted(QUEUE_NAMES), default="work", help="which queue's DLQ (default work)"
    )
    p.add_argument(
        "--by-hand",
        action="store_true",
        help="receive + send + delete instead of SQS StartMessageMoveTask (always so on the local stack)",
    )
    p.set_defaults(func=cmd_redrive)


if __name__ == "__main__":  # usable before it is wired into `python -m pipeline_cli`
    parser = argparse.ArgumentParser(prog="python -m pipeline_cli.dlq")
    parser.add_argument("--aws", action="store_true")
    parser.add_argument("--stack", default=None)
    register(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args()
    sys.exit(int(arguments.func(arguments)))
