"""The SNS topic every alarm notifies, and the helper that wires an alarm to it."""

from __future__ import annotations

from collections.abc import Iterable

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


def alarm_topic(scope: Construct, construct_id: str, *, email: str | None) -> sns.Topic:
    topic = sns.Topic(scope, construct_id, display_name="bedrock-mlflow alarms", enforce_ssl=True)
    if email:
        topic.add_subscription(subscriptions.EmailSubscription(email))
    cdk.Validations.of(topic).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-SNS2",
            reason="Alarm notifications only (alarm name, state, metric): CloudWatch cannot publish to a "
            "topic under the AWS-managed SNS key, and a customer-managed key would protect no data here.",
        )
    )
    return topic


def notify(topic: sns.ITopic, alarms: Iterable[cloudwatch.Alarm]) -> None:
    """Alarm and recovery both reach the topic: a person sees it start and end."""
    action = cloudwatch_actions.SnsAction(topic)
    for alarm in alarms:
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)


def running_tasks_alarm(
    scope: Construct, construct_id: str, *, service: ecs.FargateService, cluster: ecs.ICluster, minimum: int
) -> cloudwatch.Alarm:
    """Fewer running tasks than ``minimum`` for 5 minutes (Container Insights, enabled on the cluster).
    No data counts as breaching: a service without tasks may report nothing at all."""
    return cloudwatch.Metric(
        namespace="ECS/ContainerInsights",
        metric_name="RunningTaskCount",
        dimensions_map={"ClusterName": cluster.cluster_name, "ServiceName": service.service_name},
        statistic="Minimum",
        period=cdk.Duration.minutes(1),
    ).create_alarm(
        scope,
        construct_id,
        alarm_description=f"Fewer than {minimum} running task(s)",
        threshold=minimum,
        evaluation_periods=5,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
    )
