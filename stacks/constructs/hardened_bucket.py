"""An S3 bucket with the hardening every data bucket here gets."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct


class HardenedBucket(Construct):
    """Encrypted, private, TLS-only, versioned bucket that logs its access to ``access_log_bucket``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_log_bucket: s3.IBucket,
        lifecycle_rules: list[s3.LifecycleRule],
        bucket_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=access_log_bucket,
            server_access_logs_prefix=f"s3/{construct_id}/",
            lifecycle_rules=lifecycle_rules,
            # Data outlives the stack: `cdk destroy` keeps it (docs/DEPLOY.md says how to delete it).
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )


def access_log_bucket(scope: Construct, construct_id: str, *, retention_days: int) -> s3.Bucket:
    """The bucket S3 server access logs and ALB access logs go to (SSE-S3: ALB logging requires it)."""
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
        enforce_ssl=True,
        versioned=True,
        lifecycle_rules=[
            s3.LifecycleRule(
                expiration=cdk.Duration.days(retention_days),
                noncurrent_version_expiration=cdk.Duration.days(1),
            )
        ],
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    # S3 delivers server access logs as the service principal logging.s3.amazonaws.com; AWS's S3 User
    # Guide ("Enabling Amazon S3 server access logging") recommends aws:SourceAccount / aws:SourceArn
    # conditions against the confused deputy. CDK conditions only the statements of buckets in this
    # stack (the prompt bucket logs here from the Pipeline stack, whose ARN this stack cannot name
    # without a cycle), so one Deny confines every delivery to buckets of this account.
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            effect=iam.Effect.DENY,
            principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects("*")],
            conditions={"StringNotEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
        )
    )
    cdk.Validations.of(bucket).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-S1",
            reason="This is the access-log bucket itself; logging it into itself would loop.",
        )
    )
    return bucket
