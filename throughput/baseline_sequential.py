"""(b) The sequential baseline, in the common style: call Bedrock, log with MLflow's fluent API, repeat.

    python -m throughput.baseline_sequential --tracking-uri URL --emulator-url URL --access-log PATH [--prompts 40]

What most notebooks and scripts do: ``mlflow.bedrock.autolog()``, then per prompt ``start_run``,
``log_params``, the Converse call (traced by autolog, linked to the active run), ``log_metrics``.
MLflow's defaults are left as they are (including the run URL it prints at the end of each run).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from throughput.access_log import AccessLog
from throughput.phase import emit_result, phase_parser

MODEL_ID = "amazon.nova-lite-v1:0"
WARMUP_PROMPTS = 3


def measure(tracking_uri: str, emulator_url: str, access_log: Path, *, prompts: int) -> dict[str, Any]:
    import boto3
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"bench-baseline-{time.time_ns()}")
    mlflow.bedrock.autolog()
    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def one(index: int) -> None:
        with mlflow.start_run(run_name=f"prompt-{index}"):
            mlflow.log_params({"model_id": MODEL_ID, "max_tokens": 64, "temperature": 0.2})
            started = time.perf_counter()
            response = bedrock.converse(
                modelId=MODEL_ID,
                messages=[{"role": "user", "content": [{"text": f"Question {index}: what is {index} + 1?"}]}],
                inferenceConfig={"maxTokens": 64, "temperature": 0.2},
            )
            usage = response["usage"]
            mlflow.log_metrics(
                {
                    "input_tokens": usage["inputTokens"],
                    "output_tokens": usage["outputTokens"],
                    "total_tokens": usage["totalTokens"],
                    "latency_ms": (time.perf_counter() - started) * 1000,
                }
            )

    for index in range(WARMUP_PROMPTS):
        one(-index - 1)
    mlflow.flush_trace_async_logging()
    log = AccessLog(access_log)
    offset = log.mark()
    started = time.perf_counter()
    for index in range(prompts):
        one(index)
    mlflow.flush_trace_async_logging()
    elapsed = time.perf_counter() - started
    counts = log.settled_since(offset)
    return {
        "name": "baseline",
        "prompts": prompts,
        "seconds": round(elapsed, 2),
        "prompts_per_s": prompts / elapsed,
        "ms_per_prompt": elapsed * 1000 / prompts,
        "records_in_phase": WARMUP_PROMPTS + prompts,
        **counts.summary(),
    }


def main() -> None:
    parser = phase_parser(__doc__)
    parser.add_argument("--prompts", type=int, default=40)
    args = parser.parse_args()
    emit_result(measure(args.tracking_uri, args.emulator_url, args.access_log, prompts=args.prompts))


if __name__ == "__main__":
    main()
