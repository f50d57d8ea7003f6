"""A package's ``__init__`` deferred to its first use: MLflow's AI gateway at cold start.

Entry 5 of the package's docstring. ``mlflow/__init__`` imports ``mlflow.gateway``, and ``mlflow.genai``'s
judges import its ``constants``; its ``__init__`` only re-exports two functions from
``mlflow.gateway.utils``, which imports fastapi (0.1 s) for one exception class. No handler calls the
gateway. With ``DeferredInitFinder`` on ``sys.meta_path`` the package is created (``__path__`` set, so
its submodules import as usual) and its ``__init__`` runs at the first lookup of a name the package
lacks (PEP 562's module ``__getattr__``). What differs until then: ``dir()`` of the package lacks those
names, and an ``__init__`` that fails (fastapi missing) would raise its ImportError at that lookup, even
under ``hasattr``, instead of leaving ``mlflow.gateway`` unset. The bundle ships fastapi
(tests/infra/test_bundle.py checks it); tests/unit/test_cold_start.py fails if an MLflow upgrade gives
the ``__init__`` any statement beyond binding names from its own submodules.

The finder defers an MLflow package only while ``private_paths_enabled()`` says the installed MLflow is
a verified one (asked when that package is imported, so a handler importing no MLflow never asks);
otherwise MLflow imports as it ships. Other packages named by a caller are deferred as asked.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bedrock_pipeline.mlflow_internals import private_paths_enabled

# MLflow packages whose __init__ only binds names a handler never uses.
DEFERRED_MLFLOW_INITS = ("mlflow.gateway",)


class _DeferredInitLoader(importlib.abc.Loader):
    """Creates the package (``__path__`` set, so its submodules import) and defers its ``__init__`` to the
    first lookup of a name it lacks (PEP 562's module ``__getattr__``)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        lock = threading.RLock()  # reentrant: the __init__ itself may look its own names up while running
        state = {"ran": False}
        loader = self._loader

        def __getattr__(name: str) -> Any:
            with lock:  # a second thread waits for the first one's __init__, as an import would make it
                if module.__dict__.get("__loader__") is not self:
                    state["ran"] = True  # importlib.reload ran the real __init__ (the finder is gone)
                    _forget(__getattr__)
                elif not state["ran"]:
                    state["ran"] = True  # before running: a lookup from inside the __init__ must not rerun it
                    try:
                        loader.exec_module(module)
                    except BaseException:
                        state["ran"] = False  # the next lookup raises the import's error again
                        raise
                    _forget(__getattr__)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

        def _forget(hook: Any) -> None:  # from now on the package is a plain module
            if module.__dict__.get("__getattr__") is hook:  # unless its __init__ defined its own
                del module.__dict__["__getattr__"]

        module.__dict__["__getattr__"] = __getattr__

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self._loader, name)


class DeferredInitFinder(importlib.abc.MetaPathFinder):
    """For ``sys.meta_path``: the named packages import with their ``__init__`` deferred (module doc)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        if fullname.partition(".")[0] == "mlflow" and not private_paths_enabled():
            return None  # an MLflow not verified here: import it as it ships
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not a package found on the path: import it as Python would
        spec.loader = _DeferredInitLoader(spec.loader)
        return spec
