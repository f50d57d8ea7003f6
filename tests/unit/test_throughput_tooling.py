"""The throughput tooling counts what it claims to (throughput/access_log.py, throughput/phase.py, report.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from throughput.access_log import AccessLog, classify, count_lines
from throughput.ceiling import traced_runs_completed
from throughput.phase import emit_result, parse_result
from throughput.report import cpu_line, import_lines, split_per_record
from throughput.services import pin_process_group, split_cpus

# Lines as MLflow 3.17's uvicorn writes them (copied from a real server's log).
RUN_LINES = [
    '2026/11/28 13:22:44 INFO:     127.0.0.1:32916 - "GET /health HTTP/1.1" 200 OK',
    '2026/11/28 13:22:44 INFO:     127.0.0.1:32918 - "POST /api/2.0/mlflow/runs/create HTTP/1.1" 200 OK',
    '2026/11/28 13:22:44 INFO:     127.0.0.1:32918 - "POST /api/2.0/mlflow/runs/log-batch HTTP/1.1" 200 OK',
    '2026/11/28 13:22:44 INFO:     127.0.0.1:32918 - "POST /api/2.0/mlflow/runs/update HTTP/1.1" 200 OK',
]
TRACE_LINES = [
    '2026/11/28 13:22:45 INFO:     127.0.0.1:32920 - "POST /api/3.0/mlflow/traces HTTP/1.1" 200 OK',
    '2026/11/28 13:22:45 INFO:     127.0.0.1:32920 - "POST /v1/traces HTTP/1.1" 200 OK',
    "2026/11/28 13:22:45 INFO:     127.0.0.1:32920 - "
    '"PUT /api/2.0/mlflow-artifacts/artifacts/1/traces/tr-0a1b2c/artifacts/traces.json HTTP/1.1" 200 OK',
]


def test_given_server_paths_when_classified_then_traces_runs_and_health_are_told_apart() -> None:
    """Given request paths of each kind, When classified, Then trace export, run and ignored differ."""
    assert classify("/api/2.0/mlflow/runs/create") == "run"
    assert classify("/api/2.0/mlflow/experiments/get-by-name?experiment_name=x") == "run"
    assert classify("/api/3.0/mlflow/traces") == "trace"
    assert classify("/v1/traces") == "trace"
    assert classify("/api/2.0/mlflow-artifacts/artifacts/1/traces/tr-1/artifacts/traces.json") == "trace"
    assert classify("/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/summary.json") == "run"
    assert classify("/health") == "ignored"
    assert classify("/static-files/index.html") == "ignored"


def test_given_an_access_log_when_counted_since_a_mark_then_only_later_requests_count(tmp_path: Path) -> None:
    """Given a log with requests before and after a mark, When counted since the mark,
    Then only the later ones count, by kind and by endpoint, with errors and non-request lines apart."""
    log_file = tmp_path / "mlflow.log"
    log_file.write_text("\n".join(RUN_LINES) + "\n")
    log = AccessLog(log_file)
    mark = log.mark()
    with log_file.open("a") as handle:
        handle.write("2026/11/28 13:22:45 INFO mlflow.store: not a request line\n")
        handle.write("\n".join(RUN_LINES + TRACE_LINES) + "\n")
        handle.write(
            'x INFO:     127.0.0.1:1 - "GET /api/2.0/mlflow/runs/get?run_id=1 HTTP/1.1" 404 Not Found\n'
        )

    counts = log.since(mark)

    assert (counts.run, counts.trace, counts.errors) == (4, 3, 1)
    assert counts.endpoints["POST runs/create"] == 1
    assert counts.endpoints["PUT artifacts/{id}/traces/{trace}/artifacts/traces.json"] == 1
    assert counts.per(2) == {"run": 2.0, "trace": 1.5}
    summary = counts.summary(top=1)
    assert summary["requests"] == {"run": 4, "trace": 3, "errors": 1}
    assert len(summary["endpoints"]) == 1


def test_given_a_window_between_two_marks_when_counted_then_only_its_traced_runs_count(
    tmp_path: Path,
) -> None:
    """Given runs before, inside and after a window, and inside it one run whose trace is still queued,
    When the window is counted, Then only runs finished and traced inside it count."""
    log_file = tmp_path / "mlflow.log"
    log_file.write_text("\n".join(RUN_LINES + TRACE_LINES) + "\n")
    log = AccessLog(log_file)
    start = log.mark()
    with log_file.open("a") as handle:
        handle.write("\n".join(RUN_LINES * 3 + TRACE_LINES * 2) + "\n")  # 3 runs ended, 2 traces in
    end = log.mark()
    with log_file.open("a") as handle:
        handle.write("\n".join(TRACE_LINES + RUN_LINES) + "\n")

    window = log.between(start, end)

    assert (window.run, window.trace) == (9, 6)
    assert traced_runs_completed(window) == 2
    assert traced_runs_completed(log.since(start)) == 3  # 4 runs ended, 3 traces in


def test_given_no_lines_when_counted_then_everything_is_zero() -> None:
    """Given no access lines, When counted, Then nothing is counted."""
    counts = count_lines([])
    assert (counts.run, counts.trace, counts.errors, sum(counts.endpoints.values())) == (0, 0, 0, 0)


def test_given_a_phase_output_when_parsed_then_its_last_result_line_is_returned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given a phase that logs and emits a result, When its output is parsed, Then the result comes back."""
    print("some log line")
    emit_result({"name": "x", "runs_per_s": 7.5})
    assert parse_result(capsys.readouterr().out) == {"name": "x", "runs_per_s": 7.5}
    with pytest.raises(ValueError):
        parse_result("no result here\n")


