"""HTTP client for the emulator's admin endpoints, for processes that did not start the emulator."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


class EmulatorAdmin:
    """``EmulatorAdmin("http://127.0.0.1:4010").configure("amazon.nova-lite-v1:0", throttle_rate=0.2)``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def is_healthy(self) -> bool:
        try:
            return self.health().get("status") == "ok"
        except OSError:
            return False

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def configure(self, model: str = "*", **settings: Any) -> dict[str, Any]:
        """Merge settings for one model key ("*" for all); returns the whole config."""
        return self._call("POST", "config", {"models": {model: settings}})

    def configure_batch(self, **settings: Any) -> dict[str, Any]:
        """Merge batch-job settings (delays, quotas, faults, aws_endpoint); returns the whole config."""
        return self._call("POST", "config", {"batch": settings})

    def update_config(self, update: dict[str, Any]) -> dict[str, Any]:
        """POST a full update: ``{"models": {id: settings, ...}, "seed": n}`` (both optional)."""
        return self._call("POST", "config", update)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        return self._call("POST", "reset", {} if seed is None else {"seed": seed})
