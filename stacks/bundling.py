"""Lambda bundle without Docker: pip-installs the pinned runtime deps for Lambda's platform locally.

``cdk.ILocalBundling`` runs before CDK would start a container, so synth works on machines without
Docker; the Docker image is only the fallback when this machine cannot run pip. The pip install is
cached under ``build/lambda-deps/<hash of requirements + target>`` so repeated synths only copy.

Bytecode: Lambda's /var/task is read-only, so a bundle without ``__pycache__`` compiles every module
it imports on every cold start (the runner's import took 2.2 s instead of 1.0 s: docs/PERFORMANCE.md).
The bundle therefore ships CPython 3.12 bytecode for the modules the handlers import at cold start
(not for everything: that would add 44 MB), compiled by a 3.12 interpreter when this machine has
one (``LAMBDA_BUNDLE_PYTHON``, ``python3.12`` on PATH, or a pyenv install); without one it ships
none and says so.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii

PYTHON_VERSION = "3.12"
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels load there too,
# and some pins (tiktoken 0.14) ship only those.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
# Never part of the deployed code: tests, caches, and the requirements file (already installed).
CODE_EXCLUDES = ("tests", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "requirements.txt")
# What the zip-bundled handlers import by their first invocation: their bytecode ships in the bundle.
COLD_START_MODULES = (
    "handlers.ingest",
    "handlers.runner",
    "bedrock_pipeline.bedrock",
    "bedrock_pipeline.ledger",
    "bedrock_pipeline.use_cases.ingest",
    "bedrock_pipeline.use_cases.run_item",
    "bedrock_pipeline.use_cases.finalize",
    "bedrock_pipeline.pricing",
    "bedrock_pipeline.trace_export",
    "bedrock_pipeline.tracking",
    "mlflow.bedrock",
)
# Bytecode is trusted as shipped: CDK's zip does not keep source mtimes, which the default mode checks
# (a mismatch would make Python recompile, and fail to write, on every cold start).
PYC_INVALIDATION_MODE = "unchecked-hash"
_LIST_IMPORTED_FILES = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if path.endswith(".py"):
        print(path)
"""


def _pip_args(target: Path, requirements: Path) -> list[str]:
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return [
        *args,
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "-t",
        str(target),
        "-r",
        str(requirements),
    ]


def dependency_cache_key(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{PYTHON_VERSION}|{','.join(PLATFORMS)}".encode())
    return digest.hexdigest()[:20]


def install_dependencies(requirements: Path, cache_root: Path) -> Path:
    """Install (once) the requirements for Lambda's platform; return the cached site-packages dir."""
    target = cache_root / dependency_cache_key(requirements)
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    # Install into a temporary sibling and rename, so an interrupted install is never reused.
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=cache_root))
    try:
        subprocess.run(_pip_args(staging, requirements), check=True)
        for cache_dir in staging.rglob("__pycache__"):
            shutil.rmtree(cache_dir, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _link_or_copy(src: str, dst: str) -> str:
    # Hard links make a warm-cache bundle nearly free; fall back to a copy across file systems.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def target_python() -> str | None:
    """An interpreter of Lambda's Python version on this machine, or None."""
    candidates = [os.environ.get("LAMBDA_BUNDLE_PYTHON", ""), shutil.which(f"python{PYTHON_VERSION}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}"))
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue  # e.g. a pyenv shim without that version behind it
        if version == PYTHON_VERSION:
            return candidate
    return None


def compile_cold_start_bytecode(
    bundle_dir: Path, python: str, modules: tuple[str, ...] = COLD_START_MODULES
) -> int:
    """Compile, with ``python``, the bundle's files that importing ``modules`` loads; returns how many."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    # As Lambda puts its task root on the path: ``-c`` puts the working directory (the bundle) first
    # on the import path, and -S leaves out site-packages (this machine's and the editable project).
    listed = subprocess.run(
        [python, "-S", "-c", _LIST_IMPORTED_FILES, *modules],
        capture_output=True,
        text=True,
        env=env,
        cwd=bundle_dir,
        check=True,
    ).stdout.splitlines()
    root = str(bundle_dir.resolve()) + os.sep
    files = sorted({f for f in (os.path.realpath(p) for p in listed) if f.startswith(root)})
    subprocess.run(
        [python, "-m", "compileall", "-q", "--invalidation-mode", PYC_INVALIDATION_MODE, "-i", "-"],
        input="\n".join(files),
        text=True,
        check=True,
        env=env,
    )
    return len(files)


def assemble_bundle(deps: Path, source_dir: Path, output_dir: Path) -> None:
    """``output_dir`` holds the installed ``deps`` (hard-linked where it can) and the code of ``source_dir``."""
    shutil.copytree(deps, output_dir, copy_function=_link_or_copy, dirs_exist_ok=True)
    shutil.copytree(source_dir, output_dir, ignore=shutil.ignore_patterns(*CODE_EXCLUDES), dirs_exist_ok=True)


def build_bundle(source_dir: Path, requirements: Path, cache_root: Path, output_dir: Path) -> None:
    assemble_bundle(install_dependencies(requirements, cache_root), source_dir, output_dir)
    python = target_python()
    if python is None:
        print(
            f"lambda bundle: no Python {PYTHON_VERSION} here (set LAMBDA_BUNDLE_PYTHON): the bundle ships "
            "without bytecode and each cold start compiles what it imports (docs/PERFORMANCE.md)",
            file=sys.stderr,
        )
        return
    compile_cold_start_bytecode(output_dir, python)


def tree_size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@jsii.implements(cdk.ILocalBundling)
class LocalPythonBundler:
    """Builds the bundle on this machine with pip (no Docker)."""

    def __init__(self, source_dir: Path, requirements: Path, cache_root: Path) -> None:
        self._source_dir = source_dir
        self._requirements = requirements
        self._cache_root = cache_root

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        try:
            subprocess.run([sys.executable, "-m", "pip", "--version"], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return False  # let CDK fall back to the Docker image
        build_bundle(self._source_dir, self._requirements, self._cache_root, Path(output_dir))
        return True


def lambda_code(source_dir: Path, cache_root: Path) -> cdk.aws_lambda.Code:
    """The Lambda code asset: ``source_dir`` plus its ``requirements.txt`` installed for Lambda."""
    requirements = source_dir / "requirements.txt"
    pip = " ".join(_pip_args(Path("/asset-output"), Path("/asset-input/requirements.txt"))[1:])
    return cdk.aws_lambda.Code.from_asset(
        str(source_dir),
        exclude=["tests", "**/__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache"],
        bundling=cdk.BundlingOptions(
            image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            command=[
                "bash",
                "-c",
                f"python {pip} && cp -r /asset-input/. /asset-output/ && cd /asset-output && "
                f"python -c '{_LIST_IMPORTED_FILES.strip()}' "  # -c: the cwd, the bundle, is first on the path
                f"{' '.join(COLD_START_MODULES)} | grep '^/asset-output/' | "
                f"python -m compileall -q --invalidation-mode {PYC_INVALIDATION_MODE} -i -",
            ],
            local=LocalPythonBundler(source_dir, requirements, cache_root),
        ),
    )
