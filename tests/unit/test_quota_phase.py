"""The quota phase's arithmetic and the lines scripts read from it (throughput/quota.py)."""

from __future__ import annotations

import re

import pytest

from throughput.quota import QUOTAS, achieved_ratios, prompt_file, report_lines


def test_utilisation_counts_only_the_window_after_the_first_minute_until_the_models_last_call() -> None:
    first, second = QUOTAS
    # Second by second: the first model at its full quota, done at 150 s; the second at half, done at 120 s.
    samples = [
        (float(t), {first: min(t, 150) * QUOTAS[first] // 60, second: min(t, 120) * QUOTAS[second] // 120})
        for t in range(0, 200)
    ]
    ratios = achieved_ratios(samples, started=0.0)
    assert ratios[first] == pytest.approx(1.0, abs=0.02)
    assert ratios[second] == pytest.approx(0.5, abs=0.02)
    assert achieved_ratios(samples[:70], started=0.0)[first] is None  # too short to say


def test_the_prompt_file_splits_items_two_to_one_as_the_quotas_are() -> None:
    lines = prompt_file(1500).decode().splitlines()
    assert len(lines) == 1501
    assert sum('"model"' in line for line in lines[1:]) == 500


def test_the_report_has_one_line_per_model_and_one_ratio_line_as_the_issue_names_them() -> None:
    run = {"items": 1800, "finished": True, "seconds": 130.0, "ended": 1800, "items_per_s": 13.8,
           "throttled_per_item": 0.0, "in_dlq": 0, "lost": 0, "duplicated": 0,
           "utilisation": {m: 0.93 for m in QUOTAS}}  # fmt: skip
    baseline = {**run, "finished": False, "items_per_s": 2.3, "utilisation": {m: None for m in QUOTAS}}
    lines = report_lines({"paced": run, "baseline": baseline})
    per_model = [re.fullmatch(r"quota utilisation (\S+)  ([0-9.]+)", line) for line in lines]
    assert sorted(m.group(1) for m in per_model if m) == sorted(QUOTAS)
    (ratio,) = [
        m for m in (re.fullmatch(r"quota phase vs today's behaviour  ([0-9.]+)x", x) for x in lines) if m
    ]
    assert float(ratio.group(1)) == pytest.approx(6.0)


def test_the_pacer_can_be_told_other_quotas_than_the_emulators_or_none_and_the_baseline_skipped() -> None:
    import argparse

    from throughput.quota import told_quotas

    def args(told: str | None) -> argparse.Namespace:
        return argparse.Namespace(quotas="m=300,n=150", told_quotas=told)

    assert told_quotas(args(None)) == "m=300,n=150"
    assert told_quotas(args("m=1500,n=750")) == "m=1500,n=750"
    assert told_quotas(args("none")) == ""
    run = {"items": 1200, "finished": True, "seconds": 200.0, "ended": 1200, "items_per_s": 6.0,
           "throttled_per_item": 0.1, "in_dlq": 0, "lost": 0, "duplicated": 0,
           "utilisation": {m: 0.9 for m in QUOTAS}, "told_quotas": ""}  # fmt: skip
    lines = report_lines({"paced": run})
    assert "pacer told nothing" in lines[1] and not any("today's behaviour" in line for line in lines)


def test_calls_throttled_at_random_are_named_in_the_report_and_absent_when_none_were() -> None:
    run = {"items": 1200, "finished": True, "seconds": 110.0, "ended": 1200, "items_per_s": 10.9,
           "throttled_per_item": 0.41, "in_dlq": 0, "lost": 0, "duplicated": 0,
           "utilisation": {m: 0.09 for m in QUOTAS}}  # fmt: skip
    assert "30% of calls throttled at random" in report_lines({"paced": {**run, "random_throttle": 0.3}})[1]
    assert "at random" not in report_lines({"paced": {**run, "random_throttle": 0.0}})[1]
    assert "at random" not in report_lines({"paced": run})[1]  # a result written before the option
