"""The pipeline's alarms and dashboard: dead letters, stuck messages, function errors, regressions.

Built straight into the given scope (not under a construct of its own) so the alarms keep the logical
ids they were deployed with.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.constructs.queue_with_dlq import QueueWithDlq

_AT_LEAST_THRESHOLD = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING


def add_alarms_and_dashboard(
    scope: Construct,
    *,
    queues: Mapping[str, QueueWithDlq],
    functions: Mapping[str, lambda_.IFunction],
    metrics_namespace: str,
    dashboard_name: str,
) -> tuple[list[cloudwatch.Alarm], cloudwatch.Dashboard]:
    """``queues`` by role and ``functions`` by catalogue name; returns the alarms and the dashboard."""
    alarms = [
        *(alarm for role, pair in queues.items() for alarm in _queue_alarms(scope, role.capitalize(), pair)),
        *(_error_alarm(scope, name, fn) for name, fn in functions.items()),
        _regression_alarm(scope, metrics_namespace),
    ]
    dashboard = cloudwatch.Dashboard(scope, "Dashboard", dashboard_name=dashboard_name)
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Invocations", left=[fn.metric_invocations() for fn in functions.values()], width=12
        ),
        cloudwatch.GraphWidget(
            title="Errors", left=[fn.metric_errors() for fn in functions.values()], width=12
        ),
        cloudwatch.GraphWidget(
            title="Duration p95",
            left=[fn.metric_duration(statistic="p95") for fn in functions.values()],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Queue depth (visible)",
            left=[p.queue.metric_approximate_number_of_messages_visible() for p in queues.values()],
            right=[
                p.dead_letter_queue.metric_approximate_number_of_messages_visible() for p in queues.values()
            ],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Oldest message age (s)",
            left=[p.queue.metric_approximate_age_of_oldest_message() for p in queues.values()],
            width=12,
        ),
        cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=12),
    )
    return alarms, dashboard


def _queue_alarms(scope: Construct, name: str, pair: QueueWithDlq) -> list[cloudwatch.Alarm]:
    five_minutes = cdk.Duration.minutes(5)
    dead_letters = pair.dead_letter_queue.metric_approximate_number_of_messages_visible(period=five_minutes)
    oldest = pair.queue.metric_approximate_age_of_oldest_message(period=five_minutes)
    return [
        dead_letters.create_alarm(
            scope,
            f"{name}DlqDepth",
            alarm_description=f"Messages in the {name.lower()} dead-letter queue",
            threshold=1,
            evaluation_periods=1,
            comparison_operator=_AT_LEAST_THRESHOLD,
            treat_missing_data=_NOT_BREACHING,
        ),
        # A message older than two visibility timeouts has been retried and is stuck.
        oldest.create_alarm(
            scope,
            f"{name}OldestMessage",
            alarm_description=f"Oldest message age of the {name.lower()} queue",
            threshold=pair.visibility_timeout_seconds * 2,
            evaluation_periods=3,
            treat_missing_data=_NOT_BREACHING,
        ),
    ]


def _error_alarm(scope: Construct, name: str, fn: lambda_.IFunction) -> cloudwatch.Alarm:
    return fn.metric_errors(period=cdk.Duration.minutes(5)).create_alarm(
        scope,
        f"{name.capitalize()}Errors",
        alarm_description=f"Errors of the {name} Lambda",
        threshold=1,
        evaluation_periods=1,
        comparison_operator=_AT_LEAST_THRESHOLD,
        treat_missing_data=_NOT_BREACHING,
    )


def _regression_alarm(scope: Construct, namespace: str) -> cloudwatch.Alarm:
    # The benchmark handler counts regressions (Powertools Metrics, EMF) per run.
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name="BenchmarkRegressions",
        dimensions_map={"service": "bedrock-pipeline"},
        statistic="Sum",
        period=cdk.Duration.hours(1),
    ).create_alarm(
        scope,
        "BenchmarkRegressions",
        alarm_description="A benchmark run regressed (see results/benchmarks/<run id>/summary.json)",
        threshold=1,
        evaluation_periods=1,
        comparison_operator=_AT_LEAST_THRESHOLD,
        treat_missing_data=_NOT_BREACHING,
    )
