"""``python -m local_stack up|down|status|ui|restart <service>``: the offline twin from a shell (``make up`` etc.)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import webbrowser
from collections.abc import Sequence

from local_stack.config import LocalStackConfig
from local_stack.mlflow_server import MlflowServerOptions, run_mlflow_foreground
from local_stack.processes import ServiceStartError, http_ok
from local_stack.running import (
    SERVICE_ORDER,
    read_pids,
    restart_service,
    stack_is_up,
    stack_status,
    stop_stack,
)
from local_stack.stack import LocalStack


def _print_status(config: LocalStackConfig) -> bool:
    statuses = stack_status(config)
    for status in statuses:
        where = status.url or (f"port {status.port}" if status.port else "")
        pid = f"pid {status.pid}" if status.pid else ""
        note = "  (started by hand: `make down` leaves it running)" if status.adopted else ""
        print(f"  {status.name:<17} {status.state:<10} {where:<28} {pid}{note}")
    return all(status.state == "up" for status in statuses)


def cmd_up(config: LocalStackConfig) -> int:
    if stack_is_up(config):
        print(f"The local stack is already up (state in {config.state_dir}); `make down` stops it.")
        _print_status(config)
        return 0
    print("Starting the local stack (moto, MLflow, Bedrock emulator, event pump)...", flush=True)
    stack = LocalStack(config)
    try:
        stack.start()
    except ServiceStartError as error:
        print(f"The local stack did not start:\n{error}", file=sys.stderr)
        return 1
    print(f"Up in {stack.startup_seconds:.1f} s. Logs in {stack.logs_dir}/")
    for process in stack.processes:
        adopted = "  (already running: adopted, `make down` leaves it running)" if process.adopted else ""
        print(f"  {process.name:<17} {process.url or '(no port)':<28} pid {process.pid}{adopted}")
    if not stack.with_emulator:
        print("  (Bedrock emulator not available: local_stack/bedrock_emulator has no __main__.py yet)")
    print("\nPoint boto3, the handlers and MLflow at it:")
    for name, value in stack.env.items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"\nMLflow UI: {stack.mlflow_url}   Stop with `make down` (python -m local_stack down).")
    return 0


def cmd_down(config: LocalStackConfig) -> int:
    if not read_pids(config.state_dir):
        print("The local stack is not running (no pids.json).")
        return 0
    report = stop_stack(config)
    print(f"Stopped: {', '.join(report.stopped) if report.stopped else 'nothing was still running'}.")
    if report.left_running:
        print(f"Left running (started by hand, adopted by `make up`): {', '.join(report.left_running)}.")
    if report.busy_ports:
        print(f"error: port(s) {', '.join(map(str, report.busy_ports))} still in use", file=sys.stderr)
        return 1
    return 0


def cmd_restart(config: LocalStackConfig, service: str) -> int:
    try:
        process = restart_service(config, service)
    except ServiceStartError as error:
        print(f"{service} did not restart:\n{error}", file=sys.stderr)
        return 1
    print(f"Restarted {service}: pid {process.pid} {process.url or ''}".rstrip())
    return 0


def cmd_status(config: LocalStackConfig) -> int:
    print(f"Local stack (state in {config.state_dir}):")
    all_up = _print_status(config)
    return 0 if all_up or not stack_is_up(config) else 1


def cmd_ui(config: LocalStackConfig) -> int:
    recorded = {process.name: process for process in read_pids(config.state_dir)}
    mlflow = recorded.get("mlflow")
    if mlflow is not None and mlflow.is_alive() and http_ok(f"{config.mlflow_url}/health"):
        print(f"MLflow UI (local stack): {config.mlflow_url}")
        _open_browser(config.mlflow_url)
        return 0
    options = MlflowServerOptions(
        port=config.mlflow_port, state_dir=config.state_dir, backend_store_uri=config.mlflow_backend_uri
    )
    print(
        f"MLflow UI on the local store ({options.resolved_backend_store_uri()}): {options.url}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    _open_browser(options.url)
    return run_mlflow_foreground(options)


def _open_browser(url: str) -> None:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        webbrowser.open(url)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "ui", "restart"])
    parser.add_argument("service", nargs="?", choices=SERVICE_ORDER, help="for restart: which service")
    args = parser.parse_args(argv)
    config = LocalStackConfig()
    if args.command == "restart":
        if args.service is None:
            parser.error(f"restart needs a service: one of {', '.join(SERVICE_ORDER)}")
        return cmd_restart(config, args.service)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "ui": cmd_ui}
    return commands[args.command](config)


if __name__ == "__main__":
    raise SystemExit(main())
