"""Baseline and threshold rules of the scheduled benchmarks, the suite format and the per-model figures.

Pure functions, so these run without servers; Hypothesis explores the rules' properties.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from bedrock_pipeline.benchmark import (
    Expectation,
    RegressionThresholds,
    SuiteError,
    baseline_of,
    compute_figures,
    detect,
    load_suite,
    thresholds_from_env,
)
from bedrock_pipeline.benchmark.regression import DIRECTIONS, limit_for
from bedrock_pipeline.domain import CallError, CallOutcome, ModelResponse, ResultLine
from bedrock_pipeline.pricing import Cost

T = RegressionThresholds()
METRICS = tuple(DIRECTIONS)

rates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
latencies = st.floats(min_value=0.0, max_value=60_000.0, allow_nan=False)
costs = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@st.composite
def figures(draw: st.DrawFn) -> dict[str, float]:
    p50 = draw(latencies)
    return {
        "success_rate": draw(rates),
        "quality_score": draw(rates),
        "p50_latency_ms": p50,
        "p95_latency_ms": p50 + draw(latencies),
        "cost_per_100_prompts_usd": draw(costs),
    }


def _worse(metric: str, value: float, by: float) -> float:
    return value + by if DIRECTIONS[metric] == "higher_is_worse" else value - by


# --- properties ------------------------------------------------------------------------------------


@given(run=figures(), repeats=st.integers(min_value=1, max_value=8))
def test_an_unchanged_run_is_never_a_regression(run: dict[str, float], repeats: int) -> None:
    """Given previous runs with exactly this run's figures, when it is judged, then nothing regressed."""
    verdict = detect(run, [dict(run)] * repeats, T)
    assert verdict.status == "false" and verdict.regressions == ()


@given(base=figures(), current=figures(), repeats=st.integers(min_value=1, max_value=5))
def test_a_run_at_least_as_good_as_its_baseline_on_every_metric_never_regresses(
    base: dict[str, float], current: dict[str, float], repeats: int
) -> None:
    """Given a run no worse than its baseline on any metric, when judged, then no regression is found."""
    better = {m: (min if DIRECTIONS[m] == "higher_is_worse" else max)(base[m], current[m]) for m in METRICS}
    assert detect(better, [base] * repeats, T).regressions == ()


@given(base=figures(), metric=st.sampled_from(METRICS), extra=st.floats(min_value=0.0, max_value=1e4))
def test_regressions_are_monotonic(base: dict[str, float], metric: str, extra: float) -> None:
    """Given a metric value judged a regression, when the value gets worse still, then it stays one."""
    limit = limit_for(metric, base[metric], T)
    just_past = _worse(metric, limit, max(1e-6, abs(limit) * 1e-6))
    assume(0.0 <= just_past <= 1.0 or DIRECTIONS[metric] == "higher_is_worse")
    first = detect({**base, metric: just_past}, [base], T)
    worse = detect({**base, metric: _worse(metric, just_past, extra)}, [base], T)
    assert metric in {r.metric for r in first.regressions}
    assert metric in {r.metric for r in worse.regressions}


@given(
    typical=figures(),
    outlier=figures(),
    count=st.integers(min_value=2, max_value=4),
    position=st.integers(min_value=0, max_value=4),
)
def test_one_odd_run_neither_fakes_nor_hides_a_regression(
    typical: dict[str, float], outlier: dict[str, float], count: int, position: int
) -> None:
    """Given a baseline window where all runs but one agree, when the baseline is built, then it is the
    value the majority agree on (the median), whatever the odd run says."""
    history = [typical] * count
    history.insert(min(position, count), outlier)
    thresholds = RegressionThresholds(baseline_runs=count + 1)
    assert baseline_of(history, thresholds) == pytest.approx(typical)


@given(recent=figures(), old=figures(), n=st.integers(min_value=1, max_value=5))
def test_only_the_last_n_runs_make_the_baseline(
    recent: dict[str, float], old: dict[str, float], n: int
) -> None:
    """Given more previous runs than the window (newest first), when the baseline is built, then runs
    older than the window do not count."""
    thresholds = RegressionThresholds(baseline_runs=n)
    assert baseline_of([recent] * n + [old] * 7, thresholds) == pytest.approx(recent)


@given(run=figures(), fewer=st.integers(min_value=0, max_value=2))
def test_too_little_history_gives_no_verdict(run: dict[str, float], fewer: int) -> None:
    """Given fewer previous runs than min_baseline_runs, when judged, then the status says no-baseline
    and no regression is claimed, however bad the run."""
    thresholds = RegressionThresholds(min_baseline_runs=3)
    awful = {**run, "success_rate": 0.0, "quality_score": 0.0, "p95_latency_ms": 1e9}
    verdict = detect(awful, [run] * fewer, thresholds)
    assert verdict.status == "no-baseline" and verdict.regressions == () and verdict.baseline_runs == 0


