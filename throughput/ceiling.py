"""(a) The ceiling: traced runs per second one MLflow server takes from many concurrent clients.

    python -m throughput.ceiling --tracking-uri URL --emulator-url URL --access-log PATH [--threads 16]

Each client thread loops: ``create_run``, one Converse call to the emulator (zero latency) traced by
``mlflow.bedrock.autolog`` inside a span linked to the run (as the runner does), ``log_batch``
(params, metrics, tags), ``set_terminated``. After a warm-up, the rate is read from the server's
access log over a fixed window: traced runs the server completed in it, i.e. the fewer of its
``runs/update`` (a run finished) and its StartTrace (a trace exported) answers. Clients' own counts
would overstate it when MLflow's async trace queue falls behind (runs finish, their traces wait) and
the queue's drain after the window would understate it (the window's runs and the in-flight ones).

``--trace-export mlflow`` (the default, issue 8's (a)) exports traces as MLflow's client does out of
the box: its async queue, spans first, then StartTrace. ``--trace-export runner`` writes them as the
runner does (bedrock_pipeline/trace_export.py): inline, each thread's traces held for sets of a work
batch's size and posted trace info first. The same server, the same runs; only the trace writes differ.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from throughput.access_log import AccessLog, RequestCounts
from throughput.phase import emit_result, phase_parser

MODEL_ID = "amazon.nova-lite-v1:0"


def traced_run(client: Any, bedrock: Any, experiment_id: str, index: int) -> None:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag, SpanType
    from mlflow.entities.trace_location import MlflowExperimentLocation

    run_id = client.create_run(experiment_id, run_name=f"ceiling-{index}").info.run_id
    with mlflow.start_span(
        name=f"record {index}",
        span_type=SpanType.CHAIN,
        run_id=run_id,
        trace_destination=MlflowExperimentLocation(experiment_id=experiment_id),
    ) as span:
        response = bedrock.converse(
            modelId=MODEL_ID,
            messages=[{"role": "user", "content": [{"text": f"Question {index}: what is {index} + 1?"}]}],
            inferenceConfig={"maxTokens": 64},
        )
        trace_id = span.trace_id
    usage = response["usage"]
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in usage.items() if isinstance(v, int)],
        params=[Param("model_id", MODEL_ID), Param("max_tokens", "64")],
        tags=[RunTag("pipeline.trace_id", trace_id)],
    )
    client.set_terminated(run_id, "FINISHED")


def traced_runs_completed(counts: RequestCounts) -> int:
    """Runs the server finished whose trace it also received: each has one update and one StartTrace."""
    return min(counts.endpoints["POST runs/update"], counts.endpoints["POST traces"])


def measure(
    tracking_uri: str,
    emulator_url: str,
    access_log: Path,
    *,
    threads: int,
    seconds: float,
    warmup: float,
    trace_export: str = "mlflow",
) -> dict[str, Any]:
    # The runner's client settings: no URL-printing get_run, a pool as large as the thread count.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(32, threads * 2))
    if trace_export == "runner":
        os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"  # as handlers/runtime.py sets it
    import boto3
    import mlflow
    from botocore.config import Config
    from mlflow.tracking import MlflowClient

    from bedrock_pipeline import settings
    from bedrock_pipeline.trace_export import export_traces_at_once, holding_finished_traces

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.bedrock.autolog()  # before the client exists: autolog patches client creation
    if trace_export == "runner" and not export_traces_at_once():
        raise RuntimeError("the runner's trace export could not be installed")
    batch = settings.WORK_BATCH_SIZE if trace_export == "runner" else 1
    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=threads * 2),
    )
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(f"bench-ceiling-{time.time_ns()}")

    done = 0
    completed = 0  # every run, warm-up and the tail after the window included: the CPU figures' divisor
    lock = threading.Lock()
    phase = {"counting": False}
    stop = threading.Event()
    errors: list[str] = []

    def worker(worker_index: int) -> None:
        nonlocal done, completed
        index = 0
        while not stop.is_set():
            # One hold per work batch's worth of runs, as a runner invocation holds its batch's traces
            # (a no-op scope when MLflow exports).
            with holding_finished_traces() if batch > 1 else contextlib.nullcontext():
                for _ in range(batch):
                    try:
                        traced_run(client, bedrock, experiment_id, worker_index * 1_000_000 + index)
                    except Exception as error:  # counted, not fatal: the figure says how many failed
                        errors.append(f"{type(error).__name__}: {error}"[:300])
                        continue
                    finally:
                        index += 1
                    with lock:
                        completed += 1
                        if phase["counting"]:
                            done += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(warmup)  # connections, imports, first traces
    log = AccessLog(access_log)
    mlflow.flush_trace_async_logging()
    offset = log.mark()
    with lock:
        phase["counting"] = True
    started = time.perf_counter()
    stop.wait(seconds)
    end = log.mark()  # access lines trail their answers by as much here as at the start: no bias
    elapsed = time.perf_counter() - started
    with lock:
        phase["counting"] = False
        client_runs = done
    stop.set()
    for thread in pool:
        thread.join(timeout=60)
    mlflow.flush_trace_async_logging()  # not timed: the window's traces were counted at the server
    counts = log.between(offset, end)
    runs = traced_runs_completed(counts)
    return {
        "name": "ceiling",
        "trace_export": trace_export,
        "threads": threads,
        "runs": runs,
        "seconds": round(elapsed, 2),
        "runs_per_s": runs / elapsed,
        "client_runs_in_window": client_runs,
        "records_in_phase": completed,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        **counts.summary(),
    }


def main() -> None:
    parser = phase_parser(__doc__)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--trace-export", choices=("mlflow", "runner"), default="mlflow")
    args = parser.parse_args()
    emit_result(
        measure(
            args.tracking_uri,
            args.emulator_url,
            args.access_log,
            threads=args.threads,
            seconds=args.seconds,
            warmup=args.warmup,
            trace_export=args.trace_export,
        )
    )


if __name__ == "__main__":
    main()
