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

CPUs: by default the tracking service (the MLflow server and the machine's PostgreSQL, pinned back
to its own mask afterwards) gets half of the machine's CPUs and everything else (moto, the emulator,
the clients, the pipeline's handlers) the other half, for (a), (b) and (c) alike, as in AWS, where
S3, SQS, DynamoDB and Lambda do not run on the tracking service's CPUs. Left floating, PostgreSQL
used the idle half in (a) but was pushed onto the server's half by the twin's load in (c).
``--shared-cpus`` lets every process use every CPU (then the offline twin's moto and handlers take
CPU the server would have had in (c) but not in (a)).

Prints the figures and the targets of issue 8, and writes them as JSON to build/throughput/last.json.
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

PHASES = ("ceiling", "baseline", "pipeline", "cold_start")
# Issue 8's targets.
TARGET_VS_CEILING = 0.8
TARGET_VS_BASELINE = 5.0
TARGET_RUN_REQUESTS_PER_RECORD = 3.0
TARGET_BUNDLE_MB = 130.0
TARGET_IMPORT_RATIO = 0.6


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished phases (their whole process)
    return usage.ru_utime + usage.ru_stime


def split_per_record(endpoints: dict[str, int], run_requests: int, records: int) -> tuple[float, int]:
    """(run requests per record, requests per job): endpoints hit at least once per two records scale
    with the records; the rest (and the parent run's create, log-batch and update) are the job's."""
    per_item = [count for name, count in endpoints.items() if count >= records / 2 and "traces" not in name]
    # The job's parent run goes through the same three endpoints as each record's run.
    scaled = sum(per_item) - min(3, len(per_item))
    return scaled / records, run_requests - scaled


def _line(label: str, value: str, target: str = "", ok: bool | None = None) -> str:
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    return f"  {label:<58} {value:>14}   {target}{mark}"


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


def _profile_lines(result: dict[str, Any], records: int) -> list[str]:
    """Server milliseconds per record holding the GIL, under each request handler (py-spy samples)."""
    profile = result.get("server_profile")
    if not profile:
        return []
    records = result.get("records_in_phase") or records
    samples = profile["samples"]
    busy_ms = samples["total"] * samples["busy_share"] * 1000 / profile["rate"] / records
    lines = [_line("    server ms per record holding the GIL (py-spy), by handler", f"{busy_ms:.0f}")]
    for name, share in profile["handlers"].items():
        lines.append(_line(f"      {name}", f"{share * busy_ms:.0f}"))
    return lines


def _cpu_line(result: dict[str, Any], records: int) -> str:
    # CPU is read over the whole phase, so it is divided by every record of the phase (warm-up, and for
    # the ceiling the runs before and after its window), not only by the ones the rate counts.
    records = result.get("records_in_phase") or records
    cpu = result.get("cpu_seconds") or {}
    parts = " / ".join(
        f"{cpu.get(key, 0) * 1000 / records:.0f}" for key in ("mlflow_server", "postgres", "moto", "client")
    )
    return _line("    CPU ms per record: server / postgres / moto / client*", parts)


