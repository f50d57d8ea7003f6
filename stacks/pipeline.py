"""The event-driven pipeline: prompt bucket -> ingest -> work queue -> runner; evaluator; benchmark.

Functions, queues and event sources come from the function catalogue
(``bedrock_pipeline.function_catalogue``), which the local event pump reads too. Construct ids are
those the stack was first deployed with: a changed id would replace the resource (and orphan the
retained bucket and jobs table), which tests/infra/test_pipeline_stack.py guards.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as lambda_destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from bedrock_pipeline import function_catalogue as catalogue
from bedrock_pipeline import settings as pipeline
from stacks.bundling import lambda_code
from stacks.constructs import HardenedBucket, PipelineFunction, QueueWithDlq
from stacks.constructs.alarm_topic import notify
from stacks.constructs.batch_inference import add_batch_inference
from stacks.constructs.benchmark_schedule import RESULTS_PREFIX as BENCHMARK_RESULTS_PREFIX
from stacks.constructs.benchmark_schedule import SUITES_PREFIX, schedule_benchmark
from stacks.constructs.egress import allow_https_to_endpoints
from stacks.constructs.model_access import grant_model_invocation, model_arns
from stacks.constructs.pipeline_monitoring import add_alarms_and_dashboard
from stacks.constructs.queue_with_dlq import async_failure_queue
from stacks.constructs.scoped_grants import grant_read_keys, grant_write_keys
from stacks.settings import PlatformSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
BUNDLE_CACHE_DIR = REPO_ROOT / "build" / "lambda-deps"
RESULTS_KEYS = f"{pipeline.RESULTS_PREFIX}*"
# Prompt-bucket prefixes whose objects expire after prompt_object_expiration_days (results/ holds the
# benchmark runs' results too; batch/ a batch job's input copies, outputs and chunks); everything else
# (benchmarks/: the suites) is kept.
TRANSIENT_PREFIXES = (pipeline.INCOMING_PREFIX, pipeline.RESULTS_PREFIX, pipeline.BATCH_PREFIX)


# What the ingest function's model check calls (bedrock_pipeline/model_catalog.py).
MODEL_LIST_ACTIONS = ("bedrock:ListFoundationModels", "bedrock:ListInferenceProfiles")


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
        alarm_topic: sns.ITopic,
        endpoint_security_group: ec2.ISecurityGroup,
        gateway_prefix_lists: Mapping[str, str],
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.prompt_bucket = self._build_prompt_bucket(settings, log_bucket)
        self.queues = self._build_queues()
        self.ingest = self.queues[catalogue.INGEST_QUEUE.role]
        self.work = self.queues[catalogue.WORK_QUEUE.role]
        self.evaluation = self.queues[catalogue.EVALUATION_QUEUE.role]
        self._notify_ingest_of_prompt_files()
        self.idempotency_table, self.jobs_table = self._build_tables()
        self.function_security_group = self._build_security_group(vpc, mlflow_service, mlflow_port)
        # Outbound: SQS, Secrets Manager and Bedrock runtime (endpoints), the prompt bucket and the tables
        # (S3 and DynamoDB gateways), MLflow on 5000. stacks/constructs/egress.py.
        allow_https_to_endpoints(
            self.function_security_group,
            endpoint_security_group=endpoint_security_group,
            gateway_prefix_lists=gateway_prefix_lists,
        )
        self.functions = self._build_functions(settings, vpc, mlflow_credentials_secret)
        self._connect_event_sources(settings)

        # Least privilege per function: each gets what its handler and the core code it calls do
        # (tests/infra/test_pipeline_grants.py states the same from the code).
        self._grant_ingest()
        self._grant_runner()
        self._grant_evaluator()
        self._grant_benchmark()
        self._grant_credentials(mlflow_credentials_secret)
        grant_model_invocation(
            self,
            settings,
            callers=[
                self.functions[spec.name]
                for spec in (catalogue.RUNNER, catalogue.EVALUATOR, catalogue.BENCHMARK)
            ],
            ingest=self.functions[catalogue.INGEST.name],
        )
        self.batch_role = add_batch_inference(
            self,
            bucket=self.prompt_bucket,
            events_queue=self.queues[catalogue.BATCH_EVENTS_QUEUE.role].queue,
            **{name: self.functions[name] for name in ("ingest", "collector", "runner")},
            jobs_table=self.jobs_table,
            work_queue=self.work.queue,
            model_arns=model_arns(self, settings),
            sweep_schedule=settings.batch_sweep_schedule,
        )

        self.schedule, self.suites = schedule_benchmark(
            self,
            function=self.functions[catalogue.BENCHMARK.name],
            bucket=self.prompt_bucket,
            schedule_expression=settings.schedule_expression,
            suite=settings.benchmark_suite,
        )
        self.alarms, self.dashboard = add_alarms_and_dashboard(
            self,
            queues=self.queues,
            functions=self.functions,
            metrics_namespace=settings.metrics_namespace,
            dashboard_name=f"{settings.prefix}-pipeline",
        )
        self.alarms.extend(
            queue.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(5)).create_alarm(
                self,
                f"{name.capitalize()}AsyncFailuresDepth",
                alarm_description=f"Failed asynchronous invocations of the {name} Lambda (not retried)",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for name, queue in self.async_failures.items()
        )
        notify(alarm_topic, self.alarms)
        self._outputs(settings)

    # --- resources ---

    def _build_prompt_bucket(self, settings: PlatformSettings, log_bucket: s3.IBucket) -> s3.Bucket:
        return HardenedBucket(
            self,
            "Prompts",
            access_log_bucket=log_bucket,
            lifecycle_rules=[
                # Only what passes through expires: prompt files and their results. The benchmark suites
                # under benchmarks/ are uploaded once per deploy and must outlive any number of days.
                *(
                    s3.LifecycleRule(
                        id=f"expire-{prefix.rstrip('/')}",
                        prefix=prefix,
                        expiration=cdk.Duration.days(settings.prompt_object_expiration_days),
                    )
                    for prefix in TRANSIENT_PREFIXES
                ),
                s3.LifecycleRule(
                    id="old-versions-and-uploads",
                    noncurrent_version_expiration=cdk.Duration.days(7),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
            ],
        ).bucket

    def _build_queues(self) -> dict[str, QueueWithDlq]:
        """Each catalogued queue with its DLQ, sized for the function it feeds; by role."""
        return {
            queue.role: QueueWithDlq(
                self,
                f"{queue.role.title().replace('-', '')}Queue",
                spec=queue,
                consumer=catalogue.consumer_of(queue),
            )
            for queue in catalogue.ALL_QUEUES
        }

    def _notify_ingest_of_prompt_files(self) -> None:
        self.prompt_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.ingest.queue),
            s3.NotificationKeyFilter(prefix=pipeline.INCOMING_PREFIX),
        )
        for child in self.node.children:  # CDK's singleton handler that configures the notification
            if child.node.id.startswith("BucketNotificationsHandler"):
                cdk.Validations.of(child).acknowledge(
                    cdk.Acknowledgment(
                        id=f"AwsSolutions-IAM4[Policy::{_MANAGED_POLICY_PREFIX}AWSLambdaBasicExecutionRole]",
                        reason="CDK's bucket-notification handler, run only while the stack deploys: "
                        "the AWS-managed basic execution role allows logs:CreateLogGroup/CreateLogStream/"
                        "PutLogEvents on '*' (any log group of the account, not only its own).",
                    )
                )

    def _build_tables(self) -> tuple[dynamodb.TableV2, dynamodb.TableV2]:
        idempotency = dynamodb.TableV2(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=_POINT_IN_TIME_RECOVERY,
            removal_policy=cdk.RemovalPolicy.DESTROY,  # only short-lived idempotency records
        )
        # Job ledger: per-job records and per-job end shards that count each item once (bedrock_pipeline.ledger).
        jobs = dynamodb.TableV2(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=_POINT_IN_TIME_RECOVERY,
            removal_policy=cdk.RemovalPolicy.RETAIN,  # the record of what ran and what it cost
        )
        return idempotency, jobs

    def _build_security_group(
        self, vpc: ec2.IVpc, mlflow_service: ec2.IConnectable, mlflow_port: int
    ) -> ec2.SecurityGroup:
        group = ec2.SecurityGroup(
            self,
            "FunctionSg",
            vpc=vpc,
            description="Pipeline Lambdas: no ingress; egress only to the endpoints, gateways and MLflow",
            allow_all_outbound=False,
        )
        # Consumer-side rule: the MLflow stack keeps no dependency on this one.
        group.connections.allow_to(
            mlflow_service, ec2.Port.tcp(mlflow_port), "Lambdas to MLflow (Cloud Map A records)"
        )
        return group

    def _build_functions(
        self, settings: PlatformSettings, vpc: ec2.IVpc, mlflow_credentials_secret: secretsmanager.ISecret
    ) -> dict[str, lambda_.Function]:
        """Every catalogued function, by name, with the environment the handlers validate at cold start."""
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
            pipeline.ENV_DEFAULT_EXECUTION_MODE: settings.default_execution_mode,
            pipeline.ENV_RUNNER_ITEM_CONCURRENCY: str(settings.runner_item_concurrency),
            pipeline.ENV_BEDROCK_PACING: settings.resolved_pacing,
            pipeline.ENV_BEDROCK_MODEL_RPM: ",".join(
                f"{m}={q}" for m, q in settings.bedrock_model_rpm.items()
            ),
            pipeline.ENV_BEDROCK_TARGET_UTILISATION: str(settings.bedrock_target_utilisation),
            "POWERTOOLS_METRICS_NAMESPACE": settings.metrics_namespace,
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # saves a get_run request per run
            **pipeline.OFFLINE_ENVIRONMENT,
        }
        code = lambda_code(LAMBDAS_DIR, BUNDLE_CACHE_DIR)
        # A function invoked asynchronously (the scheduled benchmark) is not retried by Lambda; its failed
        # invocations land here, with the event and the error, for the alarm and for a person to re-run.
        self.async_failures = {
            spec.name: async_failure_queue(self, f"{spec.name.capitalize()}AsyncFailures")
            for spec in catalogue.FUNCTIONS
            if spec.async_retry_attempts is not None
        }
        return {
            spec.name: PipelineFunction(
                self,
                spec.name.capitalize(),
                spec=spec,
                code=code,
                vpc=vpc,
                security_group=self.function_security_group,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": spec.name},
                log_retention_days=settings.log_retention_days,
                on_failure=(
                    lambda_destinations.SqsDestination(self.async_failures[spec.name])
                    if spec.name in self.async_failures
                    else None
                ),
            ).function
            for spec in catalogue.FUNCTIONS
        }

    def _connect_event_sources(self, settings: PlatformSettings) -> None:
        for spec in catalogue.queue_consumers():
            assert spec.event_source is not None
            max_concurrency = spec.event_source.max_concurrency
            if spec is catalogue.RUNNER and settings.runner_max_concurrency is not None:
                max_concurrency = settings.runner_max_concurrency  # the account's Bedrock quota share
            self.functions[spec.name].add_event_source(
                event_sources.SqsEventSource(
                    self.queues[spec.event_source.queue.role].queue,
                    batch_size=spec.event_source.batch_size,
                    max_concurrency=max_concurrency,
                    report_batch_item_failures=True,  # the handlers answer partial batch responses
                )
            )

    # --- grants (consuming its own queue comes with each event source) ---

    def _grant_ingest(self) -> None:
        fn = self.functions[catalogue.INGEST.name]
        grant_read_keys(
            self.prompt_bucket, fn, f"{pipeline.INCOMING_PREFIX}*", why="Only incoming/: the prompt files."
        )
        grant_write_keys(
            self.prompt_bucket,
            fn,
            RESULTS_KEYS,
            why="Only results/: bad-line reports, a rejected job's summary.",
        )
        self.work.queue.grant_send_messages(fn)  # the work items
        self.jobs_table.grant_read_write_data(fn)  # registers the job in the ledger
        # The model check (model_catalog.py) lists what the account offers. The Service Authorization
        # Reference gives these List actions no resource type, so "*" is the only resource they take
        # (as in Bedrock's own inference prerequisites policy).
        fn.add_to_role_policy(iam.PolicyStatement(actions=list(MODEL_LIST_ACTIONS), resources=["*"]))
        cdk.Validations.of(fn).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="bedrock:ListFoundationModels and bedrock:ListInferenceProfiles take no resource "
                "type (Service Authorization Reference): they read the account's model list, nothing else.",
            )
        )

    def _grant_runner(self) -> None:
        fn = self.functions[catalogue.RUNNER.name]
        why = "Only results/: cached model responses, item results, the merged results and summary."
        grant_read_keys(self.prompt_bucket, fn, RESULTS_KEYS, why=why)
        grant_write_keys(self.prompt_bucket, fn, RESULTS_KEYS, why=why)
        # Attachments beside the prompt files: read into bytes for most models, and read by Bedrock
        # with this role's credentials for the ones that take S3 links (attachments.py).
        grant_read_keys(
            self.prompt_bucket,
            fn,
            f"{pipeline.INCOMING_PREFIX}*",
            why="Only incoming/: records' attachments.",
        )
        self.jobs_table.grant_read_write_data(fn)  # ends items, finalizes jobs
        self.idempotency_table.grant_read_write_data(fn)  # one model call per item under duplicates
        # An item its model has no room for goes back as a fresh message (pacing: no receive spent).
        self.work.queue.grant_send_messages(fn)

    def _grant_evaluator(self) -> None:
        fn = self.functions[catalogue.EVALUATOR.name]
        grant_read_keys(
            self.prompt_bucket, fn, "*", why="Objects of the prompt bucket: a job names its dataset's key."
        )
        grant_write_keys(
            self.prompt_bucket, fn, RESULTS_KEYS, why="Only results/: the job's results, summary, comparison."
        )
        # A job that can never run is moved to the DLQ by the evaluator itself, with its reason.
        self.evaluation.dead_letter_queue.grant_send_messages(fn)

    def _grant_benchmark(self) -> None:
        fn = self.functions[catalogue.BENCHMARK.name]
        grant_read_keys(self.prompt_bucket, fn, f"{SUITES_PREFIX}*", why="Only benchmarks/: the suites.")
        grant_write_keys(
            self.prompt_bucket,
            fn,
            f"{BENCHMARK_RESULTS_PREFIX}*",
            why="Only results/benchmarks/: a benchmark run's results and summary.",
        )

    def _grant_credentials(self, mlflow_credentials_secret: secretsmanager.ISecret) -> None:
        for fn in self.functions.values():  # every handler logs to MLflow
            mlflow_credentials_secret.grant_read(fn)

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


_MANAGED_POLICY_PREFIX = "arn:<AWS::Partition>:iam::aws:policy/service-role/"
_POINT_IN_TIME_RECOVERY = dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True)
