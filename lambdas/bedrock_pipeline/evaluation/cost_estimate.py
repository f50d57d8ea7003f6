"""Pre-flight cost of an evaluation job: its answers plus, with a judge scorer, the judge's calls.

Offline and an upper bound, like ``bedrock_pipeline.estimate`` which it builds on: answers are
counted at their max_tokens, and each judge prompt carries the longest answer a model could give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bedrock_pipeline.estimate import Estimate, estimate_items
from bedrock_pipeline.evaluation.job import JUDGE_SCORERS, DatasetRow, EvaluationJob
from bedrock_pipeline.evaluation.scorers import expected_text, judge_request
from bedrock_pipeline.jobs import WorkMessage
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


@dataclass(frozen=True)
class _JudgeItem:
    model_id: str
    request: dict[str, Any]


def estimate_evaluation(
    job: EvaluationJob, rows: Sequence[DatasetRow], messages: Sequence[WorkMessage], prices: PriceTable
) -> EvaluationEstimate:
    """Answers (tiktoken input, max_tokens output) plus, with a judge, one judge call per answer."""
    judge_items: list[_JudgeItem] = []
    if JUDGE_SCORERS.intersection(job.scorers) and job.judge_model:
        worst_answer = _CANDIDATE_TOKEN * job.inference.max_tokens
        for row in rows:
            request = judge_request(row.prompt, expected_text(row.expectations) or "", worst_answer)
            judge_items += [_JudgeItem(job.judge_model, request)] * len(job.models)
    return EvaluationEstimate(estimate_items(messages, prices), estimate_items(judge_items, prices))