def report(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [
        f"throughput: {os.cpu_count()} CPUs, MLflow server --workers {args.workers}"
        f" (db pool {args.db_pool_size or 'default'}/{args.db_max_overflow or 'default'}),"
        f" PostgreSQL, emulator latency {args.latency_ms:g} ms",
    ]
    cpus = results.get("cpus")
    if cpus:
        lines.append(
            "  CPUs: all shared"
            if cpus["mlflow_server"] == "all"
            else f"  CPUs: MLflow server {cpus['mlflow_server']}, PostgreSQL {cpus.get('postgres', 'all')},"
            f" moto/emulator/clients/handlers {cpus['others']}"
        )
    ceiling = results.get("ceiling")
    ceiling_runner = results.get("ceiling_runner_export")
    baseline = results.get("baseline")
    pipeline = results.get("pipeline")
    for label, result in (
        ("(a) ceiling, {} clients, 0 ms model, MLflow's trace export", ceiling),
        ("(a2) the same, traces written as the runner writes them", ceiling_runner),
    ):
        if not result:
            continue
        lines.append(_line(label.format(result["threads"]), f"{result['runs_per_s']:.2f} runs/s"))
        lines.append(
            _line(
                "    tracking requests per run (run / trace export)",
                f"{result['requests']['run'] / result['runs']:.2f} / {result['requests']['trace'] / result['runs']:.2f}",
            )
        )
        lines.append(_cpu_line(result, result["runs"]))
        lines += _profile_lines(result, result["runs"])
    if baseline:
        lines.append(
            _line(
                f"(b) sequential fluent baseline, {args.latency_ms:g} ms model",
                f"{baseline['prompts_per_s']:.2f} prompts/s",
            )
        )
        lines.append(_line("    per prompt", f"{baseline['ms_per_prompt']:.0f} ms"))
        lines.append(_cpu_line(baseline, baseline["prompts"]))
        lines += _profile_lines(baseline, baseline["prompts"])
        lines.append(
            _line(
                "    tracking requests per prompt (run / trace export)",
                f"{baseline['requests']['run'] / baseline['prompts']:.2f} / {baseline['requests']['trace'] / baseline['prompts']:.2f}",
            )
        )
    if pipeline:
        prompts = pipeline["prompts"]
        lines.append(
            _line(
                f"(c) pipeline, {prompts} prompts, upload -> last run recorded",
                f"{pipeline['prompts_per_s']:.2f} prompts/s",
            )
        )
        lines.append(
            _line(
                "    seconds to last run / to job finalized",
                f"{pipeline['seconds_to_last_run']:.1f} / {pipeline['seconds_to_finalized']:.1f}",
            )
        )
        retried = pipeline.get("pump", {}).get("failed_items", 0)
        lines.append(
            _line(
                "    items succeeded / failed / returned to the queue",
                f"{pipeline['succeeded']} / {pipeline['failed']} / {retried}",
            )
        )
        lines.append(_cpu_line(pipeline, prompts))
        lines += _profile_lines(pipeline, prompts)
        if ceiling:
            ratio = pipeline["prompts_per_s"] / ceiling["runs_per_s"]
            lines.append(
                _line("    pipeline / ceiling (a)", f"{ratio:.2f}", ">= 0.80", ratio >= TARGET_VS_CEILING)
            )
        if ceiling_runner:
            ratio = pipeline["prompts_per_s"] / ceiling_runner["runs_per_s"]
            lines.append(_line("    pipeline / (a2), for reference", f"{ratio:.2f}", "(no target)"))
        if baseline:
            ratio = pipeline["prompts_per_s"] / baseline["prompts_per_s"]
            lines.append(
                _line("    pipeline / baseline (b)", f"{ratio:.1f}x", ">= 5x", ratio >= TARGET_VS_BASELINE)
            )
        per_record, per_job = split_per_record(pipeline["endpoints"], pipeline["requests"]["run"], prompts)
        lines.append(
            _line(
                "    tracking requests per record, beside the trace",
                f"{per_record:.2f}",
                "<= 3",
                per_record <= TARGET_RUN_REQUESTS_PER_RECORD,
            )
        )
        lines.append(
            _line(
                "    plus per job (experiment, parent run, finalize)",
                f"{per_job}",
                f"= {pipeline['requests']['run'] / prompts:.2f} per record in all",
            )
        )
        lines.append(
            _line("    trace-export requests per record", f"{pipeline['requests']['trace'] / prompts:.2f}")
        )
    cold = results.get("cold_start")
    if cold:
        size = cold["bundle"]["total_mb"]
        lines.append(
            _line("runner bundle, unzipped", f"{size:.1f} MB", "<= 130 MB", size <= TARGET_BUNDLE_MB)
        )
        lines.append(_line("  of which shipped bytecode", f"{cold['bundle'].get('bytecode_mb', 0):.1f} MB"))
        lines += _import_lines(cold["imports"]["median_s"])
    return lines


_IMPORT_CASES = (
    "import handlers.runner (deployed bundle, Python 3.12, with its bytecode)",
    "import handlers.runner (deployed bundle, Python 3.12, no bytecode)",
    "import handlers.runner (skinny bundle, bytecode compiled)",
    "import handlers.runner (skinny bundle, no bytecode)",
    "import handlers.runner (.venv)",
)


def _import_lines(medians: dict[str, float]) -> list[str]:
    """Each import time, then each handler import against full MLflow's. The target is checked on the
    import as deployed (or, without Python 3.12 here, the skinny bundle with bytecode); the others are
    printed for reference."""
    lines = [_line(f"  {name}", f"{value:.2f} s") for name, value in medians.items()]
    full = medians["import mlflow (full, .venv)"]
    present = [name for name in _IMPORT_CASES if name in medians]  # no 3.12 here: no deployed import
    targeted = next(name for name in present if "with its bytecode" in name or "bytecode compiled" in name)
    for name in present:
        ratio = medians[name] / full
        label = f"    handler / full mlflow, {name.removeprefix('import handlers.runner ')}"
        if name == targeted:
            lines.append(_line(label, f"{ratio:.2f}", "<= 0.6", ratio <= TARGET_IMPORT_RATIO))
        else:
            lines.append(_line(label, f"{ratio:.2f}", "(for reference)"))
    return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    wanted = set(args.only.split(",")) if args.only else set(PHASES)
    started = time.monotonic()
    cpus = None if args.shared_cpus else split_cpus(os.sched_getaffinity(0))
    if cpus is not None:
        os.sched_setaffinity(0, cpus[1])  # inherited by every process started from here on
    if not args.workers:
        args.workers = len(cpus[0]) if cpus is not None else len(os.sched_getaffinity(0))
    if wanted & {"ceiling", "baseline", "pipeline"}:
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
    if "cold_start" in wanted:
        print("cold start: bundle and imports ...", file=sys.stderr)
        results["cold_start"] = run_phase(
            "throughput.cold_start", ["--repeats", str(args.repeats)], timeout=600
        )
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
    parser.add_argument("--repeats", type=int, default=5, help="import-time samples per case")
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
    print("  * client: the whole phase process, warm-up and imports included")
    print(f"  (all figures: {args.output}; {results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
