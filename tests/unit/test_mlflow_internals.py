"""MLflow's private API is used only in bedrock_pipeline.mlflow_internals, only on a verified MLflow.

An MLflow upgrade fails the first test: re-check each entry of the package's docstring against the new
version, then add it to VERIFIED_MLFLOW_VERSIONS. The fallbacks (MLflow's public behaviour) are checked
here, in test_tracking_headers.py, test_cold_start.py and tests/integration/test_trace_export.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bedrock_pipeline import mlflow_internals
from bedrock_pipeline.mlflow_internals import span_export

REPO_ROOT = Path(__file__).resolve().parents[2]
ADAPTER = "lambdas/bedrock_pipeline/mlflow_internals/"


def test_the_installed_mlflow_is_one_the_adapter_was_verified_against() -> None:
    version = mlflow_internals.installed_mlflow_version()
    assert version in mlflow_internals.VERIFIED_MLFLOW_VERSIONS, (
        f"MLflow {version}: re-check each private use listed in {ADAPTER}__init__.py, then add the version"
    )
    assert mlflow_internals.private_paths_enabled() is True


def test_the_version_is_read_from_mlflow_skinny_first_then_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: dict[str, str] = {"mlflow": "9.0.0"}

    def version(name: str) -> str:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    assert mlflow_internals.installed_mlflow_version() == "9.0.0"  # full mlflow, no skinny
    installed["mlflow-skinny"] = "9.1.0"
    assert mlflow_internals.installed_mlflow_version() == "9.1.0"  # the bundle's distribution wins
    installed.clear()
    assert mlflow_internals.installed_mlflow_version() is None


def test_neither_the_package_nor_its_guard_imports_mlflow() -> None:
    """handlers.cold_start imports the adapter before lean_imports() starts: MLflow must not load there."""
    script = (
        "import json, sys\n"
        "import handlers.cold_start\n"
        "from bedrock_pipeline import mlflow_internals\n"
        "enabled = mlflow_internals.private_paths_enabled()\n"
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules, 'enabled': enabled}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"mlflow": False, "enabled": True}


@pytest.fixture
def unverified_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The guard as it decides on an MLflow version nobody verified."""
    monkeypatch.setattr(mlflow_internals, "installed_mlflow_version", lambda: "0.0.1")
    mlflow_internals.private_paths_enabled.cache_clear()
    yield
    mlflow_internals.private_paths_enabled.cache_clear()


def test_an_unverified_mlflow_turns_the_private_paths_off_with_one_warning(
    unverified_mlflow: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=mlflow_internals.__name__):
        assert mlflow_internals.private_paths_enabled() is False
        assert mlflow_internals.private_paths_enabled() is False
    (warning,) = caplog.records
    assert "MLflow 0.0.1" in warning.getMessage() and "public behaviour" in warning.getMessage()


class _Exporter:
    """MLflow's span exporter's public face; records every private attribute anyone reads."""

    def __init__(self) -> None:
        self.exported: list[list[str]] = []
        self.private_reads: list[str] = []

    def export(self, spans: Any) -> None:
        self.exported.append([span.name for span in spans])

    def __getattr__(self, name: str) -> Any:
        self.private_reads.append(name)
        raise AttributeError(name)


class _Span:
    def __init__(self, name: str, trace_id: int, root: bool) -> None:
        self.name = name
        self.context = type("Context", (), {"trace_id": trace_id})()
        self.parent = None if root else object()


def _two_traces() -> list[_Span]:
    return [_Span("call 1", 1, False), _Span("record 1", 1, True), _Span("record 2", 2, True)]


def test_a_held_set_goes_to_mlflows_public_export_whole_on_an_unverified_mlflow(
    unverified_mlflow: None,
) -> None:
    exporter = _Exporter()
    span_export.export_info_first(exporter, _two_traces())
    assert exporter.exported == [["call 1", "record 1", "record 2"]]
    assert exporter.private_reads == []
    assert span_export.installed_exporter() is None


def test_on_the_verified_mlflow_the_held_set_takes_the_private_path() -> None:
    """The control for the test above: the same call reads MLflow's exporter internals here."""
    exporter = _Exporter()
    span_export.export_info_first(exporter, _two_traces())
    assert exporter.private_reads != []
    assert exporter.exported == [["call 1", "record 1", "record 2"]]  # and still lost nothing


