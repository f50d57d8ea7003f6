"""The benchmark use case: run a suite on every model through the pipeline core, record one MLflow run
per (benchmark run, model) with its figures, judge it against its baseline, chart the trend, and write
a summary. Plain Python over the pipeline's adapters; the handler and the CLI only call `run_benchmark`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from bedrock_pipeline import settings as pipeline_settings
from bedrock_pipeline.benchmark import settings as bench
from bedrock_pipeline.benchmark.charts import ChartsUnavailable, TrendPoint, render_trend_png
from bedrock_pipeline.benchmark.figures import TRACKED_METRICS, ModelFigures, compute_figures
from bedrock_pipeline.benchmark.regression import DIRECTIONS, Verdict, detect, limit_for
from bedrock_pipeline.benchmark.suite import Suite, load_suite
from bedrock_pipeline.domain import CallError, CallOutcome, JobRef, ResultLine, WorkItem
from bedrock_pipeline.ports import ModelGateway, TransientItemError
from bedrock_pipeline.pricing import PriceTable
from bedrock_pipeline.run_names import TAG_JOB_ID, TAG_KIND, TAG_ROLE, TAG_SOURCE, TAG_SOURCE_ETAG
from bedrock_pipeline.storage import to_jsonl
from bedrock_pipeline.tracking import RunTracker
from bedrock_pipeline.use_cases.fan_out import fan_out
from bedrock_pipeline.use_cases.run_item import CallDeps, record_call

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.jsonl"


@dataclass(frozen=True)
class SuiteSource:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class BenchmarkDeps:
    gateway: ModelGateway
    tracker: RunTracker
    prices: PriceTable
    s3: Any
    bucket: str  # where results/benchmarks/<run id>/ is written
    concurrency: int = pipeline_settings.RUNNER_ITEM_CONCURRENCY
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class ModelOutcome:
    model_id: str
    mlflow_run_id: str
    job_id: str
    figures: ModelFigures
    verdict: Verdict
    charts: tuple[str, ...]  # artifact paths of the logged trend charts


@dataclass(frozen=True)
class BenchmarkReport:
    benchmark_run_id: str
    suite: Suite
    experiment_id: str
    models: tuple[ModelOutcome, ...]
    summary: dict[str, Any]
    summary_key: str

    @property
    def regressions(self) -> int:
        return sum(len(m.verdict.regressions) for m in self.models)


def suite_key(suite_id: str) -> str:
    return f"{bench.SUITES_PREFIX}{suite_id}.jsonl"


def load_suite_from_bucket(
    s3: Any, bucket: str, suite_name: str, *, default_models: Sequence[str]
) -> tuple[Suite, SuiteSource]:
    suite_id = bench.resolve_suite_id(suite_name)
    source = SuiteSource(bucket, suite_key(suite_id))
    body = s3.get_object(Bucket=bucket, Key=source.key)["Body"].read()
    return load_suite(suite_id, body, default_models=default_models), source


def run_benchmark(
    suite: Suite,
    source: SuiteSource,
    deps: BenchmarkDeps,
    thresholds: bench.RegressionThresholds | None = None,
) -> BenchmarkReport:
    thresholds = thresholds or bench.RegressionThresholds()
    started = deps.clock()
    benchmark_run_id = f"{suite.suite_id}-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    experiment_id = deps.tracker.ensure_experiment(
        suite.parsed.job.experiment or f"{bench.EXPERIMENT_PREFIX}{suite.suite_id}"
    )
    jobs = {
        model_id: _start_model_run(deps.tracker, suite, source, experiment_id, benchmark_run_id, model_id)
        for model_id in suite.models
    }
    lines = _run_items(suite, jobs, deps)

    outcomes: list[ModelOutcome] = []
    histories: dict[str, list[PastRun]] = {}
    for model_id, job in jobs.items():
        figures = compute_figures(
            model_id, [line for line in lines if line.model_id == model_id], suite.expectations
        )
        histories[model_id] = _history(
            deps.tracker, experiment_id, suite, model_id, thresholds.chart_runs, job
        )
        verdict = detect(figures.metrics(), [h.metrics for h in histories[model_id]], thresholds)
        outcomes.append(ModelOutcome(model_id, job.parent_run_id, job.job_id, figures, verdict, charts=()))

    summary = _summary_document(benchmark_run_id, suite, source, experiment_id, started, thresholds, outcomes)
    summary_key = f"{bench.RESULTS_PREFIX}{benchmark_run_id}/{SUMMARY_FILE}"
    _put(
        deps.s3,
        deps.bucket,
        f"{bench.RESULTS_PREFIX}{benchmark_run_id}/{RESULTS_FILE}",
        to_jsonl(line.to_dict() for line in lines),
    )
    _put(deps.s3, deps.bucket, summary_key, json.dumps(summary, indent=2).encode())

    finished = tuple(
        replace(
            outcome,
            charts=_finish_model_run(
                deps.tracker, outcome, histories[outcome.model_id], summary, thresholds, started
            ),
        )
        for outcome in outcomes
    )
    return BenchmarkReport(benchmark_run_id, suite, experiment_id, finished, summary, summary_key)


# --- running -------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()[:60]


def _start_model_run(
    tracker: RunTracker,
    suite: Suite,
    source: SuiteSource,
    experiment_id: str,
    benchmark_run_id: str,
    model_id: str,
) -> JobRef:
    """The (benchmark run, model) parent run, whose children are the suite's calls on that model."""
    job_id = f"{benchmark_run_id}-{_slug(model_id)}"
    run_name = f"{suite.suite_id} · {model_id}"
    tags = {
        TAG_KIND: "benchmark",
        TAG_ROLE: "job",
        TAG_JOB_ID: job_id,
        TAG_SOURCE: source.uri,
        TAG_SOURCE_ETAG: suite.content_hash,
        bench.TAG_SUITE: suite.suite_id,
        bench.TAG_SUITE_HASH: suite.content_hash,
        bench.TAG_RUN_ID: benchmark_run_id,
        bench.TAG_MODEL: model_id,
        MLFLOW_RUN_NAME: run_name,
    }
    run = tracker.client.create_run(experiment_id, run_name=run_name, tags=tags)
    tracker.client.log_batch(
        run.info.run_id,
        params=[
            Param("model_id", model_id),
            Param("suite", suite.suite_id),
            Param("suite_hash", suite.short_hash),
            Param("prompts", str(suite.prompts)),
        ],
    )
    return JobRef(
        job_id=job_id,
        kind="benchmark",
        experiment_id=experiment_id,
        parent_run_id=run.info.run_id,
        source_bucket=source.bucket,
        source_key=source.key,
        source_etag=suite.content_hash,
    )


