"""Server and database CPU per trace: MLflow's export order against the runner's (trace info first).

    python -m throughput.trace_export_order [--traces 300] [--rounds 2]

Starts the throughput run's MLflow server (one worker, fresh PostgreSQL database) and writes traces shaped as
the runner's (a record span with the runner's nine trace tags and a model-call child), from 10
threads, each holding its traces for sets of 10 as a runner batch does (bedrock_pipeline/
trace_export.py). The orders alternate in rounds on one server:

  mlflow        the held set handed to MLflow's exporter: one span post, then StartTrace per trace,
                which then takes the server's merge path (the trace row exists already)
  info first    the runner's: StartTrace per trace (one INSERT each), then one span post

Every round checks the last trace came back whole (both spans, its tags, its preview).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from throughput.services import fresh_database, group_cpu_seconds, mlflow_server, postgres_cpu_seconds

THREADS = 10
SET_SIZE = 10
TAGS = {f"pipeline.tag{i}": f"value-{i}" for i in range(9)}  # the runner's trace carries nine tags


def one_trace(experiment_id: str, index: int) -> str:
    import mlflow
    from mlflow.entities import SpanType
    from mlflow.entities.trace_location import MlflowExperimentLocation

    question = {"messages": [{"role": "user", "content": [{"text": f"question {index}"}]}]}
    answer = "an answer of about twenty words " * 4
    with mlflow.start_span(
        name=f"record {index}",
        span_type=SpanType.CHAIN,
        trace_destination=MlflowExperimentLocation(experiment_id=experiment_id),
    ) as record:
        mlflow.update_current_trace(tags=TAGS)
        record.set_inputs({"modelId": "amazon.nova-lite-v1:0", **question})
        with mlflow.start_span(name="Converse", span_type=SpanType.CHAT_MODEL) as call:
            call.set_inputs(question)
            call.set_outputs({"output": {"message": {"content": [{"text": answer}]}}})
        record.set_outputs({"text": answer})
    return str(record.trace_id)


def write(experiment_id: str, traces: int) -> list[str]:
    from bedrock_pipeline.trace_export import holding_finished_traces

    trace_ids: list[str] = []

    def worker(worker_index: int) -> None:
        for set_index in range(traces // THREADS // SET_SIZE):
            with holding_finished_traces():
                for index in range(SET_SIZE):
                    trace_ids.append(
                        one_trace(experiment_id, worker_index * 100_000 + set_index * 100 + index)
                    )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return trace_ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=300, help="per order and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"  # as the runner (handlers/runtime.py)
    import mlflow
    from mlflow.tracking import MlflowClient

    from bedrock_pipeline import trace_export
    from bedrock_pipeline.mlflow_internals import span_export

    plain_traces = span_export._split_plain

    def mlflow_order(inner: Any, spans: Any) -> tuple[list[Any], list[Any]]:
        return [], list(spans)  # nothing is "plain": the whole set goes to MLflow's exporter

    state = Path(tempfile.mkdtemp(prefix="bench-order-"))
    with fresh_database() as database, mlflow_server(database, state, workers=1) as server:
        mlflow.set_tracking_uri(server.url)
        if not trace_export.export_traces_at_once():
            raise SystemExit("the runner's trace export could not be installed")
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment(f"bench-trace-order-{time.time_ns()}")
        write(experiment_id, THREADS * SET_SIZE)  # warm-up: connections, caches
        print(f"{args.traces} traces per row; ms of CPU per trace")
        print(f"{'order':<12} {'server':>8} {'postgres':>9} {'wall s':>7}  whole")
        for _ in range(args.rounds):
            for name, split in (("mlflow", mlflow_order), ("info first", plain_traces)):
                span_export._split_plain = split  # type: ignore[assignment]
                server_before = group_cpu_seconds(server.process.pgid)
                postgres_before = postgres_cpu_seconds(database)
                started = time.monotonic()
                trace_ids = write(experiment_id, args.traces)
                wall = time.monotonic() - started
                server_ms = (group_cpu_seconds(server.process.pgid) - server_before) * 1000 / len(trace_ids)
                postgres_ms = (postgres_cpu_seconds(database) - postgres_before) * 1000 / len(trace_ids)
                last = client.get_trace(trace_ids[-1])
                whole = (
                    len(last.data.spans) == 2
                    and last.info.tags.get("pipeline.tag3") == "value-3"
                    and bool(last.info.response_preview)
                )
                print(f"{name:<12} {server_ms:8.1f} {postgres_ms:9.1f} {wall:7.1f}  {whole}", flush=True)
        span_export._split_plain = plain_traces  # type: ignore[assignment]


if __name__ == "__main__":
    main()
