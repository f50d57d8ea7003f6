"""Batch inference job state changes as Bedrock sends them to EventBridge.

Bedrock sends ``Batch Inference Job State Change`` events from source ``aws.bedrock`` to the default
event bus ("How EventBridge for Amazon Bedrock works", Bedrock user guide,
monitoring-eventbridge-how-it-works). The sample there is the shape followed here::

    {"version": "0", "id": ..., "detail-type": "Batch Inference Job State Change", "source": "aws.bedrock",
     "account": "123456789012", "time": ..., "region": "us-east-1", "resources": [<job ARN>],
     "detail": {"version": "0.0", "accountId": ..., "batchJobName": ..., "batchJobArn": ...,
                "batchModelId": <foundation-model ARN>, "status": "Completed", "failureMessage": "",
                "creationTime": "Aug 28, 2024, 10:47:53 PM"}}

The emulator puts it with PutEvents on the local stack's EventBridge (moto), whose rule delivers it to
its target queue, as EventBridge delivers Bedrock's; the envelope (id, time, account) is EventBridge's.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from bedrock_pipeline import settings
from local_stack.bedrock_emulator import catalog

if TYPE_CHECKING:
    from local_stack.bedrock_emulator.batch_jobs import BatchJob

logger = logging.getLogger(__name__)
_DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _creation_time(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{moment:%b} {moment.day}, {moment:%Y}, {hour}:{moment:%M:%S} {moment:%p}"


def state_change_detail(job: BatchJob) -> dict[str, Any]:
    """The event's ``detail`` for the job's current state."""
    return {
        "version": "0.0",
        "accountId": catalog.ACCOUNT_ID,
        "batchJobName": job.name,
        "batchJobArn": job.arn,
        "batchModelId": catalog.foundation_model_arn(job.model_id, job.region),
        "status": job.status,
        "failureMessage": job.message if job.status == "Failed" and job.message else "",
        "creationTime": _creation_time(job.submit_time),
    }


def aws_client(service: str, endpoint: str, region: str) -> Any:
    """A client of the local stack's AWS (moto): dummy credentials, never real ones."""
    return boto3.client(service, endpoint_url=endpoint, region_name=region, **_DUMMY_CREDENTIALS)


def put_state_change(endpoint: str, job: BatchJob, detail: dict[str, Any]) -> None:
    """PutEvents on the default bus; a failed put is logged, not raised (Bedrock's delivery is best effort)."""
    entry = {
        "Source": settings.BATCH_EVENT_SOURCE,
        "DetailType": settings.BATCH_EVENT_DETAIL_TYPE,
        "Detail": json.dumps(detail),
        "Resources": [job.arn],
        "EventBusName": "default",
    }
    try:
        response = aws_client("events", endpoint, job.region).put_events(Entries=[entry])
    except Exception:  # the job goes on whether or not anyone hears about it
        logger.exception("PutEvents for batch job %s (%s) failed", job.job_id, detail["status"])
        return
    if response.get("FailedEntryCount"):
        logger.error("PutEvents for batch job %s refused: %s", job.job_id, response.get("Entries"))
