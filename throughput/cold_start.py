"""Cold start: the runner bundle's unzipped size and import times, each in fresh subprocesses.

    python -m throughput.cold_start [--repeats 5]

- Bundle: built exactly as the CDK app does (stacks.bundling.build_bundle: lambdas/requirements.txt
  pip-installed for Lambda's platform, cached under build/lambda-deps/, plus the lambdas/ code).
- Imports, median of ``--repeats`` runs, interleaved so machine noise hits each alike:
  ``python -c "import mlflow"`` (the full package, as installed in .venv), ``python -c "import
  handlers.runner"`` in .venv (full mlflow installed beside it), and the same handler import from a
  bundle holding only the runner's requirements (mlflow-skinny), installed once for this machine's
  interpreter (cached under build/throughput/), plus the lambdas/ code, with and without compiled
  bytecode.
- The deployed bundle itself, when this machine has the Lambda runtime's Python (3.12; see
  stacks.bundling.target_python): imported with ``python3.12 -S`` and nothing allowed to write
  bytecode, as on Lambda's read-only /var/task: with the bytecode it ships, and with that bytecode
  ignored (what every cold start paid before the bundle shipped any).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from local_stack.config import REPO_ROOT
from throughput.phase import emit_result

LAMBDAS = REPO_ROOT / "lambdas"
REQUIREMENTS = LAMBDAS / "requirements.txt"
BENCH_BUILD = REPO_ROOT / "build" / "throughput"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
HANDLER = "handlers.runner"


def build_deployed_bundle(out: Path) -> dict[str, float]:
    """The runner's code asset, built as stacks.bundling builds it; its unzipped size."""
    from stacks.bundling import build_bundle, tree_size_bytes

    build_bundle(LAMBDAS, REQUIREMENTS, REPO_ROOT / "build" / "lambda-deps", out)
    total = tree_size_bytes(out)
    biggest = sorted(
        ((tree_size_bytes(p) if p.is_dir() else p.stat().st_size, p.name) for p in out.iterdir()),
        reverse=True,
    )[:6]
    pyc = sum(p.stat().st_size for p in out.rglob("*.pyc"))
    return {"total_mb": total / 1e6, "bytecode_mb": pyc / 1e6, **{f"top:{n}": s / 1e6 for s, n in biggest}}


def local_bundle(python: str) -> Path:
    """The runner's requirements installed for this machine's interpreter (cached), plus nothing else."""
    version = subprocess.run(
        [python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import hashlib

    key = hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()[:16]
    target = BENCH_BUILD / f"runner-deps-py{version}-{key}"
    if target.is_dir():
        return target
    BENCH_BUILD.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=BENCH_BUILD))
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--disable-pip-version-check",
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                version,
                "--implementation",
                "cp",
                "--only-binary=:all:",
                "-t",
                str(staging),
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _time_import(argv: list[str], env: dict[str, str], cwd: Path | None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


DEPLOYED_SHIPPED = f"import {HANDLER} (deployed bundle, Python 3.12, with its bytecode)"
DEPLOYED_IGNORED = f"import {HANDLER} (deployed bundle, Python 3.12, no bytecode)"


def import_times(repeats: int, deployed: Path | None, lambda_python: str | None) -> dict[str, Any]:
    base_python = os.path.realpath(VENV_PYTHON)  # the interpreter .venv was made from
    from bedrock_pipeline.settings import OFFLINE_ENVIRONMENT
    from stacks.bundling import assemble_bundle

    # The runner's requirements for this interpreter and the lambdas/ code in one directory, as on
    # Lambda; beside the cached install, so its files are hard links rather than copies.
    deps = local_bundle(base_python)
    skinny = Path(tempfile.mkdtemp(prefix="skinny-", dir=BENCH_BUILD))
    # Every case alike: MLflow's telemetry off, as the handlers and the deployed functions have it.
    venv_env = {**os.environ, **OFFLINE_ENVIRONMENT}
    venv_env.pop("PYTHONDONTWRITEBYTECODE", None)
    # -S: no site-packages at all; ``-c`` puts the working directory, the bundle, first on the path, as
    # Lambda puts its task root.
    bundle_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **OFFLINE_ENVIRONMENT}
    compiled_cache = Path(tempfile.mkdtemp(prefix="pyc-"))
    cases: dict[str, tuple[list[str], dict[str, str], Path | None]] = {
        "import mlflow (full, .venv)": ([str(VENV_PYTHON), "-c", "import mlflow"], venv_env, None),
        f"import {HANDLER} (.venv)": ([str(VENV_PYTHON), "-c", f"import {HANDLER}"], venv_env, None),
        f"import {HANDLER} (skinny bundle, bytecode compiled)": (
            [base_python, "-S", "-c", f"import {HANDLER}"],
            {**bundle_env, "PYTHONPYCACHEPREFIX": str(compiled_cache)},
            skinny,
        ),
        f"import {HANDLER} (skinny bundle, no bytecode)": (
            [base_python, "-S", "-c", f"import {HANDLER}"],
            # The bundle holds no __pycache__ (pip --no-compile, none copied from lambdas/) and nothing
            # may write one; the standard library keeps its own compiled files, as Lambda's runtime does.
            {**bundle_env, "PYTHONDONTWRITEBYTECODE": "1"},
            skinny,
        ),
        "import mlflow (skinny bundle, bytecode compiled)": (
            [base_python, "-S", "-c", "import mlflow"],
            {**bundle_env, "PYTHONPYCACHEPREFIX": str(compiled_cache)},
            skinny,
        ),
    }
    if deployed is not None and lambda_python is not None:
        lambda_env = {**bundle_env, "PYTHONDONTWRITEBYTECODE": "1"}
        cases[DEPLOYED_SHIPPED] = ([lambda_python, "-S", "-c", f"import {HANDLER}"], lambda_env, deployed)
        # A cache prefix makes Python look for bytecode only there (an empty directory): none is found.
        ignored = {**lambda_env, "PYTHONPYCACHEPREFIX": str(Path(compiled_cache) / "none")}
        cases[DEPLOYED_IGNORED] = ([lambda_python, "-S", "-c", f"import {HANDLER}"], ignored, deployed)
    try:
        assemble_bundle(deps, LAMBDAS, skinny)
        for argv, env, cwd in cases.values():  # warm the OS file cache and the compiled bytecode cache
            _time_import(argv, env, cwd)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, (argv, env, cwd) in cases.items():
                samples[name].append(_time_import(argv, env, cwd))
    finally:
        shutil.rmtree(compiled_cache, ignore_errors=True)
        shutil.rmtree(skinny, ignore_errors=True)
    return {
        "repeats": repeats,
        "python": base_python,
        "median_s": {name: statistics.median(values) for name, values in samples.items()},
        "min_s": {name: min(values) for name, values in samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from stacks.bundling import target_python

    lambda_python = target_python()
    with tempfile.TemporaryDirectory(prefix="bundle-") as out:
        bundle = build_deployed_bundle(Path(out))
        imports = import_times(args.repeats, Path(out), lambda_python)
    emit_result({"name": "cold_start", "bundle": bundle, "lambda_python": lambda_python, "imports": imports})


if __name__ == "__main__":
    main()
