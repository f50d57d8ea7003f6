"""The Lambda asset, bundled for real (pip for manylinux x86_64 / CPython 3.12, no Docker)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from stacks.bundling import target_python, tree_size_bytes
from stacks.platform import create_app
from tests.infra.conftest import TEST_CONTEXT

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def test_given_the_pipeline_stack_when_bundled_then_the_asset_holds_code_and_deps_under_the_lambda_limit(
    tmp_path: Path,
) -> None:
    context = {**TEST_CONTEXT, "aws:cdk:bundling-stacks": ["BedrockMlflow-Pipeline"]}
    platform = create_app(context, outdir=str(tmp_path))
    platform.app.synth()
    template = json.loads((tmp_path / "BedrockMlflow-Pipeline.template.json").read_text())
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                 and r["Properties"].get("Handler", "").startswith("handlers.")]  # fmt: skip
    (asset_key,) = {f["Properties"]["Code"]["S3Key"] for f in functions}  # one bundle, four handlers
    bundle = tmp_path / f"asset.{asset_key.removesuffix('.zip')}"

    assert (bundle / "bedrock_pipeline" / "settings.py").is_file()
    assert (bundle / "handlers" / "__init__.py").is_file()
    for package in ("mlflow", "aws_lambda_powertools", "pydantic_core", "tiktoken", "boto3"):
        assert (bundle / package).is_dir(), package
    assert list(bundle.glob("mlflow_skinny-3.17.2.dist-info/METADATA"))  # importlib.metadata needs it
    assert list(bundle.glob("pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    assert not (bundle / "tests").exists() and not (bundle / "requirements.txt").exists()
    assert tree_size_bytes(bundle) < LAMBDA_UNZIPPED_LIMIT
    shipped = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*.pyc")}
    if target_python() is None:  # no 3.12 on this machine: no bytecode rather than the wrong one
        assert not shipped
    else:  # CPython 3.12 bytecode for what the handlers import, and not for the rest
        assert "handlers/__pycache__/runner.cpython-312.pyc" in shipped
        assert "mlflow/__pycache__/__init__.cpython-312.pyc" in shipped
        assert "botocore/__pycache__/client.cpython-312.pyc" in shipped
        assert "mlflow/sklearn/__pycache__/__init__.cpython-312.pyc" not in shipped
        assert {Path(p).name.split(".")[1] for p in shipped} == {"cpython-312"}
        assert not any(p.startswith("fastapi/") for p in shipped)  # the cold start does not import it
        assert (bundle / "fastapi").is_dir()  # but mlflow.gateway's deferred __init__ does, on first use
        _assert_handlers_import_as_on_lambda(bundle, target_python())


# As on Lambda: Python 3.12, only the bundle on the path, /var/task read-only (no bytecode written).
# The bundle is the working directory, which ``-c`` puts first on the import path (as Lambda puts its
# task root); -S leaves out site-packages, so neither the repository nor the venv can supply a module.
_COLD_START = """
import gc, json, sys
import handlers.ingest, handlers.runner
loaded = {"fastapi": "fastapi" in sys.modules, "gc": gc.isenabled(), "frozen": gc.get_freeze_count()}
import mlflow
roots = {m.__name__: m.__file__ for m in (handlers.runner, mlflow, sys.modules["bedrock_pipeline"])}
print(json.dumps({**loaded, "gateway": mlflow.gateway.get_gateway_uri.__name__, "roots": roots}))
"""


def _assert_handlers_import_as_on_lambda(bundle: Path, python: str | None) -> None:
    assert python is not None
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [python, "-S", "-c", _COLD_START], env=env, cwd=bundle, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    frozen = seen.pop("frozen")
    roots = seen.pop("roots")
    assert all(Path(p).resolve().is_relative_to(bundle.resolve()) for p in roots.values()), roots
    assert seen == {"fastapi": False, "gc": True, "gateway": "get_gateway_uri"}
    assert frozen > 10_000  # the cold start's objects, frozen after its imports
