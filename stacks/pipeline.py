"""The event-driven pipeline: prompt bucket -> ingest -> work queue -> runner; evaluator; benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from bedrock_pipeline import settings as pipeline
from stacks.bundling import lambda_code
from stacks.constructs import HardenedBucket, PipelineFunction, QueueWithDlq
from stacks.settings import PlatformSettings, bedrock_invoke_resource_arns

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
BUNDLE_CACHE_DIR = REPO_ROOT / "build" / "lambda-deps"
BEDROCK_INVOKE_ACTIONS = (
    "bedrock:InvokeModel",  # also authorizes Converse
    "bedrock:InvokeModelWithResponseStream",  # also authorizes ConverseStream
)


@dataclass(frozen=True)
class FunctionSpec:
    construct_id: str
    handler: str
    timeout_seconds: int
    memory_mib: int
    service_name: str


class PipelineStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PlatformSettings,
        vpc: ec2.IVpc,
        log_bucket: s3.IBucket,
        mlflow_service: ec2.IConnectable,
        mlflow_port: int,
        mlflow_credentials_secret: secretsmanager.ISecret,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.prompt_bucket = HardenedBucket(
            self,
            "Prompts",
            access_log_bucket=log_bucket,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(settings.prompt_object_expiration_days),
                    noncurrent_version_expiration=cdk.Duration.days(7),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
        ).bucket
        self.ingest = QueueWithDlq(
            self, "IngestQueue", consumer_timeout_seconds=pipeline.INGEST_TIMEOUT_SECONDS
        )
        self.work = QueueWithDlq(self, "WorkQueue", consumer_timeout_seconds=pipeline.RUNNER_TIMEOUT_SECONDS)
        self.evaluation = QueueWithDlq(
            self, "EvaluationQueue", consumer_timeout_seconds=pipeline.EVALUATOR_TIMEOUT_SECONDS
        )
        self.prompt_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.ingest.queue),
            s3.NotificationKeyFilter(prefix=pipeline.INCOMING_PREFIX),
        )

        self.idempotency_table = dynamodb.TableV2(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=cdk.RemovalPolicy.DESTROY,  # only short-lived idempotency records
        )
        # Job ledger: per-job records and per-job end shards that count each item once (bedrock_pipeline.ledger).
        self.jobs_table = dynamodb.TableV2(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=cdk.RemovalPolicy.RETAIN,  # the record of what ran and what it cost
        )

        self.function_security_group = ec2.SecurityGroup(
            self,
            "FunctionSg",
            vpc=vpc,
            description="Pipeline Lambdas: no ingress; egress stays inside the VPC (isolated subnets)",
            allow_all_outbound=True,
        )
        _acknowledge_open_egress(self.function_security_group)
        # Consumer-side rule: the MLflow stack keeps no dependency on this one.
        self.function_security_group.connections.allow_to(
            mlflow_service, ec2.Port.tcp(mlflow_port), "Lambdas to MLflow (Cloud Map A records)"
        )

        environment = {
            pipeline.ENV_PROMPT_BUCKET: self.prompt_bucket.bucket_name,
            pipeline.ENV_WORK_QUEUE_URL: self.work.queue.queue_url,
            pipeline.ENV_EVALUATION_QUEUE_URL: self.evaluation.queue.queue_url,
            pipeline.ENV_IDEMPOTENCY_TABLE: self.idempotency_table.table_name,
            pipeline.ENV_JOBS_TABLE: self.jobs_table.table_name,
            pipeline.ENV_MLFLOW_TRACKING_URI: settings.mlflow_tracking_uri,
            # Only the ARN: the handlers fetch the credentials at cold start.
            pipeline.ENV_MLFLOW_CREDENTIALS_SECRET_ARN: mlflow_credentials_secret.secret_arn,
            pipeline.ENV_DEFAULT_MODELS: ",".join(settings.models),
            pipeline.ENV_BENCHMARK_SUITE: settings.benchmark_suite,
            "POWERTOOLS_METRICS_NAMESPACE": settings.metrics_namespace,
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # saves a get_run request per run
            **pipeline.OFFLINE_ENVIRONMENT,
        }
        code = lambda_code(LAMBDAS_DIR, BUNDLE_CACHE_DIR)
        specs = {
            "ingest": FunctionSpec(
                "Ingest", "handlers.ingest.handler", pipeline.INGEST_TIMEOUT_SECONDS, settings.ingest_memory_mib,
                "ingest",
            ),
            "runner": FunctionSpec(
                "Runner", "handlers.runner.handler", pipeline.RUNNER_TIMEOUT_SECONDS, settings.runner_memory_mib,
                "runner",
            ),
            "evaluator": FunctionSpec(
                "Evaluator", "handlers.evaluator.handler", pipeline.EVALUATOR_TIMEOUT_SECONDS,
                settings.evaluator_memory_mib, "evaluator",
            ),
            "benchmark": FunctionSpec(
                "Benchmark", "handlers.benchmark.handler", pipeline.BENCHMARK_TIMEOUT_SECONDS,
                settings.benchmark_memory_mib, "benchmark",
            ),
        }  # fmt: skip
        self.functions: dict[str, lambda_.Function] = {}
        for key, spec in specs.items():
            self.functions[key] = PipelineFunction(
                self,
                spec.construct_id,
                code=code,
                handler=spec.handler,
                # pandas (mlflow.genai.evaluate) and matplotlib (charts) are over the zip limit.
                image_dockerfile="analysis.Dockerfile" if key in ("evaluator", "benchmark") else None,
                timeout_seconds=spec.timeout_seconds,
                memory_mib=spec.memory_mib,
                vpc=vpc,
                security_group=self.function_security_group,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": spec.service_name},
                log_retention_days=settings.log_retention_days,
            ).function
        ingest_fn, runner_fn = self.functions["ingest"], self.functions["runner"]
        evaluator_fn, benchmark_fn = self.functions["evaluator"], self.functions["benchmark"]

        ingest_fn.add_event_source(
            event_sources.SqsEventSource(
                self.ingest.queue,
                batch_size=settings.ingest_batch_size,
                max_concurrency=settings.ingest_max_concurrency,
                report_batch_item_failures=True,
            )
        )
        runner_fn.add_event_source(
            event_sources.SqsEventSource(
                self.work.queue,
                batch_size=pipeline.WORK_BATCH_SIZE,
                max_concurrency=pipeline.WORK_MAX_CONCURRENCY,
                report_batch_item_failures=True,
            )
        )
        evaluator_fn.add_event_source(
            event_sources.SqsEventSource(
                self.evaluation.queue,
                batch_size=settings.evaluation_batch_size,
                max_concurrency=settings.evaluation_max_concurrency,
                report_batch_item_failures=True,
            )
        )

        # Least privilege per function.
        self.prompt_bucket.grant_read(ingest_fn, f"{pipeline.INCOMING_PREFIX}*")
        self.prompt_bucket.grant_put(ingest_fn, f"{pipeline.JOBS_PREFIX}*")
        self.prompt_bucket.grant_put(ingest_fn, f"{pipeline.RESULTS_PREFIX}*")  # bad-line reports
        for fn in (runner_fn, evaluator_fn, benchmark_fn):
            self.prompt_bucket.grant_read(fn)
            self.prompt_bucket.grant_put(fn, f"{pipeline.RESULTS_PREFIX}*")
        for fn in (ingest_fn, evaluator_fn, benchmark_fn):
            self.work.queue.grant_send_messages(fn)
        self.evaluation.queue.grant_send_messages(benchmark_fn)
        # A job that can never run is moved to the DLQ by the evaluator itself, with its reason.
        self.evaluation.dead_letter_queue.grant_send_messages(evaluator_fn)
        bedrock_arns = bedrock_invoke_resource_arns(
            settings.models, partition=self.partition, region=self.region, account=self.account
        )
        for fn in self.functions.values():
            self.idempotency_table.grant_read_write_data(fn)
            self.jobs_table.grant_read_write_data(fn)
            mlflow_credentials_secret.grant_read(fn)
        for fn in (runner_fn, evaluator_fn, benchmark_fn):
            fn.add_to_role_policy(
                iam.PolicyStatement(actions=list(BEDROCK_INVOKE_ACTIONS), resources=bedrock_arns)
            )
            cdk.Validations.of(fn).acknowledge(
                *(
                    cdk.Acknowledgment(
                        id=f"AwsSolutions-IAM5[Resource::{arn}]",
                        reason="A cross-region inference profile routes to this model in regions AWS "
                        "chooses; the model id still pins the resource.",
                    )
                    for arn in bedrock_arns
                    if "*" in arn
                )
            )

        self.schedule = scheduler.Schedule(
            self,
            "BenchmarkSchedule",
            schedule=scheduler.ScheduleExpression.expression(settings.schedule_expression),
            target=scheduler_targets.LambdaInvoke(
                benchmark_fn,
                input=scheduler.ScheduleTargetInput.from_object({"suite": settings.benchmark_suite}),
                retry_attempts=0,  # a benchmark is not idempotent: a retry would double-run the suite
            ),
            description="Runs the benchmark suite on a schedule",
        )
        # The benchmark handler reads its suites from benchmarks/ in the prompt bucket: ship them there.
        self.suites = s3deploy.BucketDeployment(
            self,
            "BenchmarkSuites",
            sources=[
                s3deploy.Source.asset(str(REPO_ROOT / "batch_prompts" / "benchmarks"), exclude=["*.md"])
            ],
            destination_bucket=self.prompt_bucket,
            destination_key_prefix="benchmarks/",
            prune=False,
        )
        self._acknowledge_suite_deployment()

        self._alarms_and_dashboard(settings)
        self._acknowledge_grants()
        self._outputs(settings)

    def _alarms_and_dashboard(self, settings: PlatformSettings) -> None:
        queues: dict[str, QueueWithDlq] = {
            "Ingest": self.ingest,
            "Work": self.work,
            "Evaluation": self.evaluation,
        }
        self.alarms: list[cloudwatch.Alarm] = []
        for name, pair in queues.items():
            self.alarms.append(
                pair.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=cdk.Duration.minutes(5)
                ).create_alarm(
                    self,
                    f"{name}DlqDepth",
                    alarm_description=f"Messages in the {name.lower()} dead-letter queue",
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
            # A message older than two visibility timeouts has been retried and is stuck.
            age_threshold = pair.visibility_timeout_seconds * 2
            self.alarms.append(
                pair.queue.metric_approximate_age_of_oldest_message(
                    period=cdk.Duration.minutes(5)
                ).create_alarm(
                    self,
                    f"{name}OldestMessage",
                    alarm_description=f"Oldest message age of the {name.lower()} queue",
                    threshold=age_threshold,
                    evaluation_periods=3,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        for key, fn in self.functions.items():
            self.alarms.append(
                fn.metric_errors(period=cdk.Duration.minutes(5)).create_alarm(
                    self,
                    f"{key.capitalize()}Errors",
                    alarm_description=f"Errors of the {key} Lambda",
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        # The benchmark handler counts regressions (Powertools Metrics, EMF) per run.
        self.alarms.append(
            cloudwatch.Metric(
                namespace=settings.metrics_namespace,
                metric_name="BenchmarkRegressions",
                dimensions_map={"service": "bedrock-pipeline"},
                statistic="Sum",
                period=cdk.Duration.hours(1),
            ).create_alarm(
                self,
                "BenchmarkRegressions",
                alarm_description="A benchmark run regressed (see results/benchmarks/<run id>/summary.json)",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{settings.prefix}-pipeline")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Invocations",
                left=[fn.metric_invocations() for fn in self.functions.values()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Errors", left=[fn.metric_errors() for fn in self.functions.values()], width=12
            ),
            cloudwatch.GraphWidget(
                title="Duration p95",
                left=[fn.metric_duration(statistic="p95") for fn in self.functions.values()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Queue depth (visible)",
                left=[p.queue.metric_approximate_number_of_messages_visible() for p in queues.values()],
                right=[
                    p.dead_letter_queue.metric_approximate_number_of_messages_visible()
                    for p in queues.values()
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Oldest message age (s)",
                left=[p.queue.metric_approximate_age_of_oldest_message() for p in queues.values()],
                width=12,
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=12),
        )

    def _acknowledge_suite_deployment(self) -> None:
        # CDK's own deployment handler (a singleton custom resource at stack level) copies the asset.
        bucket_arn = f"<{self.get_logical_id(self.prompt_bucket.node.default_child)}.Arn>"  # type: ignore[arg-type]
        reasons = {
            "AwsSolutions-L1": "CDK's BucketDeployment handler: its runtime is chosen by aws-cdk-lib, "
            "it runs only during deployments.",
            **{
                f"AwsSolutions-IAM5[Action::s3:{action}]": "BucketDeployment's grant on the CDK asset "
                "bucket and the prompt bucket (read the suite asset, write benchmarks/)."
                for action in ("GetBucket*", "GetObject*", "List*", "Abort*", "DeleteObject*")
            },
            "AwsSolutions-IAM5[Resource::arn:aws:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-"
            f"{self.region}/*]": "The CDK bootstrap asset bucket, read-only, for the suite files.",
            f"AwsSolutions-IAM5[Resource::{bucket_arn}/*]": "Objects of the prompt bucket (CDK scopes the "
            "deployment role to the bucket, the key prefix is enforced by the handler).",
        }
        for child in self.node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                cdk.Validations.of(child).acknowledge(
                    *(cdk.Acknowledgment(id=rule, reason=reason) for rule, reason in reasons.items())
                )

    def _acknowledge_grants(self) -> None:
        # CDK grant helpers produce these wildcards; each is scoped to one named resource or prefix.
        bucket_arn = f"<{self.get_logical_id(self.prompt_bucket.node.default_child)}.Arn>"  # type: ignore[arg-type]
        table_arn = f"<{self.get_logical_id(self.idempotency_table.node.default_child)}.Arn>"  # type: ignore[arg-type]
        jobs_arn = f"<{self.get_logical_id(self.jobs_table.node.default_child)}.Arn>"  # type: ignore[arg-type]
        benchmark = self.functions["benchmark"]
        benchmark_arn = f"<{self.get_logical_id(benchmark.node.default_child)}.Arn>"  # type: ignore[arg-type]
        wildcards = {
            **_GRANT_WILDCARD_ACTIONS,
            f"Resource::{bucket_arn}/*": "Objects of the prompt bucket only (every prefix is job data).",
            f"Resource::{bucket_arn}/{pipeline.INCOMING_PREFIX}*": "Only incoming/ (ingest reads prompt files).",
            f"Resource::{bucket_arn}/{pipeline.JOBS_PREFIX}*": "Only jobs/ (ingest writes job manifests).",
            f"Resource::{bucket_arn}/{pipeline.RESULTS_PREFIX}*": "Only results/ (results files).",
            f"Resource::{table_arn}/index/*": "Indexes of the idempotency table only.",
            f"Resource::{jobs_arn}/index/*": "Indexes of the jobs table only.",
        }
        cdk.Validations.of(self).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{benchmark_arn}:*]",
                reason="Scheduler target role: invoke the benchmark function (any version/alias of it).",
            ),
            cdk.Acknowledgment(
                id=_LAMBDA_BASIC_ROLE,
                reason="CDK's bucket-notification handler and the functions use the AWS-managed basic "
                "execution role: it writes only the function's own logs.",
            ),
        )
        for fn in self.functions.values():
            cdk.Validations.of(fn).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaVPCAccessExecutionRole]",
                    reason="AWS-managed VPC role: ENI create/describe/delete, which the EC2 API only "
                    "authorizes on '*'.",
                ),
            )
            cdk.Validations.of(fn).acknowledge(
                *(
                    cdk.Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
                    for finding, reason in wildcards.items()
                )
            )

    def _outputs(self, settings: PlatformSettings) -> None:
        outputs = {
            "PromptBucketName": (self.prompt_bucket.bucket_name, "prompt-bucket"),
            "IngestQueueUrl": (self.ingest.queue.queue_url, "ingest-queue-url"),
            "WorkQueueUrl": (self.work.queue.queue_url, "work-queue-url"),
            "EvaluationQueueUrl": (self.evaluation.queue.queue_url, "evaluation-queue-url"),
            "IdempotencyTableName": (self.idempotency_table.table_name, "idempotency-table"),
            "JobsTableName": (self.jobs_table.table_name, "jobs-table"),
            "DashboardName": (self.dashboard.dashboard_name, "dashboard"),
        }
        for output_id, (value, export) in outputs.items():
            cdk.CfnOutput(self, output_id, value=value, export_name=f"{settings.prefix}-{export}")


_LAMBDA_BASIC_ROLE = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"
)
_GRANT_WILDCARD_ACTIONS = {
    "Action::s3:GetObject*": "S3 grant_read: the GetObject family on the prompt bucket only.",
    "Action::s3:GetBucket*": "S3 grant_read: bucket metadata of the prompt bucket only.",
    "Action::s3:List*": "S3 grant_read: listing the prompt bucket only.",
    "Action::s3:Abort*": "S3 grant_put: aborting its own multipart uploads under one prefix.",
}


def _acknowledge_open_egress(group: ec2.SecurityGroup) -> None:
    cdk.Validations.of(group).acknowledge(
        cdk.Acknowledgment(
            id="Annotation::@aws-cdk/aws-ec2:ipv4IgnoreEgressRule",
            reason="Outbound is already open (isolated subnets: it cannot leave the VPC); the explicit "
            "egress rule CDK skips would add nothing.",
        )
    )
