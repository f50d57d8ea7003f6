"""`make throughput`: throughput against the tracking server's ceiling, tracking requests per record, cold start.

    python -m throughput.run_all [--latency-ms 300] [--workers N] [--prompts 500] [--only ceiling,baseline,...]
    python -m throughput.run_all --py-spy PATH   # also: where each phase's server time goes, per record

One run, on one MLflow server (fresh PostgreSQL database on 127.0.0.1:5432, dropped after), one
Bedrock emulator and one moto server, each in its own process:

  (a) ceiling   traced runs/s from 16 concurrent clients at zero model latency (throughput/ceiling.py)
  (b) baseline  a sequential loop in the fluent style at --latency-ms (throughput/baseline_sequential.py)
  (c) pipeline  500 prompts from upload to the last run recorded, handlers behind the event pump
                (throughput/pipeline_e2e.py)
  cold start    runner bundle size and import times in fresh subprocesses (throughput/cold_start.py)
  (q) quota     a batch over two models under emulator quotas, paced vs today's behaviour, on servers
                of its own and every CPU (throughput/quota.py; ~10 min)

CPUs: by default the tracking service (the MLflow server and the machine's PostgreSQL, pinned back
to its own mask afterwards) gets half of the machine's CPUs and everything else (moto, the emulator,
the clients, the pipeline's handlers) the other half, for (a), (b) and (c) alike, as in AWS, where
S3, SQS, DynamoDB and Lambda do not run on the tracking service's CPUs. Left floating, PostgreSQL
used the idle half in (a) but was pushed onto the server's half by the twin's load in (c).
``--shared-cpus`` lets every process use every CPU (then the offline twin's moto and handlers take
CPU the server would have had in (c) but not in (a)).

Prints the figures and the targets of issue 8 (throughput/report.py), and writes them as JSON to
build/throughput/last.json.
Figures on a shared machine move by 10-20 % from run to run; compare runs of one sitting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from local_stack.config import REPO_ROOT
from throughput.phase import run_phase
from throughput.profile_server import summarize
from throughput.quota import report_lines as quota_report_lines
from throughput.report import report
from throughput.services import (
    emulator,
    fresh_database,
    group_cpu_seconds,
    mlflow_server,
    moto,
    pin_process_group,
    postgres_cpu_seconds,
    postgres_pinned,
    set_emulator_latency,
    split_cpus,
)

PHASES = ("ceiling", "baseline", "pipeline", "batch_collector", "cold_start", "quota")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished phases (their whole process)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def sampled(py_spy: str | None, pid: int, raw: Path, rate: int) -> Iterator[Path | None]:
    """py-spy samples the server's processes while the block runs (nothing without --py-spy)."""
    if not py_spy:
        yield None
        return
    # --gil: only the thread holding the GIL, i.e. the server's Python CPU time, not threads waiting.
    command = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", str(rate)]
    command += ["--format", "raw", "--output", str(raw), "--nonblocking"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield raw
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
        recorder.wait(timeout=60)


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    wanted = set(args.only.split(",")) if args.only else set(PHASES)
    started = time.monotonic()
    every_cpu = os.sched_getaffinity(0)
    cpus = None if args.shared_cpus else split_cpus(os.sched_getaffinity(0))
    if cpus is not None:
        os.sched_setaffinity(0, cpus[1])  # inherited by every process started from here on
    if not args.workers:
        args.workers = len(cpus[0]) if cpus is not None else len(os.sched_getaffinity(0))
    if wanted & {"ceiling", "baseline", "pipeline", "batch_collector"}:
        state = Path(tempfile.mkdtemp(prefix="bench-"))
        with (
            fresh_database() as database,
            emulator(0.0) as emulator_url,
            moto(state) as moto_process,
            mlflow_server(
                database,
                state,
                workers=args.workers,
                db_pool_size=args.db_pool_size or None,
                db_max_overflow=args.db_max_overflow if args.db_pool_size else None,
            ) as server,
            contextlib.ExitStack() as cleanup,
        ):
            moto_url = str(moto_process.url)
            postgres_on_server_cpus = False
            if cpus is not None:
                pin_process_group(server.process.pgid, cpus[0])
                postgres_on_server_cpus = cleanup.enter_context(postgres_pinned(database, cpus[0]))
            results["cpus"] = {
                "mlflow_server": sorted(cpus[0]) if cpus else "all",
                "postgres": sorted(cpus[0]) if postgres_on_server_cpus else "all",
                "others": sorted(cpus[1]) if cpus else "all",
            }

            def cpu() -> dict[str, float]:
                return {
                    "mlflow_server": group_cpu_seconds(server.process.pgid),
                    "postgres": postgres_cpu_seconds(database),
                    "moto": group_cpu_seconds(moto_process.pgid),
                    "client": _children_cpu_seconds(),
                }

            def phase(name: str, module: str, phase_args: list[str], timeout: float) -> None:
                before = cpu()
                with sampled(
                    args.py_spy, server.process.pid, state / f"{name}.pyspy", args.py_spy_rate
                ) as raw:
                    results[name] = run_phase(module, phase_args, timeout=timeout)
                after = cpu()
                results[name]["cpu_seconds"] = {key: round(after[key] - before[key], 2) for key in after}
                if raw is not None:
                    results[name]["server_profile"] = {**summarize(raw), "rate": args.py_spy_rate}

            common = ["--tracking-uri", server.url, "--emulator-url", emulator_url]
            common += ["--access-log", str(server.log_path)]
            if "ceiling" in wanted:
                print(f"(a) ceiling: {args.threads} clients for {args.seconds:g} s ...", file=sys.stderr)
                phase(
                    "ceiling",
                    "throughput.ceiling",
                    [*common, "--threads", str(args.threads), "--seconds", str(args.seconds)],
                    timeout=args.seconds + 240,
                )
                print("(a2) ceiling, traces written as the runner writes them ...", file=sys.stderr)
                phase(
                    "ceiling_runner_export",
                    "throughput.ceiling",
                    [
                        *common,
                        "--threads",
                        str(args.threads),
                        "--seconds",
                        str(args.seconds),
                        "--trace-export",
                        "runner",
                    ],
                    timeout=args.seconds + 240,
                )
            set_emulator_latency(emulator_url, args.latency_ms)
            if "baseline" in wanted:
                print(f"(b) baseline: {args.baseline_prompts} prompts ...", file=sys.stderr)
                phase(
                    "baseline",
                    "throughput.baseline_sequential",
                    [*common, "--prompts", str(args.baseline_prompts)],
                    timeout=300,
                )
            if "pipeline" in wanted:
                print(f"(c) pipeline: {args.prompts} prompts ...", file=sys.stderr)
                phase(
                    "pipeline",
                    "throughput.pipeline_e2e",
                    [*common, "--moto-url", moto_url, "--prompts", str(args.prompts)],
                    timeout=620,
                )
            if "batch_collector" in wanted:
                print(f"(d) batch collector: {args.batch_records} records ...", file=sys.stderr)
                phase(
                    "batch_collector",
                    "throughput.batch_collector",
                    [*common, "--moto-url", moto_url, "--records", str(args.batch_records)],
                    timeout=3700,
                )
    if "cold_start" in wanted:
        print("cold start: bundle and imports ...", file=sys.stderr)
        results["cold_start"] = run_phase(
            "throughput.cold_start", ["--repeats", str(args.repeats)], timeout=600
        )
    if "quota" in wanted:
        print("(q) quota: paced vs today's behaviour under emulator quotas ...", file=sys.stderr)
        os.sched_setaffinity(0, every_cpu)  # its own servers: no split to keep
        results["quota"] = run_phase("throughput.quota", ["--items", str(args.quota_items)], timeout=2400)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=300.0, help="model latency for (b) and (c)")
    # 0: one uvicorn worker per CPU the server runs on (as stacks.settings sizes the MLflow task).
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_MLFLOW_WORKERS", "0")))
    # Tuned on 2 shared cores (docs/PERFORMANCE.md): a pool that keeps its connections beats MLflow's
    # default 5 (+10 overflow, closed after each use) under 16 concurrent clients.
    parser.add_argument("--db-pool-size", type=int, default=20, help="0: MLflow's default")
    parser.add_argument("--db-max-overflow", type=int, default=10, help="0 with --db-pool-size 0: default")
    parser.add_argument("--threads", type=int, default=16, help="clients for (a)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of (a)")
    parser.add_argument("--baseline-prompts", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--batch-records", type=int, default=10_000, help="records of (d)'s batch job")
    parser.add_argument("--repeats", type=int, default=5, help="import-time samples per case")
    parser.add_argument("--quota-items", type=int, default=1200, help="items of (q), over two models")
    parser.add_argument(
        "--shared-cpus", action="store_true", help="do not give the MLflow server CPUs of its own"
    )
    parser.add_argument("--py-spy", help="py-spy binary: sample the server in each phase (not a dependency)")
    parser.add_argument("--py-spy-rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "build" / "throughput" / "last.json")
    args = parser.parse_args()
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: the servers and the throwaway database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print("\n".join(report(results, args)))
    if "quota" in results:
        print("\n".join(quota_report_lines(results["quota"])))
    print("  * client: the whole phase process, warm-up and imports included")
    print(f"  (all figures: {args.output}; {results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
