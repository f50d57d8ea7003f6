"""The scorer registry: MLflow `@scorer` functions over each answer's trace and the row's expectations.

Deterministic scorers read what the runner recorded on the trace's root span (the Converse output, its
`usage` and `metrics.latencyMs`); the judge asks a Bedrock model through the same gateway as the runner.
Each returns an MLflow `Feedback`, so `mlflow.genai.evaluate` attaches it to the trace and aggregates it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback, Trace
from mlflow.genai.scorers import Scorer, scorer

from bedrock_pipeline.evaluation.job import EvaluationJob
from bedrock_pipeline.ports import BedrockCallError, ModelGateway
from bedrock_pipeline.pricing import PriceTable

EXPECTED_KEYS = ("expected_response", "expected_answer", "expected")
JUDGE_MAX_TOKENS = 200
JUDGE_SYSTEM = (
    "You are an impartial evaluation judge. You compare a candidate answer with the expected answer "
    "to a question and decide whether the candidate is correct."
)
JUDGE_TEMPLATE = (
    "[QUESTION]\n{question}\n\n[EXPECTED ANSWER]\n{expected}\n\n[CANDIDATE ANSWER]\n{candidate}\n\n"
    "Is the candidate answer correct, i.e. does it state the expected answer without contradicting it? "
    "Reply with exactly two lines:\nVERDICT: yes or no\nREASON: one sentence"
)
_VERDICT = re.compile(r"VERDICT:\s*(yes|no)\b", re.IGNORECASE)
_REASON = re.compile(r"REASON:\s*(.+)", re.IGNORECASE)


def expected_text(expectations: dict[str, Any] | None) -> str | None:
    for key in EXPECTED_KEYS:
        value = (expectations or {}).get(key)
        if value is not None:
            return str(value)
    return None


def normalise(text: str) -> str:
    """Case, surrounding whitespace and trailing punctuation do not make an answer wrong."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".!").strip().casefold()


def root_call(trace: Trace | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, outputs) of the runner's root span: the Converse request and its output."""
    if trace is None:
        return {}, {}
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    if root is None:
        return {}, {}
    return dict(root.inputs or {}), dict(root.outputs or {})


def _no_expectation(name: str) -> Feedback:
    return Feedback(name=name, error="the row has no expectations.expected_response")


@scorer(name="exact_match")
def exact_match(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    expected = expected_text(expectations)
    if expected is None:
        return _no_expectation("exact_match")
    return Feedback(name="exact_match", value=normalise(str(outputs or "")) == normalise(expected))


@scorer(name="contains_match")
def contains_match(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    expected = expected_text(expectations)
    if expected is None:
        return _no_expectation("contains_match")
    return Feedback(name="contains_match", value=normalise(expected) in normalise(str(outputs or "")))


def latency_scorer(limit_ms: float) -> Scorer:
    @scorer(name="latency")
    def latency(trace: Trace) -> Feedback:
        _, outputs = root_call(trace)
        latency_ms = (outputs.get("metrics") or {}).get("latencyMs")
        if latency_ms is None:
            return Feedback(name="latency", value=False, rationale="no answer, so no latency")
        return Feedback(
            name="latency",
            value=float(latency_ms) <= limit_ms,
            rationale=f"{float(latency_ms):.0f} ms against a limit of {limit_ms:.0f} ms",
        )

    return latency


def cost_scorer(limit_usd: float, prices: PriceTable) -> Scorer:
    @scorer(name="cost")
    def cost(trace: Trace) -> Feedback:
        inputs, outputs = root_call(trace)
        usage = outputs.get("usage")
        if not usage:
            return Feedback(name="cost", value=False, rationale="no answer, so no usage")
        priced = prices.cost(str(inputs.get("modelId", "")), usage)
        if priced is None:
            return Feedback(name="cost", error=f"no price for model {inputs.get('modelId')!r}")
        return Feedback(
            name="cost",
            value=priced.total_usd <= limit_usd,
            rationale=f"{priced.total_usd:.6f} USD against a limit of {limit_usd:.6f} USD",
        )

    return cost


@dataclass
class JudgeSpend:
    """What the judge's own calls cost (they count against the job's budget too)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, usage: dict[str, int], cost_usd: float | None) -> None:
        with self._lock:
            self.calls += 1
            self.input_tokens += usage.get("inputTokens", 0)
            self.output_tokens += usage.get("outputTokens", 0)
            self.cost_usd += cost_usd or 0.0

    def merge(self, other: JudgeSpend) -> None:
        with self._lock:
            self.calls += other.calls
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.cost_usd += other.cost_usd


def judge_request(question: str, expected: str, candidate: str) -> dict[str, Any]:
    """The Converse request the judge receives (also what the pre-flight estimate counts)."""
    prompt = JUDGE_TEMPLATE.format(question=question, expected=expected, candidate=candidate)
    return {
        "system": [{"text": JUDGE_SYSTEM}],
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": JUDGE_MAX_TOKENS, "temperature": 0.0},
    }


def correctness_judge(
    judge_model: str, gateway: ModelGateway, prices: PriceTable, spend: JudgeSpend
) -> Scorer:
    source = AssessmentSource(source_type=AssessmentSourceType.LLM_JUDGE, source_id=judge_model)

    @scorer(name="correctness_judge")
    def judge(inputs: dict[str, Any], outputs: Any, expectations: dict[str, Any]) -> Feedback:
        expected = expected_text(expectations)
        if expected is None:
            return Feedback(name="correctness_judge", source=source, error="no expected_response")
        question = next((str(v) for v in (inputs or {}).values() if isinstance(v, str)), "")
        try:
            reply = gateway.invoke(
                judge_model, judge_request(question, expected, str(outputs or "")), stream=False
            )
        except BedrockCallError as exc:
            return Feedback(name="correctness_judge", source=source, error=f"judge call failed: {exc}")
        priced = prices.cost(judge_model, reply.usage)
        spend.add(reply.usage, priced.total_usd if priced else None)
        verdict = _VERDICT.search(reply.text)
        if verdict is None:
            return Feedback(
                name="correctness_judge",
                source=source,
                error=f"no VERDICT in judge reply: {reply.text[:200]!r}",
            )
        reason = _REASON.search(reply.text)
        return Feedback(
            name="correctness_judge",
            value=verdict.group(1).lower() == "yes",
            rationale=reason.group(1).strip() if reason else reply.text[:500],
            source=source,
        )

    return judge


ScorerFactory = Callable[[EvaluationJob], Scorer]


def build_scorers(
    job: EvaluationJob, *, gateway: ModelGateway, prices: PriceTable, spend: JudgeSpend
) -> list[Scorer]:
    """The job's scorers, in the order it names them (names come from a fixed registry)."""
    registry: dict[str, Callable[[], Scorer]] = {
        "exact_match": lambda: exact_match,
        "contains_match": lambda: contains_match,
        "latency": lambda: latency_scorer(job.limits.latency_ms),
        "cost": lambda: cost_scorer(job.limits.cost_usd, prices),
        "correctness_judge": lambda: correctness_judge(str(job.judge_model), gateway, prices, spend),
    }
    return [registry[name]() for name in job.scorers]
