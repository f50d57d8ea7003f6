"""Cold start: the runner bundle's unzipped size and import times, each in fresh subprocesses.

    python -m bench.cold_start [--repeats 5]

- Bundle: built exactly as the CDK app does (stacks.bundling.build_bundle: lambdas/requirements.txt
  pip-installed for Lambda's platform, cached under build/lambda-deps/, plus the lambdas/ code).
- Imports, median of ``--repeats`` runs, interleaved so machine noise hits each alike:
  ``python -c "import mlflow"`` (the full package, as installed in .venv), ``python -c "import
  handlers.runner"`` in .venv (full mlflow installed beside it), and the same handler import from a
  bundle holding only the runner's requirements (mlflow-skinny). The deployed bundle targets CPython
  3.12; this machine has 3.11, so the same requirements are installed once for 3.11 (cached under
  build/bench/) to import them here. Lambda's /var/task is read-only and the bundle is installed
  with ``--no-compile``, so each cold start compiles every module: that case is measured with an
  empty bytecode cache, next to the same bundle with its bytecode compiled.
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

from bench.phase import emit_result
from local_stack.config import REPO_ROOT

LAMBDAS = REPO_ROOT / "lambdas"
REQUIREMENTS = LAMBDAS / "requirements.txt"
BENCH_BUILD = REPO_ROOT / "build" / "bench"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
HANDLER = "handlers.runner"


def bundle_size_mb() -> dict[str, float]:
    """Unzipped size of the runner's code asset, built as stacks.bundling builds it."""
    from stacks.bundling import build_bundle, tree_size_bytes

    with tempfile.TemporaryDirectory(prefix="bundle-") as out:
        build_bundle(LAMBDAS, REQUIREMENTS, REPO_ROOT / "build" / "lambda-deps", Path(out))
        total = tree_size_bytes(Path(out))
        biggest = sorted(
            ((tree_size_bytes(p) if p.is_dir() else p.stat().st_size, p.name) for p in Path(out).iterdir()),
            reverse=True,
        )[:6]
    return {"total_mb": total / 1e6, **{f"top:{name}": size / 1e6 for size, name in biggest}}


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


def _time_import(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def import_times(repeats: int) -> dict[str, Any]:
    base_python = os.path.realpath(VENV_PYTHON)  # the interpreter .venv was made from
    deps = local_bundle(base_python)
    venv_env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{LAMBDAS}"}
    venv_env.pop("PYTHONDONTWRITEBYTECODE", None)
    # -S: no site-packages at all, only the bundle and the code, as on Lambda.
    bundle_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{deps}{os.pathsep}{LAMBDAS}", "LANG": "C.UTF-8"}
    compiled_cache = Path(tempfile.mkdtemp(prefix="pyc-"))
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "import mlflow (full, .venv)": ([str(VENV_PYTHON), "-c", "import mlflow"], venv_env),
        f"import {HANDLER} (.venv)": ([str(VENV_PYTHON), "-c", f"import {HANDLER}"], venv_env),
        f"import {HANDLER} (skinny bundle, bytecode compiled)": (
            [base_python, "-S", "-c", f"import {HANDLER}"],
            {**bundle_env, "PYTHONPYCACHEPREFIX": str(compiled_cache)},
        ),
        f"import {HANDLER} (skinny bundle, as deployed: no bytecode)": (
            [base_python, "-S", "-c", f"import {HANDLER}"],
            # The bundle holds no __pycache__ (pip --no-compile) and nothing may write one; the
            # standard library keeps its own compiled files, as Lambda's runtime does.
            {**bundle_env, "PYTHONDONTWRITEBYTECODE": "1"},
        ),
        "import mlflow (skinny bundle, bytecode compiled)": (
            [base_python, "-S", "-c", "import mlflow"],
            {**bundle_env, "PYTHONPYCACHEPREFIX": str(compiled_cache)},
        ),
    }
    try:
        for argv, env in cases.values():  # warm the OS file cache and the compiled bytecode cache
            _time_import(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, (argv, env) in cases.items():
                samples[name].append(_time_import(argv, env))
    finally:
        shutil.rmtree(compiled_cache, ignore_errors=True)
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
    emit_result({"name": "cold_start", "bundle": bundle_size_mb(), "imports": import_times(args.repeats)})


if __name__ == "__main__":
    main()
