"""Scheduled benchmarks through the real handler on the local stack: moto S3, MLflow on PostgreSQL,
the Bedrock emulator reconfigured between runs to make a model slower, less accurate or failing.

The handler is invoked with the exact input the CDK schedule sends (`{"suite": ...}`); everything is
checked through MLflow's own client, the bucket, and the EMF lines Powertools prints.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.artifacts import download_artifacts

from handlers import runtime
from local_stack.event_pump import LambdaContext
from pipeline_cli.status import print_status
from pipeline_cli.target import Target
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

SUITES = Path(__file__).resolve().parents[2] / "batch_prompts" / "benchmarks"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _context() -> LambdaContext:
    return LambdaContext(
        function_name="benchmark",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:benchmark",
        memory_limit_in_mb=1024,
        aws_request_id=str(uuid.uuid4()),
        timeout_seconds=900,
    )


@pytest.fixture
def bench(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The local stack with the benchmark handler's cold-start caches cleared before and after."""
    from handlers import benchmark

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # the EMF lines are what the alarm sees
    benchmark.benchmark_settings.cache_clear()
    yield stack
    benchmark.benchmark_settings.cache_clear()


def _invoke(event: dict[str, Any]) -> dict[str, Any]:
    from handlers.benchmark import handler

    result: dict[str, Any] = handler(event, _context())
    return result


def _put_suite(stack: Stack, suite_id: str, body: bytes) -> None:
    stack.s3.put_object(Bucket=stack.resources.bucket, Key=f"benchmarks/{suite_id}.jsonl", Body=body)


def _arithmetic_suite(prompts: int) -> bytes:
    lines = [json.dumps({"job": {"inference": {"max_tokens": 32, "temperature": 0.0}}})]
    for i in range(prompts):
        a, b = 20 + 7 * i, 30 + 11 * i
        lines.append(
            json.dumps({"id": f"q{i}", "prompt": f"What is {a} + {b}?", "expected_regex": rf"\b{a + b}\b"})
        )
    return ("\n".join(lines) + "\n").encode()