@given(base_ms=st.floats(min_value=0.0, max_value=99.0), increase=st.floats(min_value=0.0, max_value=49.9))
def test_latency_noise_under_the_floor_is_not_a_regression(base_ms: float, increase: float) -> None:
    """Given a fast model (under 100 ms), when it gets slower by less than the 50 ms floor, then that is
    not a regression even if the relative increase is large."""
    base = {"p50_latency_ms": base_ms, "p95_latency_ms": base_ms}
    current = {k: v + increase for k, v in base.items()}
    assert detect(current, [base], T).regressions == ()


# --- worked examples (the defaults the README documents) -------------------------------------------


@pytest.mark.parametrize(
    ("metric", "baseline", "current", "regressed"),
    [
        ("p95_latency_ms", 400.0, 600.0, False),  # +50 %: at the limit
        ("p95_latency_ms", 400.0, 601.0, True),
        ("p50_latency_ms", 20.0, 70.0, False),  # +250 % but only +50 ms: the floor
        ("p50_latency_ms", 20.0, 71.0, True),
        ("cost_per_100_prompts_usd", 0.010, 0.012, False),  # +20 %
        ("cost_per_100_prompts_usd", 0.010, 0.0121, True),
        ("success_rate", 1.0, 0.95, False),  # 5 points
        ("success_rate", 1.0, 0.94, True),
        ("quality_score", 0.9, 0.8, False),  # 10 points
        ("quality_score", 0.9, 0.79, True),
    ],
)
def test_default_thresholds(metric: str, baseline: float, current: float, regressed: bool) -> None:
    """Given the default thresholds and one previous run, when one metric moves, then it regresses only
    past its documented limit, and the verdict names the metric, both values and the limit."""
    verdict = detect({metric: current}, [{metric: baseline}], T)
    assert verdict.regressed is regressed
    if regressed:
        (regression,) = verdict.regressions
        assert (regression.metric, regression.current, regression.baseline) == (metric, current, baseline)
        assert metric in regression.reason


def test_the_baseline_is_the_median_of_the_window() -> None:
    """Given five previous p95 latencies, when the baseline is built, then it is their median."""
    history = [{"p95_latency_ms": v} for v in (100.0, 900.0, 120.0, 110.0, 130.0)]
    assert baseline_of(history, T) == {"p95_latency_ms": 120.0}


def test_a_missing_metric_is_not_judged() -> None:
    """Given an unpriced model (no cost figure), when judged, then cost is neither compared nor flagged."""
    verdict = detect({"success_rate": 1.0}, [{"success_rate": 1.0, "cost_per_100_prompts_usd": 0.5}], T)
    assert verdict.regressions == () and verdict.status == "false"


def test_thresholds_come_from_the_environment_validated() -> None:
    """Given BENCHMARK_* variables, when thresholds are read, then they override the defaults; a value
    out of range fails loudly instead of silently disabling detection."""
    custom = thresholds_from_env({"BENCHMARK_QUALITY_DROP": "0.2", "BENCHMARK_BASELINE_RUNS": "3", "X": "1"})
    assert custom.quality_drop == 0.2 and custom.baseline_runs == 3 and custom.p95_latency_increase == 0.5
    with pytest.raises(ValidationError):
        thresholds_from_env({"BENCHMARK_QUALITY_DROP": "2"})


# --- suite format and figures -------------------------------------------------------------------


def _suite_bytes(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_a_suite_reads_expectations_beside_the_prompt_file_fields() -> None:
    """Given a suite with a job header, graded and ungraded prompts, when loaded, then prompts fan out
    over the models, each expectation is keyed by record id, and the content hash tracks the bytes."""
    data = _suite_bytes(
        {"job": {"models": ["m1", "m2"]}},
        {"id": "a", "prompt": "What is 2 + 40?", "expected": "42"},
        {"id": "b", "prompt": "Name a colour.", "expected_any": ["red", "blue"]},
        {"id": "c", "prompt": "What is 6 * 7?", "expected_regex": r"\b42\b"},
        {"id": "d", "prompt": "Say anything."},
    )
    suite = load_suite("core-v9", data, default_models=["ignored"])
    assert suite.prompts == 4 and suite.models == ("m1", "m2") and len(suite.parsed.items) == 8
    assert set(suite.expectations) == {"a", "b", "c"}
    assert suite.expectations["b"].passes("I like BLUE") and not suite.expectations["b"].passes("green")
    assert suite.expectations["c"].passes("It is 42.") and not suite.expectations["c"].passes("142")
    assert load_suite("core-v9", data + b"\n", default_models=()).content_hash != suite.content_hash


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "a", "prompt": ""}, "bad line"),
        ({"id": "a", "prompt": "q", "expected": "", "x": 1}, "expected must be"),
        ({"id": "a", "prompt": "q", "expected": "1", "expected_regex": "1"}, "give one of"),
        ({"id": "a", "prompt": "q", "expected_regex": "("}, "line 1"),
    ],
)
def test_a_suite_with_a_bad_line_does_not_run(line: dict[str, Any], message: str) -> None:
    """Given a suite with one bad line, when loaded, then it is refused with the reason: a benchmark that
    skipped prompts would not compare with its baseline."""
    with pytest.raises(SuiteError, match=message):
        load_suite("s1", _suite_bytes(line), default_models=["m"])


