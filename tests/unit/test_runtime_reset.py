"""reset_core() cannot be undone by a build already in progress in another thread (the local pump)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from handlers import runtime


@pytest.fixture
def handler_environment() -> Iterator[None]:
    """The variables a cold start needs; the process environment as it was afterwards (a cold start
    also sets MLflow client defaults in it)."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "PROMPT_BUCKET": "prompts",
            "JOBS_TABLE": "jobs",
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        }
    )
    yield
    os.environ.clear()
    os.environ.update(saved)
    runtime.environment.cache_clear()


def test_a_reset_waits_for_a_build_in_progress_and_then_forgets_its_environment_too(
    handler_environment: None,
) -> None:
    runtime.environment.cache_clear()
    runtime.environment()  # cached, as a build in progress would have left it
    assert runtime.environment.cache_info().currsize == 1
    resetter = threading.Thread(target=runtime.reset_core)
    with runtime._BUILD_LOCK:  # a poller's build holds this while it reads the environment and builds
        resetter.start()
        resetter.join(timeout=0.5)
        assert resetter.is_alive()  # it waits: clearing now would be undone when the build stores
    resetter.join(timeout=30)
    assert not resetter.is_alive()
    assert runtime.environment.cache_info().currsize == 0  # the next build reads the environment anew
