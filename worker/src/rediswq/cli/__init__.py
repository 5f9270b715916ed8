"""The `rediswq` command: worker, seed, digest, status, failed, history, results, runs, local,
exporter. Flags override environment variables."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

import redis

from rediswq.cli import (
    digest,
    exporter,
    failed,
    history,
    local,
    results,
    runs,
    seed,
    status,
    worker,
)
from rediswq.cli.options import resolve
from rediswq.connection import credentials_in, describe
from rediswq.errors import EXIT_USAGE, QueueError, signal_exit

_COMMANDS = (worker, seed, digest, status, failed, history, results, runs, local, exporter)


# The distribution's name: `rediswq` on PyPI is another project.
DISTRIBUTION = "job-wq-2"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rediswq", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"rediswq {_version()} ({DISTRIBUTION})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; every error it ends with becomes one line and its exit code here."""
    args = argparse.Namespace()
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        # The help, but as a usage error: a Job whose args went missing must not succeed.
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        args = parser.parse_args(argv)
        resolve(args)
        code = int(args.run(args))
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return code
    except QueueError as exc:
        error = exc
    except redis.RedisError as exc:
        url = getattr(args, "redis_url", "")
        at = urlsplit(url).netloc.rpartition("@")[2] or "?"
        error = describe(exc, at, credentials=credentials_in(url))
    except KeyboardInterrupt:  # Ctrl-C before the worker's own handler is in place
        print("rediswq: interrupted", file=sys.stderr)
        return signal_exit(signal.SIGINT)
    except BrokenPipeError:
        return _stdout_closed()
    print(f"rediswq: error: {error}", file=sys.stderr)
    return error.exit_code


def _stdout_closed() -> int:
    """Exit as `cat` or `seq` would on a closed pipe (`rediswq failed | head`): silently, with
    the code of a process killed by SIGPIPE.

    Python ignores SIGPIPE and raises instead; stdout is pointed at /dev/null so the
    interpreter's last flush at exit does not raise again (the recipe of Python's `signal` docs).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return signal_exit(signal.SIGPIPE)
