"""The MLflow tracking server on Fargate: ALB for people, Cloud Map (mlflow.<ns>:5000) for Lambdas."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sns as sns
from constructs import Construct

from bedrock_pipeline import settings as pipeline_settings
from stacks.constructs.alarm_topic import notify, running_tasks_alarm
from stacks.constructs.egress import allow_https_to_endpoints
from stacks.constructs.pipeline_function import retention_days
from stacks.data import ECR_AUTH_WILDCARD, IMAGE_PLATFORM, TASK_RUNTIME_PLATFORM
from stacks.settings import PlatformSettings

MLFLOW_DIR = Path(__file__).resolve().parent.parent / "containers" / "mlflow"
MLFLOW_PORT = 5000
ARTIFACT_PREFIX = "mlflow-artifacts"


class MlflowServiceStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PlatformSettings,
        vpc: ec2.IVpc,
        namespace: servicediscovery.IPrivateDnsNamespace,
        cluster: ecs.ICluster,
        artifact_bucket_name: str,
        log_bucket: s3.IBucket,
        database_secret: secretsmanager.ISecret,
        admin_secret: secretsmanager.ISecret,
        pipeline_secret: secretsmanager.ISecret,
        database_host: str,
        database_port: int,
        database_name: str,
        postgres_service: ecs.FargateService,
        alarm_topic: sns.ITopic,
        endpoint_security_group: ec2.ISecurityGroup,
        s3_prefix_list: str,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        # Both MLflow users' secrets live in the Data stack, next to the user store they open.
        self.credentials_secret = admin_secret
        flask_secret = secretsmanager.Secret(
            self,
            "FlaskSecretKey",
            description="Flask secret key shared by every MLflow worker and task (CSRF tokens)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=48
            ),
        )
        cdk.Validations.of(flask_secret).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="The Flask key is held in memory by every worker (CSRF tokens); rotating it means a "
                "service restart, which a rotation Lambda cannot do safely.",
            )
        )

        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=settings.mlflow_cpu,
            memory_limit_mib=settings.mlflow_memory_mib,
            runtime_platform=TASK_RUNTIME_PLATFORM,
        )
        artifact_bucket = s3.Bucket.from_bucket_name(self, "ArtifactBucket", artifact_bucket_name)
        # The server proxies artifacts: only its task role touches the bucket.
        artifact_bucket.grant_read_write(task.task_role, f"{ARTIFACT_PREFIX}/*")
        artifact_bucket.grant_delete(task.task_role, f"{ARTIFACT_PREFIX}/*")

        self.load_balancer_security_group = ec2.SecurityGroup(
            self,
            "AlbSg",
            vpc=vpc,
            description="MLflow ALB: ingress only from the configured CIDRs",
            allow_all_outbound=False,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "Alb",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_group=self.load_balancer_security_group,
            drop_invalid_header_fields=True,
        )
        self.load_balancer.log_access_logs(log_bucket, prefix="alb/mlflow")

        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention_days(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        allowed_hosts = [
            settings.mlflow_host,
            f"{settings.mlflow_host}:{MLFLOW_PORT}",
            self.load_balancer.load_balancer_dns_name,
            *([settings.domain_name] if settings.domain_name else []),
            *settings.extra_allowed_hosts,
        ]
        task.add_container(
            "mlflow",
            image=ecs.ContainerImage.from_asset(str(MLFLOW_DIR), platform=IMAGE_PLATFORM),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="mlflow", log_group=log_group),
            port_mappings=[ecs.PortMapping(container_port=MLFLOW_PORT)],
            environment={
                "DB_HOST": database_host,
                "DB_PORT": str(database_port),
                "DB_NAME": database_name,
                "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{artifact_bucket.bucket_name}/{ARTIFACT_PREFIX}",
                "MLFLOW_ALLOWED_HOSTS": ",".join(allowed_hosts),
                "MLFLOW_WORKERS": str(settings.mlflow_workers),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                **pipeline_settings.OFFLINE_ENVIRONMENT,
                "MLFLOW_AUTH_DEFAULT_PERMISSION": "READ",
            },
            secrets={
                "DB_USERNAME": ecs.Secret.from_secrets_manager(database_secret, "username"),
                "DB_PASSWORD": ecs.Secret.from_secrets_manager(database_secret, "password"),
                "MLFLOW_AUTH_ADMIN_USERNAME": ecs.Secret.from_secrets_manager(
                    self.credentials_secret, "username"
                ),
                "MLFLOW_AUTH_ADMIN_PASSWORD": ecs.Secret.from_secrets_manager(
                    self.credentials_secret, "password"
                ),
                "MLFLOW_PIPELINE_USERNAME": ecs.Secret.from_secrets_manager(pipeline_secret, "username"),
                "MLFLOW_PIPELINE_PASSWORD": ecs.Secret.from_secrets_manager(pipeline_secret, "password"),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": ecs.Secret.from_secrets_manager(flask_secret),
            },
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{MLFLOW_PORT}/health')",
                ],
                interval=cdk.Duration.seconds(30),
                retries=3,
                start_period=cdk.Duration.seconds(120),
            ),
        )
        cdk.Validations.of(task).acknowledge(
            ECR_AUTH_WILDCARD,
            *(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[{finding}]",
                    reason="Task role: CDK's S3 grant families on the artifact bucket only, objects "
                    f"limited to {ARTIFACT_PREFIX}/; only this server touches artifacts (clients go "
                    "through its proxy).",
                )
                for finding in (
                    "Action::s3:GetObject*",
                    "Action::s3:GetBucket*",
                    "Action::s3:List*",
                    "Action::s3:DeleteObject*",
                    "Action::s3:Abort*",
                    f"Resource::arn:{self.partition}:s3:::{settings.prefix}-artifacts-<AWS::AccountId>-"
                    f"<AWS::Region>/{ARTIFACT_PREFIX}/*",
                )
            ),
            cdk.Acknowledgment(
                id="AwsSolutions-ECS2",
                reason="Plain environment holds only non-secret settings (hosts, ports, bucket, worker "
                "count); every credential is an ECS secret from Secrets Manager.",
            ),
        )

        self.service_security_group = ec2.SecurityGroup(
            self,
            "ServiceSg",
            vpc=vpc,
            description="MLflow tasks: :5000 from the ALB and the pipeline Lambdas only",
            # Outbound: image pulls, logs and secrets (endpoints), the artifact bucket and image layers (S3
            # gateway), and PostgreSQL (its rule comes with allow_to below). stacks/constructs/egress.py.
            allow_all_outbound=False,
        )
        allow_https_to_endpoints(
            self.service_security_group,
            endpoint_security_group=endpoint_security_group,
            gateway_prefix_lists={"S3": s3_prefix_list},
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=task,
            desired_count=settings.mlflow_min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.service_security_group],
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=cdk.Duration.seconds(180),
            cloud_map_options=ecs.CloudMapOptions(
                name="mlflow",
                cloud_map_namespace=namespace,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=cdk.Duration.seconds(10),
            ),
        )
        # Consumer-side rule (lives in this stack), so the data stack does not depend on this one.
        self.service.connections.allow_to(
            postgres_service, ec2.Port.tcp(database_port), "MLflow to PostgreSQL"
        )

        scaling = self.service.auto_scale_task_count(
            min_capacity=settings.mlflow_min_tasks, max_capacity=settings.mlflow_max_tasks
        )
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=settings.mlflow_target_cpu_percent)

        if settings.certificate_arn:
            listener = self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[acm.Certificate.from_certificate_arn(self, "Cert", settings.certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                open=False,
            )
            listener_port = 443
            scheme = "https"
        else:
            listener = self.load_balancer.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=False
            )
            listener_port = 80
            scheme = "http"
            cdk.Annotations.of(self).add_warning_v2(
                "bedrock-mlflow:PlainHttp",
                "No certificate_arn configured: the MLflow ALB serves plain HTTP, which the settings allow "
                "only while allowed_cidrs are documentation ranges nobody reaches it from. Set "
                "certificate_arn before adding real CIDRs.",
            )
        for cidr in settings.allowed_cidrs:
            self.load_balancer_security_group.add_ingress_rule(
                ec2.Peer.ipv4(cidr), ec2.Port.tcp(listener_port), f"MLflow UI/API from {cidr}"
            )
        target_group = listener.add_targets(
            "Mlflow",
            port=MLFLOW_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.service],
            health_check=elbv2.HealthCheck(path="/health", healthy_http_codes="200"),
            deregistration_delay=cdk.Duration.seconds(30),
        )

        # MLflow's health: the ALB's view (unhealthy targets) and ECS's (tasks running at all).
        notify(
            alarm_topic,
            [
                target_group.metrics.unhealthy_host_count(period=cdk.Duration.minutes(1)).create_alarm(
                    self,
                    "UnhealthyTargets",
                    alarm_description="MLflow tasks failing the ALB's /health check",
                    threshold=1,
                    evaluation_periods=5,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                ),
                running_tasks_alarm(
                    self,
                    "MlflowRunningTasks",
                    service=self.service,
                    cluster=cluster,
                    minimum=settings.mlflow_min_tasks,
                ),
            ],
        )

        self.tracking_uri = settings.mlflow_tracking_uri
        cdk.CfnOutput(
            self,
            "MlflowUrl",
            value=f"{scheme}://{settings.domain_name or self.load_balancer.load_balancer_dns_name}",
            description="MLflow UI/API through the ALB (reachable from allowed_cidrs only)",
            export_name=f"{settings.prefix}-mlflow-url",
        )
        cdk.CfnOutput(
            self,
            "MlflowCredentialsSecretArn",
            value=self.credentials_secret.secret_arn,
            description="Secrets Manager secret with the MLflow admin username/password",
            export_name=f"{settings.prefix}-mlflow-credentials-secret-arn",
        )
        cdk.CfnOutput(self, "MlflowPrivateTrackingUri", value=self.tracking_uri)
