"""A job's per-model summary from its result lines: the table `status`, summary.json and the parent run show."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bedrock_pipeline.domain import ResultLine
from bedrock_pipeline.pricing import PriceTable


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
    # What the same tokens cost on demand (standard tier): the saving of a batch job is the difference.
    # None without a price table, or for a model it does not price.
    on_demand_cost_usd: float | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(lines: Iterable[ResultLine], prices: PriceTable | None = None) -> list[ModelSummary]:
    by_model: dict[str, list[ResultLine]] = {}
    for line in lines:
        by_model.setdefault(line.model_id, []).append(line)
    rows = []
    for model_id, model_lines in sorted(by_model.items()):
        ok = [line for line in model_lines if line.succeeded]
        latencies = [line.latency_ms for line in ok if line.latency_ms is not None]
        rows.append(
            ModelSummary(
                model_id=model_id,
                records=len(model_lines),
                succeeded=len(ok),
                failed=len(model_lines) - len(ok),
                input_tokens=sum(int(line.usage.get("inputTokens", 0)) for line in ok),
                output_tokens=sum(int(line.usage.get("outputTokens", 0)) for line in ok),
                cost_usd=round(sum(line.cost_usd or 0.0 for line in ok), 10),
                p50_latency_ms=percentile(latencies, 50),
                p95_latency_ms=percentile(latencies, 95),
                on_demand_cost_usd=_on_demand_cost(prices, model_id, ok),
            )
        )
    return rows


def _on_demand_cost(prices: PriceTable | None, model_id: str, ok: list[ResultLine]) -> float | None:
    if prices is None:
        return None
    # An application inference profile's line is priced as the model it resolved to, as its call was.
    costs = [prices.cost(line.resolved_model_id or model_id, line.usage) for line in ok]
    if any(cost is None for cost in costs):
        return None
    return round(sum(cost.total_usd for cost in costs if cost is not None), 10)


JobStatus = Literal["finished", "failed", "rejected"]


@dataclass(frozen=True)
class JobVerdict:
    """How a finished job ended, in one word and why: what `status`, summary.json and the parent run say."""

    status: JobStatus
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def job_verdict(lines: Iterable[ResultLine], rejected_reason: str | None) -> JobVerdict:
    """`rejected`: nothing ran (the file was refused); `failed`: every call failed; `finished` otherwise
    (some calls may have failed: the totals say how many)."""
    if rejected_reason:
        return JobVerdict("rejected", rejected_reason)
    lines = list(lines)
    if not lines:
        return JobVerdict("rejected", "no valid record to run")
    if any(line.succeeded for line in lines):
        return JobVerdict("finished")
    first = next((line.outcome.error for line in lines if line.outcome.error is not None), None)
    detail = f"; first: {first.code}: {first.message}" if first is not None else ""
    return JobVerdict("failed", f"every call failed ({len(lines)}){detail}")


def summary_document(
    job_id: str,
    rows: list[ModelSummary],
    rejected_lines: int,
    *,
    verdict: JobVerdict = JobVerdict("finished"),
    retries: int = 0,
) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "status": verdict.status,
        "reason": verdict.reason,
        "retries": retries,
        "rejectedLines": rejected_lines,
        "models": [asdict(row) for row in rows],
        "totals": {
            "records": sum(r.records for r in rows),
            "succeeded": sum(r.succeeded for r in rows),
            "failed": sum(r.failed for r in rows),
            "cost_usd": round(sum(r.cost_usd for r in rows), 10),
            **_on_demand_totals(rows),
        },
    }


def _on_demand_totals(rows: list[ModelSummary]) -> dict[str, float]:
    """The on-demand cost of the job's tokens and what running as it ran saved (batch: about half)."""
    if not rows or any(r.on_demand_cost_usd is None for r in rows):
        return {}
    on_demand = round(sum(r.on_demand_cost_usd or 0.0 for r in rows), 10)
    return {
        "on_demand_cost_usd": on_demand,
        "saving_usd": round(on_demand - sum(r.cost_usd for r in rows), 10),
    }


def format_table(rows: list[ModelSummary]) -> str:
    """The per-model table; with an "on-demand USD" column when some model did not cost its on-demand
    price (a batch job: the saving next to what it would have cost)."""
    headers = ["model", "records", "ok", "failed", "in tok", "out tok", "cost USD", "p50 ms", "p95 ms"]
    compare = any(r.on_demand_cost_usd is not None and r.on_demand_cost_usd != r.cost_usd for r in rows)
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
            *(["-" if r.on_demand_cost_usd is None else f"{r.on_demand_cost_usd:.6f}"] if compare else []),
        ]
        for r in rows
    ]
    if compare:
        headers.append("on-demand USD")
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out.extend(fmt.format(*row) for row in body)
    return "\n".join(out)