def test_given_pipeline_endpoints_when_split_then_per_record_and_per_job_requests_separate() -> None:
    """Given 100 records (3 requests each) plus a job's own requests, When split,
    Then 3 per record and the job's fixed requests (its parent run's 3 included) come apart."""
    endpoints = {
        "POST runs/create": 101,
        "POST runs/log-batch": 101,
        "POST runs/update": 101,
        "POST traces": 100,
        "GET experiments/get-by-name": 1,
        "POST runs/search": 1,
    }
    per_record, per_job = split_per_record(endpoints, run_requests=305, records=100)
    assert per_record == 3.0
    assert per_job == 5


def test_given_cpus_when_split_then_the_server_gets_half_and_the_rest_the_other_half() -> None:
    assert split_cpus({0}) is None
    assert split_cpus({0, 1}) == ({0}, {1})
    assert split_cpus({4, 5, 6, 7, 8}) == ({4, 5}, {6, 7, 8})


def test_given_a_process_group_when_pinned_then_every_thread_of_every_process_is_on_those_cpus() -> None:
    # A server stand-in: its own process group, a child process, and a thread started before pinning.
    script = (
        "import subprocess, sys, threading, time;"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start();"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);"
        "print('ready', flush=True); time.sleep(30)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        target = {min(os.sched_getaffinity(0))}
        pinned = pin_process_group(process.pid, target)
        assert pinned >= 3  # main thread + sleeper thread + the child's main thread
        group = [pid for pid in _live_pids() if _pgid(pid) == process.pid]
        assert len(group) == 2
        for pid in group:
            for task in Path(f"/proc/{pid}/task").iterdir():
                assert os.sched_getaffinity(int(task.name)) == target
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _live_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError):
        return None  # ended meanwhile


def test_given_a_phase_with_warm_up_when_cpu_is_reported_then_every_record_of_the_phase_divides_it() -> None:
    # CPU is read over the whole phase: 50 warm-up and tail records beside the 100 the rate counts.
    result = {"cpu_seconds": {"mlflow_server": 15.0, "postgres": 3.0, "moto": 0.0, "client": 1.5}}
    assert cpu_line({**result, "records_in_phase": 150}, 100).endswith("  100 / 20 / 0 / 10   ")
    assert cpu_line(result, 100).endswith("  150 / 30 / 0 / 15   ")


def test_given_py_spy_samples_when_reported_then_each_handler_gets_its_ms_per_record(tmp_path: Path) -> None:
    from throughput.profile_server import summarize
    from throughput.report import profile_lines

    raw = tmp_path / "profile.txt"
    raw.write_text(
        "process 1;serve (uvicorn.py:1);select (selectors.py:469) 100\n"  # idle: not counted
        "process 1;handle (server.py:9);_log_batch (handlers.py:20);execute (psycopg/cursor.py:7) 30\n"
        "process 1;handle (server.py:9);start_trace (handlers.py:40) 20\n"
    )
    # 50 busy samples at 50 Hz over 2 records: 500 ms each, 60 % under log_batch, 40 % under StartTrace.
    result = {"records_in_phase": 2, "server_profile": {**summarize(raw), "rate": 50}}
    lines = profile_lines(result, 99)
    assert lines[0].split()[-1] == "500"
    by_handler = {line.strip().rsplit(maxsplit=1)[0]: line.split()[-1] for line in lines[1:]}
    assert by_handler == {"log_batch": "300", "start_trace (trace info)": "200"}
    assert profile_lines({"records_in_phase": 2}, 2) == []  # no --py-spy: no lines


def test_given_import_times_when_reported_then_only_the_import_as_deployed_is_held_to_the_target() -> None:
    full = "import mlflow (full, .venv)"
    deployed = "import handlers.runner (deployed bundle, Python 3.12, with its bytecode)"
    compiled = "import handlers.runner (skinny bundle, bytecode compiled)"
    venv = "import handlers.runner (.venv)"
    lines = import_lines({full: 2.0, deployed: 1.0, compiled: 1.4, venv: 2.2})
    ratios = [line for line in lines if "handler / full mlflow" in line]
    assert len(ratios) == 3
    assert ratios[0].split()[-4:] == ["0.50", "<=", "0.6", "ok"] and "with its bytecode" in ratios[0]
    assert all(line.endswith("(for reference)") for line in ratios[1:])
    # Without Python 3.12 here the skinny bundle with bytecode carries the target, and can miss it.
    (targeted, _) = [
        line for line in import_lines({full: 2.0, compiled: 1.4, venv: 2.2}) if "handler /" in line
    ]
    assert "bytecode compiled" in targeted and targeted.endswith("MISSED")


def test_given_a_batch_collector_phase_when_reported_then_its_rate_stands_beside_the_pipelines() -> None:
    from throughput.report import batch_collector_lines

    batch = {
        "records": 10_000,
        "records_per_s": 40.0,
        "seconds_to_collected": 3.0,
        "seconds_recording": 250.0,
    }
    lines = batch_collector_lines(batch, {"prompts_per_s": 20.0})
    assert "40.00 records/s" in lines[0] and "10000 records" in lines[0]
    assert "2.00x" in lines[-1]
    assert batch_collector_lines(None, {"prompts_per_s": 20.0}) == []
    assert len(batch_collector_lines(batch, None)) == 2
