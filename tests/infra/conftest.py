"""The CDK app, synthesized once per test session (no cdk-nag here: a failing check raises).

The shared app skips the Lambda pip bundling (CDK's own ``aws:cdk:bundling-stacks`` context set to
an empty list): assertion tests only read templates. ``test_bundle.py`` and ``make synth`` bundle
for real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks.platform import Platform, create_app

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

# Explicit so CDK_DEFAULT_REGION on a developer's machine cannot change what the tests see.
TEST_CONTEXT: dict[str, Any] = {"aws:cdk:bundling-stacks": [], "bedrock_mlflow": {"region": "us-east-1"}}


@dataclass(frozen=True)
class Synthesized:
    platform: Platform
    outdir: Path
    templates: dict[str, Template]  # by short name: network, data, mlflow, pipeline

    def json(self, name: str) -> dict[str, Any]:
        return self.templates[name].to_json()

    def resources(self, name: str, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.json(name)["Resources"].items()
            if resource["Type"] == resource_type
        }

    def all_resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name in self.templates:
            found.update({f"{name}/{k}": v for k, v in self.resources(name, resource_type).items()})
        return found


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    platform = create_app(TEST_CONTEXT, outdir=str(outdir))
    platform.app.synth()
    templates = {
        "network": Template.from_stack(platform.network),
        "data": Template.from_stack(platform.data),
        "mlflow": Template.from_stack(platform.mlflow),
        "pipeline": Template.from_stack(platform.pipeline),
    }
    yield Synthesized(platform, outdir, templates)