def test_suite_ids_are_restricted() -> None:
    """Given a suite id that could escape the benchmarks/ prefix, when loaded, then it is refused."""
    with pytest.raises(SuiteError, match="suite id"):
        load_suite("../x", _suite_bytes({"prompt": "q"}), default_models=["m"])


def test_figures_count_failures_as_wrong_and_price_per_100_answered_prompts() -> None:
    """Given four result lines (three answered, one failed) for prompts that all expect "42", when the
    figures are computed, then success is 3/4, quality 2/4, and cost per 100 is over answered prompts."""

    def ok(record: str, text: str, latency: float, cost: float | None) -> ResultLine:
        usage = {"inputTokens": 10, "outputTokens": 5}
        answer = ModelResponse(
            {"role": "assistant", "content": [{"text": text}]}, "end_turn", usage, latency, latency
        )
        priced = None if cost is None else Cost.of_total(cost)
        return ResultLine(record, "m", 1, {}, CallOutcome(answer=answer, cost=priced))

    lines = [
        ok("a", "The answer is 42.", 100, 0.001),
        ok("b", "The answer is 42.", 300, 0.001),
        ok("c", "The answer is 41.", 200, 0.001),
        ResultLine("d", "m", 4, {}, CallOutcome(error=CallError("ModelErrorException", "failed"))),
    ]
    expectations = {r: Expectation(expected="42") for r in "abcd"}
    f = compute_figures("m", lines, expectations)
    assert (f.prompts, f.succeeded, f.failed, f.success_rate) == (4, 3, 1, 0.75)
    assert (f.graded, f.passed, f.quality_score) == (4, 2, 0.5)
    assert (f.p50_latency_ms, f.p95_latency_ms) == (200, 300)
    assert (f.input_tokens, f.output_tokens, f.total_tokens) == (30, 15, 45)
    assert f.cost_per_100_prompts_usd == pytest.approx(0.1)
    unpriced = compute_figures("m", [ok("a", "The answer is 42.", 100, None)], expectations)
    assert unpriced.cost_usd is None and "cost_per_100_prompts_usd" not in unpriced.metrics()


# --- the CLI's local schedule -------------------------------------------------------------------


def test_the_local_schedule_repeats_while_the_stack_is_up_and_stops_when_it_goes_down() -> None:
    """Given `benchmark --every 5`, when the stack goes down after the third run, then the suite ran
    now and twice more, each 5 minutes (of a fake clock) after the previous, and the loop ends itself."""
    from pipeline_cli.benchmark import run_schedule

    now = [0.0]
    started_at: list[float] = []

    def run() -> dict[str, Any]:
        started_at.append(now[0])
        return {"regressions": 0}

    def sleep(seconds: float) -> None:
        assert 0 < seconds <= 1.0  # short naps, so `make down` is noticed within a second
        now[0] += seconds

    results = run_schedule(
        run, every_minutes=5, stack_up=lambda: len(started_at) < 3, sleep=sleep, clock=lambda: now[0]
    )
    assert len(results) == 3
    assert started_at == [0.0, 300.0, 600.0]


def test_without_every_the_cli_runs_once() -> None:
    """Given no --every, when the schedule runs, then the suite runs exactly once and nothing waits."""
    from pipeline_cli.benchmark import run_schedule

    def no_sleep(seconds: float) -> None:
        raise AssertionError("must not wait")

    results = run_schedule(lambda: {"n": 1}, every_minutes=None, stack_up=lambda: True, sleep=no_sleep)
    assert results == [{"n": 1}]


def test_without_matplotlib_charts_are_reported_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a runtime without matplotlib (the lean Lambda bundle), when a chart is rendered, then a
    ChartsUnavailable error says why, which the benchmark records instead of failing the run."""
    import sys

    from bedrock_pipeline.benchmark.charts import ChartsUnavailable, TrendPoint, render_trend_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None in sys.modules makes the import fail
    with pytest.raises(ChartsUnavailable, match="matplotlib"):
        render_trend_png("m: x", "x", [TrendPoint("a", 1.0)])
