"""Compare the models of one job: a table (CSV and Markdown) and a chart (PNG), ranked by quality.

The primary metric is the judge's verdict when the job has a judge, else the first quality scorer,
else the share of answered rows; "by how much" is the gap to the best model in percentage points.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

QUALITY_ORDER = ("correctness_judge", "contains_match", "exact_match")


@dataclass
class ModelScore:
    model_id: str
    rows: int
    answered: int
    scores: dict[str, float] = field(default_factory=dict)  # scorer name -> mean in [0, 1]
    cost_usd: float = 0.0
    mean_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    eval_run_id: str = ""

    @property
    def answered_rate(self) -> float:
        return self.answered / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class Comparison:
    primary_metric: str
    ranked: list[ModelScore]

    @property
    def best(self) -> ModelScore:
        return self.ranked[0]

    def value(self, model: ModelScore) -> float:
        return (
            model.answered_rate
            if self.primary_metric == "answered"
            else model.scores.get(self.primary_metric, 0.0)
        )

    def margin_points(self) -> float:
        """Percentage points between the best model and the runner-up (0 with one model)."""
        if len(self.ranked) < 2:
            return 0.0
        return round(100 * (self.value(self.ranked[0]) - self.value(self.ranked[1])), 2)

    def columns(self) -> list[str]:
        names = sorted({name for m in self.ranked for name in m.scores}, key=_score_order)
        return [
            "rank",
            "model",
            *names,
            "answered",
            "cost_usd",
            "cost_per_correct_usd",
            "mean_latency_ms",
            "p95_latency_ms",
            "gap_points",
        ]

    def rows(self) -> list[dict[str, object]]:
        best = self.value(self.best)
        out: list[dict[str, object]] = []
        for rank, model in enumerate(self.ranked, start=1):
            correct = self.value(model) * model.rows
            out.append(
                {
                    "rank": rank,
                    "model": model.model_id,
                    **{name: round(v, 4) for name, v in model.scores.items()},
                    "answered": f"{model.answered}/{model.rows}",
                    "cost_usd": round(model.cost_usd, 6),
                    "cost_per_correct_usd": round(model.cost_usd / correct, 6) if correct else "",
                    "mean_latency_ms": round(model.mean_latency_ms, 1),
                    "p95_latency_ms": round(model.p95_latency_ms, 1),
                    "gap_points": round(100 * (best - self.value(model)), 2),
                }
            )
        return out

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return buffer.getvalue()

    def to_markdown(self) -> str:
        columns = self.columns()
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in self.rows()]
        verdict = (
            f"\nBest: **{self.best.model_id}** on `{self.primary_metric}` "
            f"({100 * self.value(self.best):.1f}%), {self.margin_points():.1f} points ahead of the next model.\n"
        )
        return "\n".join(lines) + "\n" + verdict

    def to_png(self) -> bytes | None:
        """A bar chart of the primary metric and cost per model; None where matplotlib is not installed."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # no display in a Lambda or a test
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        names = [m.model_id for m in self.ranked]
        figure, (quality, cost) = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2.2))
        quality.barh(names, [100 * self.value(m) for m in self.ranked], color="#2b7bba")
        quality.set_xlim(0, 100)
        quality.set_xlabel(f"{self.primary_metric} (%)")
        quality.invert_yaxis()
        cost.barh(names, [m.cost_usd for m in self.ranked], color="#e08a2b")
        cost.set_xlabel("cost (USD)")
        cost.set_yticks([])
        cost.invert_yaxis()
        figure.suptitle("Evaluation: quality and cost per model")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        return buffer.getvalue()


def _score_order(name: str) -> tuple[int, str]:
    return (QUALITY_ORDER.index(name) if name in QUALITY_ORDER else len(QUALITY_ORDER), name)


def compare(models: Sequence[ModelScore], scorer_names: Sequence[str]) -> Comparison:
    primary = next((name for name in QUALITY_ORDER if name in scorer_names), "answered")
    comparison = Comparison(primary, list(models))
    # Better quality first; at equal quality the cheaper model wins.
    ranked = sorted(models, key=lambda m: (-comparison.value(m), m.cost_usd, m.model_id))
    return Comparison(primary, ranked)


def scores_from_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """`mlflow.genai.evaluate` aggregates as "<scorer>/mean": keep the means by scorer name."""
    return {name[: -len("/mean")]: value for name, value in metrics.items() if name.endswith("/mean")}
