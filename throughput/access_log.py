"""Tracking requests counted from the MLflow server's access log (uvicorn writes one line per request).

Reading the log costs the server nothing, unlike a proxy in front of it (which would also take CPU
from the two cores the server runs on). Requests are split into three kinds: trace export (StartTrace,
span posts, trace artifacts), run requests (everything else under the tracking API) and ignored ones
(health checks).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# 2026/11/28 13:22:44 INFO:     127.0.0.1:32918 - "GET /api/2.0/mlflow/experiments/search?x=1 HTTP/1.1" 200 OK
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def classify(path: str) -> str:
    """'trace', 'run' or 'ignored' for one request path."""
    bare = path.split("?", 1)[0]
    if bare in ("/health", "/version") or not bare.startswith(("/api/", "/ajax-api/", "/v1/")):
        return "ignored"
    # Trace export: StartTrace/EndTrace (v2), CreateTrace (v3), OTLP /v1/traces, trace artifacts.
    if "/traces" in bare or bare.startswith("/v1/"):
        return "trace"
    return "run"


@dataclass
class RequestCounts:
    """Requests by kind, and run requests by endpoint (``POST runs/create``), over a window."""

    trace: int = 0
    run: int = 0
    errors: int = 0  # responses with status >= 400
    endpoints: Counter[str] = field(default_factory=Counter)

    def add(self, method: str, path: str, status: int) -> None:
        kind = classify(path)
        if kind == "ignored":
            return
        if status >= 400:
            self.errors += 1
        if kind == "trace":
            self.trace += 1
        else:
            self.run += 1
        endpoint = re.sub(r"^/(ajax-)?api/\d\.\d/mlflow(-artifacts)?/", "", path.split("?", 1)[0])
        # One line per endpoint, not per object: trace and run ids, experiment numbers.
        endpoint = re.sub(r"tr-[0-9a-f]+", "{trace}", endpoint)
        endpoint = re.sub(r"/[0-9a-f]{32}/", "/{run}/", endpoint)
        endpoint = re.sub(r"/\d+/", "/{id}/", endpoint)
        self.endpoints[f"{method} {endpoint}"] += 1

    def per(self, records: int) -> dict[str, float]:
        return {"run": self.run / records, "trace": self.trace / records}

    def summary(self, top: int = 12) -> dict[str, Any]:
        """What a phase reports: requests by kind and its busiest endpoints."""
        return {
            "requests": {"run": self.run, "trace": self.trace, "errors": self.errors},
            "endpoints": dict(self.endpoints.most_common(top)),
        }


def count_lines(lines: list[str]) -> RequestCounts:
    counts = RequestCounts()
    for line in lines:
        match = _LINE.search(line)
        if match:
            counts.add(match["method"], match["path"], int(match["status"]))
    return counts


class AccessLog:
    """``mark()`` before the measured part, ``since(mark)`` after: the requests in between."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, offset: int) -> RequestCounts:
        return self.between(offset, None)

    def between(self, start: int, end: int | None) -> RequestCounts:
        """The requests logged from mark ``start`` up to mark ``end`` (None: up to now)."""
        with self.path.open("rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(end - start)
        return count_lines(data.decode("utf-8", errors="replace").splitlines())

    def settled_since(self, offset: int) -> RequestCounts:
        """``since``, after a moment: the server writes its access line just after answering."""
        time.sleep(0.5)
        return self.since(offset)