def test_the_constants_used_outside_the_adapter_keep_their_documented_values() -> None:
    """Judged public (the package's docstring says why): their values are MLflow's documented names."""
    from mlflow.entities import MlflowExperimentLocation
    from mlflow.entities.trace_location import MlflowExperimentLocation as FromItsModule
    from mlflow.tracing.constant import SpanAttributeKey
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    assert SpanAttributeKey.CHAT_USAGE == "mlflow.chat.tokenUsage"
    assert (MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME) == ("mlflow.parentRunId", "mlflow.runName")
    assert FromItsModule is MlflowExperimentLocation


# MLflow modules code outside the adapter may import or reach: its documented API, and the two constant
# modules judged public in the adapter's docstring. Anything else, or any _name, is MLflow's private API.
PUBLIC_MLFLOW_MODULES = frozenset(
    {
        "mlflow",
        "mlflow.artifacts",
        "mlflow.bedrock",
        "mlflow.client",
        "mlflow.entities",
        "mlflow.exceptions",
        "mlflow.genai",
        "mlflow.genai.scorers",
        "mlflow.tracing",
        "mlflow.tracking",
        "mlflow.tracing.constant",
        "mlflow.utils.mlflow_tags",
    }
)
# Not scanned: tests pin MLflow's internals on purpose; containers/ is the tracking server's own image
# (full MLflow, its database and auth set-up), which cannot import the adapter.
NOT_SCANNED = ("tests/", "containers/", ADAPTER)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _public(module: str) -> bool:
    parts = module.split(".")
    if any(part.startswith("_") for part in parts):
        return False
    return module in PUBLIC_MLFLOW_MODULES or module.startswith("mlflow.entities.")


def _private_mlflow_uses(source: str) -> list[str]:
    """Imports of MLflow modules outside PUBLIC_MLFLOW_MODULES, imported _names, and attribute chains on
    MLflow modules that reach a private module or a _name."""
    found: list[str] = []
    bound: dict[str, str] = {}  # local name -> the MLflow module it is bound to
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    if not _public(alias.name):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    bound[alias.asname or "mlflow"] = alias.name if alias.asname else "mlflow"
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "mlflow"
        ):
            module = node.module or ""
            if not _public(module):
                found.append(f"line {node.lineno}: from {module} import ...")
                continue
            for alias in node.names:
                target = f"{module}.{alias.name}"
                if alias.name.startswith("_") or (_is_module(target) and not _public(target)):
                    found.append(f"line {node.lineno}: from {module} import {alias.name}")
                elif _is_module(target):
                    bound[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "ctx", None), ast.Del):
            continue
        chain: list[str] = []
        inner: ast.expr = node
        while isinstance(inner, ast.Attribute):
            chain.insert(0, inner.attr)
            inner = inner.value
        if not isinstance(inner, ast.Name) or inner.id not in bound:
            continue
        module = bound[inner.id]
        for attr in chain:
            if attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__")):
                found.append(f"line {node.lineno}: {module}.{attr}")
                break
            if _is_module(f"{module}.{attr}"):
                module = f"{module}.{attr}"
                if not _public(module):
                    found.append(f"line {node.lineno}: {module}")
                    break
            else:
                break
    return sorted(set(found))


def test_the_private_use_finder_finds_each_shape_and_passes_public_use() -> None:
    private = (
        "import mlflow.tracing.provider\n"
        "from mlflow.tracing import provider\n"
        "from mlflow.utils.uri import is_databricks_uri\n"
        "from mlflow.entities import _mlflow_object\n"
        "import mlflow\n"
        "mlflow.tracing.provider._get_tracer('x')\n"
        "mlflow._private_thing\n"
    )
    assert len(_private_mlflow_uses(private)) == 6  # the bare `import mlflow` is public
    public = (
        "import mlflow\nfrom mlflow.entities import SpanType\n"
        "from mlflow.entities.trace_location import MlflowExperimentLocation\n"
        "from mlflow.tracking import MlflowClient\nfrom mlflow.tracing.constant import SpanAttributeKey\n"
        "mlflow.bedrock.autolog()\nmlflow.tracing.reset()\nmlflow.genai.evaluate\nclient._private = 1\n"
    )
    assert _private_mlflow_uses(public) == []


def test_no_code_outside_the_adapter_uses_mlflows_private_api() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    scanned = [path for path in listed if not path.startswith(NOT_SCANNED)]
    assert "lambdas/bedrock_pipeline/trace_export.py" in scanned
    offenders = {
        path: uses for path in scanned if (uses := _private_mlflow_uses((REPO_ROOT / path).read_text()))
    }
    assert offenders == {}, f"private MLflow API outside {ADAPTER}: move it there, behind the guard"
