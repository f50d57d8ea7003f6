"""A handler module's imports, made cheaper for Lambda's cold start (docs/PERFORMANCE.md, "Cold start").

``with lean_imports():`` around a handler's imports does two things:

- **No garbage collection while importing.** Importing the runner allocates ~120k objects, almost
  none of them garbage (~1,250 in cycles, 0.6 MB, which the freeze keeps), yet the collector ran
  283 times over them (two full passes): 0.13 s of a 0.93 s import. At the end the imported objects
  are frozen (``gc.freeze``: moved to a generation no later collection walks), so the work is not
  merely moved to the first invocation.
- **MLflow's AI gateway package runs its ``__init__`` on first use** (0.1 s of fastapi no handler needs).
  That knows MLflow's package layout, so it lives in the MLflow adapter
  (``bedrock_pipeline.mlflow_internals.deferred_init``, which says what differs until the first use);
  on an MLflow version the adapter was not verified against, MLflow imports as it ships.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bedrock_pipeline.mlflow_internals.deferred_init import DEFERRED_MLFLOW_INITS, DeferredInitFinder

# Packages whose __init__ waits for the first use of one of its names (see the adapter's module).
DEFERRED_PACKAGE_INITS = DEFERRED_MLFLOW_INITS


@contextmanager
def lean_imports(deferred_package_inits: Sequence[str] = DEFERRED_PACKAGE_INITS) -> Iterator[None]:
    """Imports inside the block run without the garbage collector and with the named packages' __init__
    deferred; the caller's GC state is restored (and the imports frozen) whatever happens."""
    # GC and sys.meta_path are process-wide: blocks overlapping in two threads (the local pump's pollers
    # import handlers concurrently) may end GC's pause early, never leave it off.
    collecting = gc.isenabled()
    finder = DeferredInitFinder(deferred_package_inits)
    sys.meta_path.insert(0, finder)
    gc.disable()
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        if collecting:  # the outermost block owns the collector: nested ones leave it to it
            gc.freeze()
            gc.enable()
