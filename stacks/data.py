"""PostgreSQL on Fargate (data on encrypted EFS), the MLflow artifact bucket and the log bucket."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct, IConstruct

from stacks.constructs.alarm_topic import alarm_topic, notify, running_tasks_alarm
from stacks.constructs.egress import allow_https_to_endpoints
from stacks.constructs.hardened_bucket import HardenedBucket, access_log_bucket
from stacks.constructs.pipeline_function import retention_days
from stacks.settings import PlatformSettings

# Every image is built for the tasks' X86_64 runtime platform, whatever machine runs `cdk deploy`: an
# image built on arm64 (Apple silicon, Graviton) would otherwise be arm64 and fail to start on x86_64.
IMAGE_PLATFORM = ecr_assets.Platform.LINUX_AMD64
TASK_RUNTIME_PLATFORM = ecs.RuntimePlatform(
    cpu_architecture=ecs.CpuArchitecture.X86_64, operating_system_family=ecs.OperatingSystemFamily.LINUX
)
CONTAINERS_DIR = Path(__file__).resolve().parent.parent / "containers"
POSTGRES_PORT = 5432
POSTGRES_UID = "999"  # the postgres user of the Debian postgres image
PGDATA_MOUNT = "/var/lib/postgresql/data"
ECR_AUTH_WILDCARD = cdk.Acknowledgment(
    id="AwsSolutions-IAM5[Resource::*]",
    reason="Task execution role: ecr:GetAuthorizationToken is only authorized on '*' (the pulls "
    "themselves are scoped to the asset repository).",
)


class DataStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PlatformSettings,
        vpc: ec2.IVpc,
        namespace: servicediscovery.IPrivateDnsNamespace,
        endpoint_security_group: ec2.ISecurityGroup,
        s3_prefix_list: str,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.log_bucket = access_log_bucket(self, "AccessLogs", retention_days=365)
        # A deterministic name (account + region pseudo parameters) lets the MLflow stack reference the
        # bucket without a cross-stack token, so its IAM policy stays readable.
        self.artifact_bucket_name = f"{settings.prefix}-artifacts-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"
        self.artifact_bucket = HardenedBucket(
            self,
            "Artifacts",
            bucket_name=self.artifact_bucket_name,
            access_log_bucket=self.log_bucket,
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=cdk.Duration.days(
                        settings.artifact_noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
        ).bucket

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )

        self.database_secret = secretsmanager.Secret(
            self,
            "DatabaseCredentials",
            description="PostgreSQL credentials of the MLflow backend store",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=f'{{"username": "{settings.postgres_username}"}}',
                generate_string_key="password",
                exclude_punctuation=True,  # goes into a postgresql:// URI
                password_length=32,
            ),
            # PostgreSQL keeps the password it was initialised with on the retained EFS data: the
            # secret must outlive the stack with it.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        cdk.Validations.of(self.database_secret).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="Self-managed PostgreSQL on Fargate: no RDS rotation Lambda applies; rotate by "
                "ALTER USER plus a new secret version, then restart the MLflow service (docs/DEPLOY.md).",
            )
        )
        # MLflow's users live in PostgreSQL on the retained EFS, so their credentials live here too and are
        # retained with them: a recreated MLflow stack finds the same secrets. The image's start-up script
        # sets each user's password from its secret on every start (containers/mlflow/start.py).
        self.mlflow_admin_secret = _mlflow_user_secret(
            self, "MlflowAdminCredentials", settings.mlflow_admin_username, "MLflow basic-auth admin (people)"
        )
        # The pipeline Lambdas' own, non-admin user: they never see the admin's password.
        self.mlflow_pipeline_secret = _mlflow_user_secret(
            self,
            "MlflowPipelineCredentials",
            settings.mlflow_pipeline_username,
            "MLflow basic-auth user of the pipeline Lambdas (not an admin)",
        )
        self.database_name = settings.postgres_database
        self.database_port = POSTGRES_PORT

        self.file_system = efs.FileSystem(
            self,
            "PgData",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            encrypted=True,
            enable_automatic_backups=True,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            # The mount targets only answer NFS; they start no connection (security groups are stateful).
            security_group=ec2.SecurityGroup(
                self,
                "PgDataSg",
                vpc=vpc,
                description="EFS mount targets of the PostgreSQL data: NFS from the PostgreSQL task only",
                allow_all_outbound=False,
            ),
            # Not "anonymous access allowed": this only stops CDK from adding its default statement, which
            # grants ClientRootAccess and ClientWrite to any principal ("*") reaching a mount target. The
            # policy added below names the PostgreSQL task role instead; with a file-system policy that grants
            # nothing to "*", NFS clients without IAM authorization are refused ("Using IAM to control file
            # system data access", https://docs.aws.amazon.com/efs/latest/ug/iam-access-control-nfs-efs.html).
            allow_anonymous_access=True,
        )
        access_point = self.file_system.add_access_point(
            "PgDataAccessPoint",
            path="/pgdata",
            create_acl=efs.Acl(owner_uid=POSTGRES_UID, owner_gid=POSTGRES_UID, permissions="700"),
            posix_user=efs.PosixUser(uid=POSTGRES_UID, gid=POSTGRES_UID),
        )

        task = ecs.FargateTaskDefinition(
            self,
            "PostgresTask",
            cpu=settings.postgres_cpu,
            memory_limit_mib=settings.postgres_memory_mib,
            runtime_platform=TASK_RUNTIME_PLATFORM,
        )
        task.add_volume(
            name="pgdata",
            efs_volume_configuration=ecs.EfsVolumeConfiguration(
                file_system_id=self.file_system.file_system_id,
                transit_encryption="ENABLED",
                authorization_config=ecs.AuthorizationConfig(
                    access_point_id=access_point.access_point_id, iam="ENABLED"
                ),
            ),
        )
        self.file_system.grant_read_write(task.task_role)
        # Mount and write, through a mount target, for the PostgreSQL task role only. No root access: the
        # access point makes every request run as the postgres user (uid 999).
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[task.task_role],
                actions=["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                conditions={"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
            )
        )
        log_group = logs.LogGroup(
            self,
            "PostgresLogs",
            retention=retention_days(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        container = task.add_container(
            "postgres",
            # Built FROM postgres into ECR: isolated subnets cannot reach Docker Hub.
            image=ecs.ContainerImage.from_asset(str(CONTAINERS_DIR / "postgres"), platform=IMAGE_PLATFORM),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="postgres", log_group=log_group),
            environment={
                "POSTGRES_DB": settings.postgres_database,
                # A subdirectory: initdb wants an empty directory it owns.
                "PGDATA": f"{PGDATA_MOUNT}/pgdata",
            },
            secrets={
                "POSTGRES_USER": ecs.Secret.from_secrets_manager(self.database_secret, "username"),
                "POSTGRES_PASSWORD": ecs.Secret.from_secrets_manager(self.database_secret, "password"),
            },
            port_mappings=[ecs.PortMapping(container_port=POSTGRES_PORT)],
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"'],
                interval=cdk.Duration.seconds(15),
                retries=5,
                start_period=cdk.Duration.seconds(60),
            ),
            stop_timeout=cdk.Duration.seconds(60),  # a clean shutdown checkpoint, not a SIGKILL
        )
        container.add_mount_points(
            ecs.MountPoint(container_path=PGDATA_MOUNT, source_volume="pgdata", read_only=False)
        )

        self.postgres_security_group = ec2.SecurityGroup(
            self,
            "PostgresSg",
            vpc=vpc,
            description="PostgreSQL task: ingress only from the MLflow service (added by that stack)",
            # Outbound: image pulls (ECR endpoints, layers from S3), logs, secrets, and NFS to its EFS
            # (that rule comes with the file system's connection below). stacks/constructs/egress.py.
            allow_all_outbound=False,
        )
        allow_https_to_endpoints(
            self.postgres_security_group,
            endpoint_security_group=endpoint_security_group,
            gateway_prefix_lists={"S3": s3_prefix_list},
        )
        self.postgres_service = ecs.FargateService(
            self,
            "Postgres",
            cluster=self.cluster,
            task_definition=task,
            desired_count=1,
            # One writer on the data directory, ever: stop the old task before starting the new one.
            min_healthy_percent=0,
            max_healthy_percent=100,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.postgres_security_group],
            assign_public_ip=False,
            enable_execute_command=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            cloud_map_options=ecs.CloudMapOptions(
                name="postgres",
                cloud_map_namespace=namespace,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=cdk.Duration.seconds(10),
            ),
        )
        self.file_system.connections.allow_default_port_from(self.postgres_service, "NFS from PostgreSQL")
        # The first task mounts EFS as it starts: without its mount targets (and the NFS rule that lets it
        # reach them) the mount fails, and the circuit breaker then rolls back a fresh stack's creation.
        self.postgres_service.node.add_dependency(
            self.file_system.mount_targets_available, *_nfs_ingress_rules(self.file_system)
        )
        self.database_host = settings.postgres_host

        # Every alarm of the platform notifies this topic (the MLflow and pipeline stacks use it too).
        self.alarm_topic = alarm_topic(self, "AlarmTopic", email=settings.alarm_email)
        notify(
            self.alarm_topic,
            [
                running_tasks_alarm(
                    self,
                    "PostgresRunningTasks",
                    service=self.postgres_service,
                    cluster=self.cluster,
                    minimum=1,
                )
            ],
        )

        cdk.Validations.of(task).acknowledge(
            ECR_AUTH_WILDCARD,
            cdk.Acknowledgment(
                id="AwsSolutions-ECS2",
                reason="Only non-secret settings (database name, PGDATA path) are plain environment "
                "variables; credentials come from Secrets Manager via ECS secrets.",
            ),
        )
        cdk.CfnOutput(
            self,
            "ArtifactBucketName",
            value=self.artifact_bucket.bucket_name,
            export_name=f"{settings.prefix}-artifact-bucket",
        )


def _nfs_ingress_rules(file_system: efs.FileSystem) -> list[IConstruct]:
    """The ingress rules on the file system's security group (CDK adds them as child constructs)."""
    return [
        child
        for group in file_system.connections.security_groups
        for child in group.node.children
        if isinstance(child, ec2.CfnSecurityGroupIngress)
    ]


def _mlflow_user_secret(
    scope: Construct, construct_id: str, username: str, description: str
) -> secretsmanager.Secret:
    secret = secretsmanager.Secret(
        scope,
        construct_id,
        description=f"{description}: JSON username/password",
        generate_secret_string=secretsmanager.SecretStringGenerator(
            secret_string_template=f'{{"username": "{username}"}}',
            generate_string_key="password",
            exclude_punctuation=True,
            password_length=32,
        ),
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    cdk.Validations.of(secret).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-SMG4",
            reason="Rotation = put a new secret version and restart the MLflow service: its start-up script "
            "sets the user's password from the secret (containers/mlflow/start.py). No rotation Lambda "
            "can change a password inside MLflow's user store.",
        )
    )
    return secret
