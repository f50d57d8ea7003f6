"""Ports and paths of the local stack. Every value can be overridden by an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"  # the local stack never listens beyond loopback
REGION = "us-east-1"
# The service role the local stack's ingest names in its batch jobs (the emulator checks its form, as
# Bedrock does; moto has no IAM to trust it).
LOCAL_BATCH_ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-batch-inference"


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class LocalStackConfig:
    moto_port: int = field(default_factory=lambda: _int_env("LOCAL_MOTO_PORT", 4566))
    mlflow_port: int = field(default_factory=lambda: _int_env("LOCAL_MLFLOW_PORT", 5050))
    emulator_port: int = field(default_factory=lambda: _int_env("LOCAL_BEDROCK_PORT", 4010))
    state_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("LOCAL_STATE_DIR", REPO_ROOT / ".local"))
    )
    # SQLite by default; a postgresql:// URI (e.g. the machine's 127.0.0.1:5432) when configured.
    mlflow_backend_uri: str | None = field(default_factory=lambda: os.environ.get("LOCAL_MLFLOW_BACKEND_URI"))

    @property
    def moto_url(self) -> str:
        return f"http://{LOOPBACK}:{self.moto_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.mlflow_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://{LOOPBACK}:{self.emulator_port}"

    @property
    def local_store_uri(self) -> str:
        """The MLflow backend store the stack writes and leaves on disk (what `make ui` opens)."""
        return self.mlflow_backend_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
