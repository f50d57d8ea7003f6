"""What the CLI tells a user when something is wrong: one line on stderr, never a traceback unless --debug.

Exit codes: 2 for a usage error (a wrong argument or file: fix the command), 1 for a failure (the
job was rejected or failed, a gate was not met, a service could not be reached).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report in one line (its message says what is wrong and what to do)."""

    exit_code = EXIT_FAILURE


class UsageError(CliError):
    exit_code = EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the verb's --help (subparsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def read_input(path: str, what: str) -> bytes:
    """A file the user named, or a UsageError saying what is wrong with the path."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{path} is a directory: give the path of {what}")
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path} (give the path of {what})") from None
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def describe(exc: BaseException) -> str:
    """An unexpected exception as one line that says what to do."""
    if isinstance(exc, EndpointConnectionError):
        return (
            f"cannot reach {exc.kwargs.get('endpoint_url', 'the service')}: is the local stack up "
            "(`make up`)? For the deployed stack add --aws"
        )
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return f"{exc}: set AWS credentials and region (or leave out --aws to use the local stack)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        hint = (
            " (is the local stack up? `make up`)" if code.startswith(("NoSuch", "ResourceNotFound")) else ""
        )
        return f"{code}: {error.get('Message', exc)}{hint}"
    if isinstance(exc, ConnectionError | OSError) and "Connection refused" in str(exc):
        return f"connection refused ({exc}): is the local stack up (`make up`)?"
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"


def report(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
