"""The `rediswq` command: worker, seed, digest, status, failed, results, runs, local, exporter.
Flags override environment variables."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis

from rediswq.cli import digest, exporter, failed, local, results, runs, seed, status, worker
from rediswq.cli.options import resolve
from rediswq.connection import describe
from rediswq.errors import QueueError, signal_exit

_COMMANDS = (worker, seed, digest, status, failed, results, runs, local, exporter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rediswq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; every error it ends with becomes one line and its exit code here."""
    args = argparse.Namespace()
    try:
        args = build_parser().parse_args(argv)
        resolve(args)
        return int(args.run(args))
    except QueueError as exc:
        error = exc
    except redis.RedisError as exc:
        at = urlsplit(getattr(args, "redis_url", "")).netloc.rpartition("@")[2] or "?"
        error = describe(exc, at)
    except KeyboardInterrupt:  # Ctrl-C before the worker's own handler is in place
        print("rediswq: interrupted", file=sys.stderr)
        return signal_exit(signal.SIGINT)
    print(f"rediswq: error: {error}", file=sys.stderr)
    return error.exit_code
