"""Results under results/<job id>/ in the prompt bucket, and the per-model summary.

Each item writes its own object under a key derived from its identity, so a retried item overwrites
rather than duplicates; the finalizer merges them into one results.jsonl in line order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from bedrock_pipeline import settings
from bedrock_pipeline.ledger import item_digest

RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"
SUMMARY_FILE = "summary.json"


def results_prefix(job_id: str) -> str:
    return f"{settings.RESULTS_PREFIX}{job_id}/"


def to_jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False, default=str) + "\n" for line in lines).encode()


class ResultStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_item_result(self, job_id: str, item_key: str, line: dict[str, Any]) -> str:
        key = f"{results_prefix(job_id)}items/{item_digest(item_key)}.json"
        self._put(key, json.dumps(line, ensure_ascii=False, default=str).encode(), "application/json")
        return key

    def put_errors(self, job_id: str, errors: list[dict[str, Any]]) -> str:
        key = results_prefix(job_id) + ERRORS_FILE
        self._put(key, to_jsonl(errors), "application/x-ndjson")
        return key

    def item_results(self, job_id: str) -> list[dict[str, Any]]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{results_prefix(job_id)}items/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))

        def fetch(key: str) -> dict[str, Any]:
            return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

        with ThreadPoolExecutor(max_workers=16) as pool:
            lines = list(pool.map(fetch, keys))
        return sorted(lines, key=lambda line: (line.get("lineNumber", 0), line.get("modelId", "")))

    def put_results(self, job_id: str, lines: list[dict[str, Any]]) -> str:
        key = results_prefix(job_id) + RESULTS_FILE
        self._put(key, to_jsonl(lines), "application/x-ndjson")
        return key

    def put_summary(self, job_id: str, summary: dict[str, Any]) -> str:
        key = results_prefix(job_id) + SUMMARY_FILE
        self._put(key, json.dumps(summary, indent=2).encode(), "application/json")
        return key

    def get_summary(self, job_id: str) -> dict[str, Any] | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=results_prefix(job_id) + SUMMARY_FILE)["Body"]
        except self._s3.exceptions.NoSuchKey:
            return None
        return json.loads(body.read())


@dataclass(frozen=True)
class ModelSummary:
    model_id: str
    records: int
    succeeded: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(lines: Iterable[dict[str, Any]]) -> list[ModelSummary]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_model.setdefault(line.get("modelId", "?"), []).append(line)
    rows = []
    for model_id, model_lines in sorted(by_model.items()):
        ok = [line for line in model_lines if "error" not in line]
        latencies = [float(line["latencyMs"]) for line in ok if line.get("latencyMs") is not None]
        rows.append(
            ModelSummary(
                model_id=model_id,
                records=len(model_lines),
                succeeded=len(ok),
                failed=len(model_lines) - len(ok),
                input_tokens=sum(int(line.get("usage", {}).get("inputTokens", 0)) for line in ok),
                output_tokens=sum(int(line.get("usage", {}).get("outputTokens", 0)) for line in ok),
                cost_usd=round(sum(float(line.get("costUsd") or 0.0) for line in ok), 10),
                p50_latency_ms=percentile(latencies, 50),
                p95_latency_ms=percentile(latencies, 95),
            )
        )
    return rows


def summary_document(job_id: str, rows: list[ModelSummary], rejected_lines: int) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "rejectedLines": rejected_lines,
        "models": [asdict(row) for row in rows],
        "totals": {
            "records": sum(r.records for r in rows),
            "succeeded": sum(r.succeeded for r in rows),
            "failed": sum(r.failed for r in rows),
            "cost_usd": round(sum(r.cost_usd for r in rows), 10),
        },
    }


def format_table(rows: list[ModelSummary]) -> str:
    headers = ["model", "records", "ok", "failed", "in tok", "out tok", "cost USD", "p50 ms", "p95 ms"]
    body = [
        [
            r.model_id,
            str(r.records),
            str(r.succeeded),
            str(r.failed),
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
            f"{r.cost_usd:.6f}",
            "-" if r.p50_latency_ms is None else f"{r.p50_latency_ms:.0f}",
            "-" if r.p95_latency_ms is None else f"{r.p95_latency_ms:.0f}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out.extend(fmt.format(*row) for row in body)
    return "\n".join(out)
