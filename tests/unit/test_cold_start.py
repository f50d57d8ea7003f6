"""handlers.cold_start: imports without GC passes, and a package's __init__ deferred to its first use.

The deferral is checked on a small package written here (it counts its __init__ runs), then on the
real one: a fresh interpreter imports the runner handler as Lambda does, without fastapi, and MLflow's
gateway still answers afterwards. The deployed bundle's import is checked in tests/infra/test_bundle.py.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bedrock_pipeline import mlflow_internals
from bedrock_pipeline.mlflow_internals.deferred_init import DeferredInitFinder
from handlers.cold_start import DEFERRED_PACKAGE_INITS, lean_imports

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY = "toy_deferred"


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """toy_deferred/__init__.py counts its runs (in toy_counter) and re-exports toy_deferred.sub.VALUE."""
    package = tmp_path / TOY
    package.mkdir()
    (tmp_path / "toy_counter.py").write_text("runs = 0\n")
    (package / "sub.py").write_text("VALUE = 7\n")
    (package / "__init__.py").write_text(
        "import os, time\nimport toy_counter\n"
        "toy_counter.runs += 1\n"
        "time.sleep(float(os.environ.get('TOY_INIT_SECONDS', '0')))\n"
        "if os.environ.get('TOY_INIT_FAILS'):\n    raise ImportError('toy init failed')\n"
        "from toy_deferred.sub import VALUE as EXPORTED\n"
        "import toy_deferred as _self\n"
        "assert not hasattr(_self, 'nope')  # a lookup from inside the __init__: no rerun, no deadlock\n"
    )
    monkeypatch.syspath_prepend(tmp_path)  # pytest's own fixture: the toy importable for this test only
    yield package
    for name in [n for n in sys.modules if n in ("toy_counter", TOY) or n.startswith(f"{TOY}.")]:
        del sys.modules[name]


@pytest.fixture
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # what a block froze here is this test process's, not a handler's
    (gc.enable if enabled else gc.disable)()


def test_a_deferred_package_imports_its_submodules_and_runs_its_init_once_on_first_use(
    toy_package: Path, restore_gc: None
) -> None:
    with lean_imports((TOY,)):
        import toy_deferred.sub

    import toy_counter

    assert toy_deferred.sub.VALUE == 7
    assert toy_counter.runs == 0  # the submodule imported without the package's __init__
    first_use = threading.Thread(target=lambda: toy_deferred.EXPORTED, daemon=True)
    first_use.start()  # a name the __init__ binds: it runs now (in a thread, so a deadlock fails the test)
    first_use.join(timeout=10)
    assert not first_use.is_alive()
    assert toy_deferred.EXPORTED == 7
    assert toy_counter.runs == 1
    assert "__getattr__" not in vars(toy_deferred)  # after the run the package is a plain module
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = toy_deferred.missing


def test_a_deferred_package_reloaded_before_its_first_use_runs_its_init_once(
    toy_package: Path, restore_gc: None
) -> None:
    with lean_imports((TOY,)):
        import toy_deferred

    importlib.reload(toy_deferred)  # the finder is gone: the real loader runs the __init__
    import toy_counter

    assert toy_deferred.EXPORTED == 7
    with pytest.raises(AttributeError):
        _ = toy_deferred.missing
    assert toy_counter.runs == 1


def test_a_deferred_init_that_fails_raises_its_own_error_on_each_use(
    toy_package: Path, restore_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_INIT_FAILS", "1")
    with lean_imports((TOY,)):
        import toy_deferred

    for _ in range(2):  # not an AttributeError the second time: the import's error, as Python would
        with pytest.raises(ImportError, match="toy init failed"):
            _ = toy_deferred.EXPORTED


def test_threads_that_first_use_a_deferred_package_together_all_wait_for_its_one_init(
    toy_package: Path, restore_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_INIT_SECONDS", "0.3")  # long enough for every thread to arrive mid-init
    with lean_imports((TOY,)):
        import toy_deferred

    start = threading.Barrier(8)
    answers: list[object] = []

    def use() -> None:
        start.wait()
        try:
            answers.append(toy_deferred.EXPORTED)
        except Exception as exc:
            answers.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    import toy_counter

    assert answers == [7] * 8
    assert toy_counter.runs == 1


def test_imports_run_without_gc_and_are_frozen_after_unless_the_caller_had_gc_off(restore_gc: None) -> None:
    gc.enable()
    gc.unfreeze()
    with lean_imports(()):
        assert not gc.isenabled()
        with lean_imports(()):  # nested: the outer block owns the collector
            pass
        assert not gc.isenabled()
        held = [object() for _ in range(10)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(held)

    gc.unfreeze()
    with pytest.raises(RuntimeError), lean_imports(()):
        raise RuntimeError("an import failed")
    assert gc.isenabled()  # restored whatever happens

    gc.unfreeze()
    gc.disable()
    with lean_imports(()):
        pass
    assert not gc.isenabled() and gc.get_freeze_count() == 0  # the caller's choice is left alone


def test_the_runner_handler_imports_without_fastapi_and_mlflow_gateway_still_answers() -> None:
    """A fresh interpreter, as a cold start: the handler's import leaves out fastapi, and MLflow's gateway
    and genai (which imports it) work when asked for afterwards."""
    script = (
        "import gc, json, sys\n"
        "import handlers.runner\n"
        "after_import = {'fastapi': 'fastapi' in sys.modules, 'gc': gc.isenabled(), 'frozen': gc.get_freeze_count()}\n"
        "import mlflow\n"
        "uri = mlflow.gateway.get_gateway_uri.__name__\n"
        "from mlflow.genai.judges.adapters import litellm_adapter\n"
        "print(json.dumps({**after_import, 'uri': uri, 'evaluate': callable(mlflow.genai.evaluate),"
        " 'fastapi_after_use': 'fastapi' in sys.modules}))\n"
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["fastapi"] is False
    assert seen["gc"] is True and seen["frozen"] > 10_000
    assert seen["uri"] == "get_gateway_uri" and seen["evaluate"] is True
    assert seen["fastapi_after_use"] is True


def test_the_deferred_mlflow_packages_still_only_bind_names_in_their_init() -> None:
    """The deferral is safe only while the package's __init__ has no effect beyond binding names from its
    own submodules and __all__: an MLflow upgrade that adds one makes this fail, to be looked at first."""
    for name in DEFERRED_PACKAGE_INITS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        tree = ast.parse(Path(spec.origin).read_text())
        for statement in tree.body:
            is_docstring = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            binds_all = isinstance(statement, ast.Assign) and [
                getattr(t, "id", None) for t in statement.targets
            ] == ["__all__"]
            from_own_submodule = (
                isinstance(statement, ast.ImportFrom)
                and statement.level == 0
                and (statement.module or "").startswith(f"{name}.")
            )
            assert from_own_submodule or is_docstring or binds_all, (
                f"{name}/__init__.py line {statement.lineno}: {ast.unparse(statement)[:80]}"
            )


def test_on_an_unverified_mlflow_its_packages_import_as_shipped_and_others_stay_deferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The finder asks the MLflow adapter's version guard for MLflow's packages only."""
    finder = DeferredInitFinder((*DEFERRED_PACKAGE_INITS, "json"))
    mlflow_spec = importlib.util.find_spec("mlflow")
    assert mlflow_spec is not None
    mlflow_path = mlflow_spec.submodule_search_locations  # as the import system asks for a submodule
    gateway_spec = finder.find_spec("mlflow.gateway", mlflow_path)
    assert gateway_spec is not None and type(gateway_spec.loader).__name__ == "_DeferredInitLoader"
    monkeypatch.setattr(mlflow_internals, "installed_mlflow_version", lambda: "0.0.1")
    mlflow_internals.private_paths_enabled.cache_clear()
    try:
        assert finder.find_spec("mlflow.gateway", mlflow_path) is None  # the next finder: MLflow as it ships
        json_spec = finder.find_spec("json", None)  # not MLflow's: deferred as the caller asked
        assert json_spec is not None and type(json_spec.loader).__name__ == "_DeferredInitLoader"
    finally:
        mlflow_internals.private_paths_enabled.cache_clear()
