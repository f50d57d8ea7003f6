"""VPC over two AZs: public subnets only for the ALB, workloads in isolated subnets without NAT."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.constructs.pipeline_function import retention_days
from stacks.settings import PlatformSettings

# What the workloads call from isolated subnets (no NAT): Bedrock, SQS, logs (awslogs driver of the
# Fargate tasks), ECR (image pulls) and Secrets Manager (task secrets, MLflow credentials at Lambda
# cold start). Powertools Metrics writes EMF to logs, so no CloudWatch monitoring endpoint is needed.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "BedrockRuntime": ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME,
    # The control plane: ingest's model check lists the account's models and inference profiles.
    "Bedrock": ec2.InterfaceVpcEndpointAwsService.BEDROCK,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}


class NetworkStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: PlatformSettings, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.vpc_cidr),
            max_azs=settings.max_azs,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="alb", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="workload", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
                ),
            ],
            # A CDK custom resource revokes the default security group's rules at deploy time: nothing here
            # uses that group, and whatever would fall into it gets no traffic (AWS Security Hub EC2.2).
            restrict_default_security_group=True,
        )
        # Same construct ids as the VPC's former `gateway_endpoints` option: the endpoints are updated in
        # place (policy added), not replaced.
        self.s3_endpoint = self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.dynamodb_endpoint = self.vpc.add_gateway_endpoint(
            "DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
        )
        _confine_gateway_endpoints(self, self.s3_endpoint, self.dynamodb_endpoint)
        # The workloads' security groups allow HTTPS to the gateway endpoints by the services' AWS-managed
        # prefix lists (Gateway endpoints for Amazon S3, "Security groups": "the outbound rules must allow
        # traffic to the prefix list for the service", https://docs.aws.amazon.com/vpc/latest/privatelink/
        # vpc-endpoints-s3.html). Their ids (pl-...) differ per region and are not known at synth.
        self.gateway_prefix_lists = {
            "S3": _managed_prefix_list_id(self, "S3PrefixListLookup", "s3"),
            "DynamoDB": _managed_prefix_list_id(self, "DynamoDbPrefixListLookup", "dynamodb"),
        }
        _acknowledge_lookup_handler(self)
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention_days(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # Endpoints accept HTTPS from inside the VPC only; a literal CIDR (not a token) keeps the
        # rule reviewable in the template.
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSg",
            vpc=self.vpc,
            description="HTTPS from inside the VPC to the interface endpoints",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(settings.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        isolated = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.interface_endpoints = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=isolated,
                security_groups=[self.endpoint_security_group],
                private_dns_enabled=True,
                open=False,
            )
            for name, service in INTERFACE_ENDPOINTS.items()
        }

        # Private DNS for the services: postgres.<ns> and mlflow.<ns> (A records to task IPs).
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self, "Namespace", name=settings.namespace_name, vpc=self.vpc
        )
        cdk.CfnOutput(self, "VpcId", value=self.vpc.vpc_id, export_name=f"{settings.prefix}-vpc-id")


# AWS's own bucket that holds ECR image layers: an image pull downloads them from it through the S3 gateway
# endpoint, so a restrictive endpoint policy must allow s3:GetObject on it ("Minimum Amazon S3 bucket
# permissions for Amazon ECR", https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html).
ECR_LAYER_BUCKET = "prod-{region}-starport-layer-bucket"


def _confine_gateway_endpoints(
    stack: cdk.Stack, s3_endpoint: ec2.GatewayVpcEndpoint, dynamodb_endpoint: ec2.GatewayVpcEndpoint
) -> None:
    """Endpoint policies: S3 and DynamoDB through the VPC reach only this account's resources.

    Without a policy a gateway endpoint allows any request to any bucket or table of the region, any
    account's ("Control access to VPC endpoints using endpoint policies", https://docs.aws.amazon.com/vpc/
    latest/privatelink/vpc-endpoints-access.html). The buckets' generated names are unknown here (naming
    them from this stack would make a dependency cycle), so S3 is confined by the bucket owner's account:
    s3:ResourceAccount, the condition key S3 provides for VPC endpoint policies ("restrict ... access to S3
    buckets that are owned by specified AWS Accounts", https://aws.amazon.com/about-aws/whats-new/2020/12/
    new-iam-condition-keys-amazon-s3-limit-requests-buckets-owned-specific-aws-accounts-specific-tls-versions/).
    What stays reachable: every bucket this account owns (not only this deployment's), and the ECR layer
    bucket read-only. IAM still decides which of them each role may touch.
    """
    s3_endpoint.add_to_policy(
        iam.PolicyStatement(
            sid="OnlyThisAccountsBuckets",
            principals=[iam.AnyPrincipal()],
            actions=["s3:*"],
            resources=["*"],
            conditions={"StringEquals": {"s3:ResourceAccount": stack.account}},
        )
    )
    s3_endpoint.add_to_policy(
        iam.PolicyStatement(
            sid="EcrImageLayers",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"arn:{stack.partition}:s3:::{ECR_LAYER_BUCKET.format(region=stack.region)}/*"],
        )
    )
    # DynamoDB: a table ARN carries its account, so the resource itself confines the endpoint to this
    # account's tables in this region (endpoint policies for DynamoDB, https://docs.aws.amazon.com/vpc/
    # latest/privatelink/vpc-endpoints-ddb.html#vpc-endpoints-policies-ddb).
    dynamodb_endpoint.add_to_policy(
        iam.PolicyStatement(
            sid="OnlyThisAccountsTables",
            principals=[iam.AnyPrincipal()],
            actions=["dynamodb:*"],
            resources=[f"arn:{stack.partition}:dynamodb:{stack.region}:{stack.account}:table/*"],
        )
    )


def _managed_prefix_list_id(scope: Construct, construct_id: str, service: str) -> str:
    """The id of the AWS-managed prefix list ``com.amazonaws.<region>.<service>``, read at deploy time.

    CDK offers no synth-time value: ``GatewayVpcEndpoint`` exposes no prefix-list attribute (CloudFormation's
    AWS::EC2::VPCEndpoint returns none) and ``ec2.PrefixList.from_lookup`` is a context lookup that needs an
    account and credentials at synth, which this account-agnostic app avoids. So a custom resource calls
    EC2 DescribeManagedPrefixLists filtered by ``prefix-list-name`` (https://docs.aws.amazon.com/AWSEC2/
    latest/APIReference/API_DescribeManagedPrefixLists.html) once per deployment.
    """
    stack = cdk.Stack.of(scope)
    name = f"com.amazonaws.{stack.region}.{service}"
    call = cr.AwsSdkCall(
        service="EC2",
        action="describeManagedPrefixLists",
        parameters={"Filters": [{"Name": "prefix-list-name", "Values": [name]}]},
        physical_resource_id=cr.PhysicalResourceId.of(name),
        output_paths=["PrefixLists.0.PrefixListId"],
    )
    lookup = cr.AwsCustomResource(
        scope,
        construct_id,
        on_create=call,
        on_update=call,
        # ec2:Describe* actions are authorized only on "*" (Service Authorization Reference, Amazon EC2).
        policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
        install_latest_aws_sdk=False,  # the runtime's SDK has this call; no download at deploy time
    )
    cdk.Validations.of(lookup).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="ec2:DescribeManagedPrefixLists, the only action of this policy, is a read-only Describe "
            "call that EC2 authorizes only on '*' (no resource-level permissions).",
        )
    )
    return lookup.get_response_field("PrefixLists.0.PrefixListId")


def _acknowledge_lookup_handler(stack: cdk.Stack) -> None:
    """The singleton Lambda behind every AwsCustomResource of the stack (CDK's code, not in the VPC)."""
    for child in stack.node.children:
        if child.node.id.startswith("AWS679f53fac002430cb0da5b7982bd2287"):
            cdk.Validations.of(child).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    reason="CDK's AwsCustomResource handler, run by CloudFormation only while the stack deploys. "
                    "The AWS-managed basic execution role lets it create log groups and write to any log "
                    "group of the account (logs:CreateLogGroup/CreateLogStream/PutLogEvents on '*'), not only "
                    "its own; its only other permission is the prefix-list Describe call.",
                )
            )
