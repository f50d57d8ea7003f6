"""Pre-flight cost of an evaluation job: its answers plus, with a judge scorer, the judge's calls.

Offline and an upper bound, like ``bedrock_pipeline.estimate`` which it builds on: answers are
counted at their max_tokens, and each judge prompt carries the longest answer a model could give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bedrock_pipeline.domain import WorkItem
from bedrock_pipeline.estimate import Estimate, estimate_items
from bedrock_pipeline.evaluation.job import JUDGE_SCORERS, DatasetRow, EvaluationJob
from bedrock_pipeline.evaluation.scorers import expected_text, judge_request
from bedrock_pipeline.pricing import PriceTable

# Placeholder answer for the judge's pre-flight estimate: the candidate is at most max_tokens long.
_CANDIDATE_TOKEN = " word"


@dataclass
class EvaluationEstimate:
    answers: Estimate
    judge: Estimate

    @property
    def cost_usd(self) -> float:
        return round(self.answers.cost_usd + self.judge.cost_usd, 10)

    @property
    def unpriced(self) -> list[str]:
        models = {**self.answers.models, **self.judge.models}
        return sorted(m for m, e in models.items() if not e.priced)


def estimate_evaluation(
    job: EvaluationJob, rows: Sequence[DatasetRow], items: Sequence[WorkItem], prices: PriceTable
) -> EvaluationEstimate:
    """Answers (tiktoken input, max_tokens output) plus, with a judge, one judge call per answer."""
    judge_items: list[WorkItem] = []  # the judge's calls, as the work items they would be
    if JUDGE_SCORERS.intersection(job.scorers) and job.judge_model:
        worst_answer = _CANDIDATE_TOKEN * job.inference.max_tokens
        for row in rows:
            request = judge_request(row.prompt, expected_text(row.expectations) or "", worst_answer)
            judge = WorkItem(
                record_id=row.record_id,
                line_number=row.line_number,
                model_id=job.judge_model,
                request=request,
            )
            judge_items += [judge] * len(job.models)
    return EvaluationEstimate(estimate_items(items, prices), estimate_items(judge_items, prices))