def _emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_a_scheduled_run_records_its_figures_per_model(
    bench: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the shipped core-v1 suite in the bucket, BENCHMARK_SUITE=default and two configured models,
    when the schedule's input {"suite": "default"} invokes the handler, then each model gets one
    finished MLflow run tagged with the suite id and content hash, carrying success rate, p50/p95
    latency, tokens, cost per 100 prompts and the quality score; its calls are child runs of kind
    benchmark; the summary lands in results/benchmarks/<run id>/; the first run has no baseline."""
    monkeypatch.setenv("BENCHMARK_SUITE", "default")
    monkeypatch.setenv("DEFAULT_MODELS", f"{HAIKU},{NOVA}")
    runtime.environment.cache_clear()  # a cold start with this environment
    runtime.reset_core()
    _put_suite(bench, "core-v1", (SUITES / "core-v1.jsonl").read_bytes())
    bench.emulator.configure("*", accuracy=1.0)

    result = _invoke({"suite": "default"})

    assert result["suite"] == "core-v1" and result["regressions"] == 0
    assert {m["modelId"] for m in result["models"]} == {HAIKU, NOVA}
    summary_key = f"results/benchmarks/{result['benchmarkRunId']}/summary.json"
    assert result["summary"] == f"s3://{bench.resources.bucket}/{summary_key}"
    summary = json.loads(bench.s3.get_object(Bucket=bench.resources.bucket, Key=summary_key)["Body"].read())
    assert summary["suite"]["contentHash"] == result["suiteHash"] and summary["suite"]["prompts"] == 22

    for model in result["models"]:
        run = bench.mlflow.get_run(model["mlflowRunId"])
        assert run.info.status == "FINISHED"
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["pipeline.kind"] == "benchmark" and tags["benchmark.suite"] == "core-v1"
        assert tags["benchmark.suite_hash"] == result["suiteHash"] and len(result["suiteHash"]) == 64
        assert tags["benchmark.model"] == model["modelId"]
        assert tags["benchmark.regression"] == "no-baseline" and model["regression"] == "no-baseline"
        assert metrics["prompts"] == 22 and metrics["success_rate"] == 1.0
        assert metrics["graded"] == 20 and metrics["quality_score"] == 1.0  # accuracy 1.0: all right
        assert 0 <= metrics["p50_latency_ms"] <= metrics["p95_latency_ms"]
        assert metrics["total_tokens"] == metrics["input_tokens"] + metrics["output_tokens"] > 0
        assert metrics["cost_per_100_prompts_usd"] == pytest.approx(metrics["cost_usd"] * 100 / 22)
        calls = bench.mlflow.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
            max_results=100,
        )
        assert len(calls) == 22
        assert {c.data.tags["pipeline.kind"] for c in calls} == {"benchmark"}
        assert {c.data.params["model_id"] for c in calls} == {model["modelId"]}
        assert sum(c.data.metrics["input_tokens"] for c in calls) == metrics["input_tokens"]
        trace = bench.mlflow.get_trace(calls[0].data.tags["pipeline.trace_id"])
        assert trace.info.request_metadata.get("mlflow.sourceRun") == calls[0].info.run_id

    experiment = bench.mlflow.get_experiment(summary["mlflow"]["experimentId"])
    assert experiment.name == "benchmarks/core-v1"
    per_model = [e for e in _emf_lines(capsys.readouterr().out) if "model" in e]
    assert {e["model"] for e in per_model} == {HAIKU, NOVA}
    assert all(e["BenchmarkRegressions"] == [0.0] for e in per_model)

    # `status <benchmark run id>` finds the run's summary like a batch job's (clients via the test's env).
    target = Target("tests", bench.resources.bucket, bench.resources.jobs_table, "", {})
    assert print_status(target, result["benchmarkRunId"]) == 0
    assert f"benchmark run {result['benchmarkRunId']}: finished; suite core-v1; 0 regression(s)" in (
        capsys.readouterr().out
    )


def test_regressions_are_flagged_when_the_model_gets_slower_less_accurate_or_fails(
    bench: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given an 8-prompt arithmetic suite run once on an accurate, fast model, when it runs again
    unchanged there is no regression; when the emulator adds 200 ms latency, p50/p95 latency regress;
    when accuracy drops to 0 only the quality score regresses; when every call fails with a model
    error the success rate (and so quality) regresses. Each verdict is a tag, a metric and a summary."""
    suite_id = f"regress-{uuid.uuid4().hex[:8]}"
    _put_suite(bench, suite_id, _arithmetic_suite(8))
    bench.emulator.configure(HAIKU, accuracy=1.0)
    event = {"suite": suite_id, "models": [HAIKU]}

    def run() -> tuple[dict[str, Any], Any]:
        (model,) = _invoke(event)["models"]
        return model, bench.mlflow.get_run(model["mlflowRunId"])

    first, _ = run()
    assert first["regression"] == "no-baseline"

    unchanged, run_b = run()
    assert unchanged["regression"] == "false" and unchanged["regressedMetrics"] == []
    assert run_b.data.tags["benchmark.regression"] == "false" and run_b.data.metrics["regressions"] == 0

    bench.emulator.configure(HAIKU, latency_ms=200)
    slower, run_c = run()
    assert slower["regressedMetrics"] == ["p50_latency_ms", "p95_latency_ms"]
    assert run_c.data.tags["benchmark.regression"] == "true"
    assert run_c.data.tags["benchmark.regressed_metrics"] == "p50_latency_ms,p95_latency_ms"
    assert run_c.data.metrics["p95_latency_ms"] >= 200 and run_c.data.metrics["regressions"] == 2
    capsys.readouterr()

    bench.emulator.configure(HAIKU, latency_ms=0, accuracy=0.0)
    worse, run_d = run()
    assert worse["regressedMetrics"] == ["quality_score"]
    assert run_d.data.metrics["quality_score"] == 0.0 and run_d.data.metrics["baseline_quality_score"] == 1.0
    (emf,) = [e for e in _emf_lines(capsys.readouterr().out) if e.get("model") == HAIKU]
    assert emf["BenchmarkRegressions"] == [1.0]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == runtime.metrics.namespace

    bench.emulator.configure(HAIKU, accuracy=1.0, faults={"ModelErrorException": 1.0})
    failing, run_e = run()
    assert failing["regressedMetrics"] == ["quality_score", "success_rate"]
    assert run_e.data.metrics["success_rate"] == 0.0

    summary_uri = f"results/benchmarks/{run_e.data.tags['benchmark.run_id']}/summary.json"
    summary = json.loads(bench.s3.get_object(Bucket=bench.resources.bucket, Key=summary_uri)["Body"].read())
    (entry,) = summary["models"]
    assert entry["regression"]["status"] == "true"
    assert {r["metric"] for r in entry["regression"]["regressions"]} == {"quality_score", "success_rate"}
    assert summary["regressions"] == 2
    artifact = json.loads(
        Path(download_artifacts(run_id=run_e.info.run_id, artifact_path="summary.json")).read_text()
    )
    assert artifact == summary


def test_each_run_logs_a_trend_chart_per_metric_as_a_valid_png(bench: Stack, tmp_path: Path) -> None:
    """Given two runs of a suite, when the second finishes, then its run carries charts/<metric>.png
    for every tracked metric, each a real PNG that PIL and matplotlib open with sensible dimensions."""
    import matplotlib.image
    from PIL import Image

    suite_id = f"charts-{uuid.uuid4().hex[:8]}"
    _put_suite(bench, suite_id, _arithmetic_suite(2))
    event = {"suite": suite_id, "models": [NOVA]}
    _invoke(event)
    (model,) = _invoke(event)["models"]

    run_id = model["mlflowRunId"]
    names = {a.path for a in bench.mlflow.list_artifacts(run_id, "charts")}
    assert names == {
        f"charts/{m}.png"
        for m in (
            "success_rate",
            "quality_score",
            "p50_latency_ms",
            "p95_latency_ms",
            "cost_per_100_prompts_usd",
            "total_tokens",
        )
    }
    assert bench.mlflow.get_run(run_id).data.tags["benchmark.charts"] == "logged"
    local = Path(
        download_artifacts(run_id=run_id, artifact_path="charts/p95_latency_ms.png", dst_path=str(tmp_path))
    )
    data = local.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # raises on a truncated or corrupt file
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (800, 360)
    assert matplotlib.image.imread(local).shape[:2] == (360, 800)


def test_the_cli_runs_a_suite_now_and_again_every_interval(
    bench: Stack,
    moto_server: str,
    mlflow_server_postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the local stack and a suite file on disk, when the CLI's benchmark runs with --every and
    at most two runs, then the file is uploaded to benchmarks/, the handler runs twice, the second run
    is judged against the first, and the table names the model and the verdict."""
    from pipeline_cli.benchmark import LocalBenchmarkTarget, _figures, format_result, run_once, run_schedule

    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")  # run_once sets defaults; restore after
    suite_file = tmp_path / f"cli-{uuid.uuid4().hex[:8]}.jsonl"
    suite_file.write_bytes(_arithmetic_suite(2))
    target = LocalBenchmarkTarget(
        moto_url=moto_server,
        mlflow_url=mlflow_server_postgres,
        resources=bench.resources,
        emulator_url=bench.emulator.url,
    )

    results = run_schedule(
        lambda: run_once(target, suite_file, [NOVA]), every_minutes=0.001, stack_up=lambda: True, max_runs=2
    )

    assert [r["suite"] for r in results] == [suite_file.stem] * 2
    key = f"benchmarks/{suite_file.name}"
    assert (
        bench.s3.get_object(Bucket=bench.resources.bucket, Key=key)["Body"].read() == suite_file.read_bytes()
    )
    assert [r["models"][0]["regression"] for r in results] == ["no-baseline", "false"]
    table = format_result(results[1], _figures(mlflow_server_postgres, results[1]))
    header, _, row = table.splitlines()
    assert header.split()[:3] == ["model", "ok", "%"] and row.split()[0] == NOVA and row.endswith("false")