def _run_items(suite: Suite, jobs: dict[str, JobRef], deps: BenchmarkDeps) -> list[ResultLine]:
    """Every (prompt, model) through the pipeline's own `record_call`, bounded like the runner Lambda."""
    calls = CallDeps(gateway=deps.gateway, recorder=deps.tracker, prices=deps.prices)
    items = [item.bound_to(jobs[item.model_id]) for item in suite.parsed.items]

    def one(item: WorkItem) -> ResultLine:
        try:
            return record_call(item, calls)
        except TransientItemError as exc:
            # No queue retries a benchmark call: a call still failing after botocore's retries is a
            # failure of this run (record_call has already dropped its run).
            return ResultLine.for_item(item, CallOutcome(error=CallError("TransientError", str(exc))))

    return fan_out(items, one, max_workers=deps.concurrency)


# --- history and baseline ------------------------------------------------------------------------


@dataclass(frozen=True)
class PastRun:
    run_id: str
    start_time_ms: int
    metrics: dict[str, float]
    regressed_metrics: frozenset[str]


def _history(
    tracker: RunTracker, experiment_id: str, suite: Suite, model_id: str, limit: int, job: JobRef
) -> list[PastRun]:
    """Finished runs of the same suite content and model, newest first, this run excluded."""
    runs = tracker.client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{bench.TAG_SUITE_HASH}` = '{suite.content_hash}' "
            f"and tags.`{bench.TAG_MODEL}` = '{model_id}' "
            f"and tags.`{TAG_ROLE}` = 'job' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [
        PastRun(
            run_id=run.info.run_id,
            start_time_ms=run.info.start_time,
            metrics=dict(run.data.metrics),
            regressed_metrics=frozenset(
                m for m in run.data.tags.get(bench.TAG_REGRESSED_METRICS, "").split(",") if m
            ),
        )
        for run in runs
        if run.info.run_id != job.parent_run_id
    ]


# --- recording -----------------------------------------------------------------------------------


def _finish_model_run(
    tracker: RunTracker,
    outcome: ModelOutcome,
    history: list[PastRun],
    summary: dict[str, Any],
    thresholds: bench.RegressionThresholds,
    started: datetime,
) -> tuple[str, ...]:
    run_id = outcome.mlflow_run_id
    verdict = outcome.verdict
    now = int(time.time() * 1000)
    regressed = sorted(r.metric for r in verdict.regressions)
    metrics = [Metric(k, v, now, 0) for k, v in outcome.figures.metrics().items()]
    metrics.append(Metric("regressions", float(len(regressed)), now, 0))
    metrics.extend(Metric(f"baseline_{k}", v, now, 0) for k, v in verdict.baseline.items())
    tags = {
        bench.TAG_REGRESSION: verdict.status,
        bench.TAG_REGRESSED_METRICS: ",".join(regressed),
        bench.TAG_BASELINE_RUNS: str(verdict.baseline_runs),
    }
    charts: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        folder = Path(tmp)
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        try:
            charts = _render_charts(folder / "charts", outcome, history, thresholds, started)
            tags[bench.TAG_CHARTS] = "logged"
        except ChartsUnavailable as exc:
            tags[bench.TAG_CHARTS] = f"not logged: {exc}"
            logger.warning("trend charts skipped: %s", exc)
        tracker.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        tracker.client.log_artifacts(run_id, str(folder))
    tracker.client.set_terminated(run_id, "FINISHED")
    return charts


def _render_charts(
    folder: Path,
    outcome: ModelOutcome,
    history: list[PastRun],
    thresholds: bench.RegressionThresholds,
    started: datetime,
) -> tuple[str, ...]:
    folder.mkdir()
    current = outcome.figures.metrics()
    regressed_now = {r.metric for r in outcome.verdict.regressions}
    past = list(reversed(history[: thresholds.chart_runs - 1]))  # oldest first, then this run
    written = []
    for metric in TRACKED_METRICS:
        if metric not in current:
            continue
        points = [
            TrendPoint(_label(p.start_time_ms), p.metrics[metric], metric in p.regressed_metrics)
            for p in past
            if metric in p.metrics
        ]
        points.append(TrendPoint(f"{started:%m-%d %H:%M} (this)", current[metric], metric in regressed_now))
        base = outcome.verdict.baseline.get(metric)
        limit = limit_for(metric, base, thresholds) if base is not None and metric in DIRECTIONS else None
        png = render_trend_png(f"{outcome.model_id}: {metric}", metric, points, baseline=base, limit=limit)
        (folder / f"{metric}.png").write_bytes(png)
        written.append(f"charts/{metric}.png")
    return tuple(written)


def _label(start_time_ms: int) -> str:
    return datetime.fromtimestamp(start_time_ms / 1000, UTC).strftime("%m-%d %H:%M")


def _summary_document(
    benchmark_run_id: str,
    suite: Suite,
    source: SuiteSource,
    experiment_id: str,
    started: datetime,
    thresholds: bench.RegressionThresholds,
    outcomes: list[ModelOutcome],
) -> dict[str, Any]:
    return {
        "benchmarkRunId": benchmark_run_id,
        "startedAt": started.isoformat(),
        "suite": {
            "id": suite.suite_id,
            "contentHash": suite.content_hash,
            "prompts": suite.prompts,
            "graded": len(suite.expectations),
            "source": source.uri,
        },
        "mlflow": {"experimentId": experiment_id},
        "thresholds": thresholds.model_dump(),
        "regressions": sum(len(o.verdict.regressions) for o in outcomes),
        "models": [
            {
                "modelId": o.model_id,
                "mlflowRunId": o.mlflow_run_id,
                "jobId": o.job_id,
                "figures": asdict(o.figures),
                "regression": o.verdict.as_dict(),
            }
            for o in outcomes
        ],
    }


def _put(s3: Any, bucket: str, key: str, body: bytes) -> None:
    content_type = "application/x-ndjson" if key.endswith(".jsonl") else "application/json"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
