"""Where a traced run's server time goes: py-spy samples the MLflow server under the ceiling's load.

    python -m throughput.profile_server [--workers 2] [--seconds 25] [--py-spy PATH]

Starts the same server as `make throughput` (fresh PostgreSQL database), drives it with throughput/ceiling.py,
samples every server process with ``py-spy record --subprocesses --format raw`` and prints the share
of samples spent under each request handler and in the layers below them (database driver, ORM,
serialization, ASGI/WSGI plumbing). py-spy is not a project dependency: ``pip install py-spy==0.4.3``
(anywhere; ``--py-spy`` points at its binary).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from throughput.phase import run_phase
from throughput.services import emulator, fresh_database, mlflow_server

# Frame substrings -> bucket. A sample counts once per bucket whose frame appears in its stack.
HANDLERS = {
    "create_run": "_create_run",
    "log_batch": "_log_batch",
    "update_run (set_terminated)": "_update_run",
    "start_trace (trace info)": "start_trace",
    "log_spans (OTLP /v1/traces)": "log_spans",
    "trace artifact upload": "_upload_artifact",
    "search_runs (the pipeline's per-job reads)": "_search_runs",
}
LAYERS = {
    "psycopg (database round trips)": "psycopg/",
    "sqlalchemy (ORM, pool)": "sqlalchemy/",
    "protobuf/json (de)serialization": "google/protobuf/",
    "flask (WSGI app)": "flask/",
    "starlette/uvicorn (ASGI)": "starlette/",
    "security middleware": "security",
    "logging": "logging/__init__.py",
}


def summarize(raw: Path) -> dict[str, dict[str, float]]:
    """Shares of samples (0-1) per handler and per layer, from py-spy's raw (collapsed) output."""
    total = 0
    active = 0
    handlers: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # Idle workers wait in the event loop's selector or in a thread pool's queue.
        if "select (selectors.py" in stack or "_worker (concurrent/futures/thread.py" in stack.split(";")[-1]:
            continue
        active += count
        for name, needle in HANDLERS.items():
            if needle in stack:
                handlers[name] += count
        for name, needle in LAYERS.items():
            if needle in stack:
                layers[name] += count
    return {
        "samples": {"total": float(total), "busy_share": active / total if total else 0.0},
        "handlers": {name: value / active for name, value in handlers.most_common()} if active else {},
        "layers": {name: value / active for name, value in layers.most_common()} if active else {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--keep", type=Path, help="also copy the raw profile here")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    raw = state / "profile.txt"
    with (
        fresh_database() as database,
        emulator(0.0) as emulator_url,
        mlflow_server(database, state, workers=args.workers) as server,
    ):
        load: dict[str, object] = {}

        def drive() -> None:
            load.update(
                run_phase(
                    "throughput.ceiling",
                    [
                        "--tracking-uri",
                        server.url,
                        "--emulator-url",
                        emulator_url,
                        "--access-log",
                        str(server.log_path),
                        "--threads",
                        str(args.threads),
                        "--seconds",
                        str(args.seconds + 5),
                    ],
                    timeout=args.seconds + 300,
                )
            )

        driver = threading.Thread(target=drive)
        driver.start()
        subprocess.run(
            [
                args.py_spy,
                "record",
                "--pid",
                str(server.process.pid),
                "--subprocesses",
                "--rate",
                str(args.rate),
                "--duration",
                str(args.seconds),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )
        driver.join()
    if args.keep:
        shutil.copy(raw, args.keep)
    summary = summarize(raw)
    print(f"load: {load.get('runs_per_s', 0):.2f} traced runs/s, {load.get('requests')}")
    print(f"samples: {summary['samples']['total']:.0f}, busy {summary['samples']['busy_share']:.0%}")
    for section in ("handlers", "layers"):
        print(f"share of busy server samples, by {section[:-1]}:")
        for name, share in summary[section].items():
            print(f"  {name:<40} {share:6.1%}")


if __name__ == "__main__":
    main()
