"""A handler module's imports, made cheaper for Lambda's cold start (docs/PERFORMANCE.md, "Cold start").

``with lean_imports():`` around a handler's imports does two things:

- **No garbage collection while importing.** Importing the runner allocates ~120k objects, almost
  none of them garbage (~1,250 in cycles, 0.6 MB, which the freeze keeps), yet the collector ran
  283 times over them (two full passes): 0.13 s of a 0.93 s import. At the end the imported objects
  are frozen (``gc.freeze``: moved to a generation no later collection walks), so the work is not
  merely moved to the first invocation.
- **MLflow's AI gateway package runs its ``__init__`` on first use.** ``mlflow/__init__`` imports
  ``mlflow.gateway``, and ``mlflow.genai``'s judges import its ``constants``; its ``__init__`` only
  re-exports two functions from ``mlflow.gateway.utils``, which imports fastapi (0.1 s) for one
  exception class. No handler calls the gateway. Its submodules import as usual; the first lookup
  of a name the package lacks runs the ``__init__`` then. What differs until then: ``dir()`` of the
  package lacks those names, and an ``__init__`` that fails (fastapi missing) would raise its
  ImportError at that lookup, even under ``hasattr``, instead of leaving ``mlflow.gateway`` unset.
  The bundle ships fastapi (tests/infra/test_bundle.py checks it).
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# Packages whose __init__ only binds names a handler never uses (a test checks mlflow.gateway's still does).
DEFERRED_PACKAGE_INITS = ("mlflow.gateway",)


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


class _DeferredInitFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not a package found on the path: import it as Python would
        spec.loader = _DeferredInitLoader(spec.loader)
        return spec


@contextmanager
def lean_imports(deferred_package_inits: Sequence[str] = DEFERRED_PACKAGE_INITS) -> Iterator[None]:
    """Imports inside the block run without the garbage collector and with the named packages' __init__
    deferred; the caller's GC state is restored (and the imports frozen) whatever happens."""
    # GC and sys.meta_path are process-wide: blocks overlapping in two threads (the local pump's pollers
    # import handlers concurrently) may end GC's pause early, never leave it off.
    collecting = gc.isenabled()
    finder = _DeferredInitFinder(deferred_package_inits)
    sys.meta_path.insert(0, finder)
    gc.disable()
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        if collecting:  # the outermost block owns the collector: nested ones leave it to it
            gc.freeze()
            gc.enable()
