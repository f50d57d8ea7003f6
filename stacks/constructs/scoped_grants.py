"""S3 grants scoped to one key pattern, each with the cdk-nag acknowledgments its wildcards need.

CDK's grant helpers use action wildcards (``s3:GetObject*``, ``s3:List*``, ``s3:Abort*``) and the
key pattern is itself a resource wildcard; AwsSolutions-IAM5 reports each on the grantee, so the
grant and its reasons are made together, on the grantee only.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def arn_token(resource: IConstruct) -> str:
    """How cdk-nag writes a resource's ARN in a finding id: ``<LogicalId.Arn>``."""
    stack = cdk.Stack.of(resource)
    return f"<{stack.get_logical_id(resource.node.default_child)}.Arn>"  # type: ignore[arg-type]


def grant_read_keys(bucket: s3.Bucket, grantee: lambda_.IFunction, key_pattern: str, *, why: str) -> None:
    """Read objects matching ``key_pattern`` and list the bucket (a missing key is then 404, not 403)."""
    bucket.grant_read(grantee, key_pattern)
    _acknowledge(
        grantee,
        {
            "Action::s3:GetObject*": f"grant_read: the GetObject family, on {key_pattern} of this bucket only.",
            "Action::s3:GetBucket*": "grant_read: metadata of this one bucket.",
            "Action::s3:List*": "grant_read: listing this one bucket, so a missing key reads as 404, not 403.",
            f"Resource::{arn_token(bucket)}/{key_pattern}": why,
        },
    )


def grant_write_keys(bucket: s3.Bucket, grantee: lambda_.IFunction, key_pattern: str, *, why: str) -> None:
    """Put objects matching ``key_pattern`` (and abort its own multipart uploads there)."""
    bucket.grant_put(grantee, key_pattern)
    _acknowledge(
        grantee,
        {
            "Action::s3:Abort*": f"grant_put: aborting multipart uploads, on {key_pattern} of this bucket only.",
            f"Resource::{arn_token(bucket)}/{key_pattern}": why,
        },
    )


def _acknowledge(grantee: lambda_.IFunction, reasons: dict[str, str]) -> None:
    cdk.Validations.of(grantee).acknowledge(
        *(
            cdk.Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
            for finding, reason in reasons.items()
        )
    )
