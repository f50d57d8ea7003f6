"""cdk-nag AwsSolutions over every stack and cfn-lint over every template: zero errors."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from stacks.platform import create_app
from tests.infra.conftest import TEST_CONTEXT, Synthesized


def test_given_the_default_app_when_synthesized_with_aws_solutions_checks_then_nothing_is_unacknowledged(
    tmp_path: Path,
) -> None:
    platform = create_app(TEST_CONTEXT, outdir=str(tmp_path))
    cdk.Validations.of(platform.app).add_plugins(AwsSolutionsChecks(platform.app))
    platform.app.synth()  # raises ValidationFailed (report in tmp_path) on any unacknowledged finding
    assert (tmp_path / "manifest.json").is_file()


def test_given_https_and_inference_profiles_when_checked_then_nothing_is_unacknowledged(
    tmp_path: Path,
) -> None:
    context = {
        **TEST_CONTEXT,
        "bedrock_mlflow": {
            **TEST_CONTEXT["bedrock_mlflow"],
            "certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/0b5d6a9e-1111-2222-3333-444455556666",
            "models": ["us.anthropic.claude-3-5-haiku-20241022-v1:0", "global.amazon.nova-2-lite-v1:0"],
        },
    }
    platform = create_app(context, outdir=str(tmp_path))
    platform.app.synth()
    report = AwsSolutionsChecks().validate_scope(platform.app)
    findings = [f"{v.rule_name} {r.construct_path}" for v in report.violations for r in v.violating_resources]
    assert findings == []
    assert report.success
    listener = cdk.assertions.Template.from_stack(platform.mlflow)
    listener.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Port": 443, "Protocol": "HTTPS"}
    )


def test_given_the_synthesized_templates_when_linted_then_cfn_lint_reports_no_errors(
    synthesized: Synthesized,
) -> None:
    templates = sorted(synthesized.outdir.glob("*.template.json"))
    assert len(templates) == 4
    errors = [
        f"{path.name}: {match}"
        for path in templates
        for match in lint_file(path, ManualArgs(regions=["us-east-1"]))
        if match.rule.id.startswith("E")
    ]
    assert errors == []
