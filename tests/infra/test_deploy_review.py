"""Issue #16, the pre-deploy security review: each point as a property of the synthesized templates."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Synthesized


def _depends_on(resource: dict[str, Any]) -> set[str]:
    value = resource.get("DependsOn", [])
    return set(value if isinstance(value, list) else [value])


# --- 1. PostgreSQL waits for its storage ---


def test_given_postgres_when_its_service_is_created_then_the_efs_mount_targets_and_nfs_rule_exist_first(
    synthesized: Synthesized,
) -> None:
    (service,) = synthesized.resources("data", "AWS::ECS::Service").values()
    mount_targets = set(synthesized.resources("data", "AWS::EFS::MountTarget"))
    nfs_rules = {
        lid
        for lid, rule in synthesized.resources("data", "AWS::EC2::SecurityGroupIngress").items()
        if rule["Properties"]["FromPort"] == 2049
    }
    assert mount_targets and nfs_rules
    assert mount_targets | nfs_rules <= _depends_on(service)


# --- 2. Images are built for the tasks' architecture ---


def test_given_every_container_image_asset_when_built_then_it_targets_linux_amd64(
    synthesized: Synthesized,
) -> None:
    images = {
        f"{manifest.name}/{asset_id}": asset["source"]
        for manifest in synthesized.outdir.glob("*.assets.json")
        for asset_id, asset in json.loads(manifest.read_text()).get("dockerImages", {}).items()
    }
    assert len(images) >= 2  # the MLflow and PostgreSQL images at least
    for name, source in images.items():
        assert source.get("platform") == "linux/amd64", name
    for lid, task in synthesized.all_resources("AWS::ECS::TaskDefinition").items():
        assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "X86_64", lid
