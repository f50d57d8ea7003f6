"""Outbound rules of the workloads' security groups: only the paths they use, never 0.0.0.0/0.

The workloads run in isolated subnets (no NAT, no internet gateway route), so an open egress rule reached
"only" the VPC and the gateway endpoints, which with the endpoints' former default policies meant any
bucket or table of the region. Each group now allows:

- HTTPS (443) to the interface endpoints' security group (ECR, Logs, Secrets Manager, SQS, Bedrock
  runtime): narrower than the VPC CIDR, as only the endpoints' network interfaces carry that group;
- HTTPS (443) to the S3 (and, where used, DynamoDB) gateway endpoints by the services' AWS-managed prefix
  lists, the destination AWS documents for security groups that restrict outbound traffic ("Gateway
  endpoints for Amazon S3", https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-s3.html);
- the peer services on their ports (PostgreSQL 5432, EFS 2049, MLflow 5000): CDK's ``connections`` add
  those egress rules next to the peers' ingress rules once a group no longer allows all outbound.

DNS needs no rule: security groups do not filter traffic to the Amazon DNS server (nor to the ECS task
metadata and credentials endpoints), per "Security group rules" (https://docs.aws.amazon.com/vpc/latest/
userguide/security-group-rules.html).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_ec2 as ec2

HTTPS = ec2.Port.tcp(443)


def allow_https_to_endpoints(
    group: ec2.SecurityGroup,
    *,
    endpoint_security_group: ec2.ISecurityGroup,
    gateway_prefix_lists: Mapping[str, str],
) -> None:
    """HTTPS from ``group`` to the interface endpoints and to the named gateway endpoints' prefix lists."""
    group.add_egress_rule(endpoint_security_group, HTTPS, "HTTPS to the VPC interface endpoints")
    for service, prefix_list_id in gateway_prefix_lists.items():
        group.add_egress_rule(
            ec2.Peer.prefix_list(prefix_list_id), HTTPS, f"HTTPS to {service} through its gateway endpoint"
        )
