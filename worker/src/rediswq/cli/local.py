"""`rediswq local`: the whole system here: an embedded Redis, the seed and worker processes."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from rediswq.cli.options import Commands, add_settings, argument, at_least_one
from rediswq.handlers import HandlerSpec
from rediswq.local import run_local


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "local", help="run everything here: embedded Redis, seed, workers",
        description="Run the whole system on this machine: start a Redis-compatible server, "
        "seed the items, drain them with worker processes, and print a summary. With --keep "
        "the server stays up afterwards, for status, failed and results.",
    )  # fmt: skip
    parser.add_argument(
        "--items", default="seed/items.txt", help="items file (default %(default)s)"
    )
    parser.add_argument(
        "--workers", type=argument(at_least_one), default=2,
        help="worker processes (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true",
        help="leave the server running with the queue, and print how to reach and stop it",
    )  # fmt: skip
    add_settings(parser, "local", run=_local)


def _local(args: argparse.Namespace) -> int:
    # A bad handler in one line and exit 3, as the worker says it, not once per worker.
    HandlerSpec(args.handler, args.handler_bytes, args.work_seconds).load()
    return run_local(
        args.items,
        workers=int(args.workers),
        queue_name=args.queue_name,
        worker_args=_worker_argv(args),
        results=args.results,
        keep=invoked_as() if args.keep else None,
        out=sys.stdout,
    )


def invoked_as() -> str:
    """How the user ran this command, as they can paste it into the same shell."""
    program = sys.argv[0]
    if Path(program).name == "__main__.py":  # python -m rediswq
        return f"{shlex.quote(sys.executable)} -m rediswq"
    # A path as typed (`.venv/bin/rediswq`, by make) stays as it is; a command found on PATH
    # arrives as its full path, and is shown by its name while PATH still finds that one.
    if os.path.isabs(program) and shutil.which(Path(program).name) == program:
        return Path(program).name
    return shlex.quote(program)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The work flags of `local`, as its workers' command line."""
    argv = [
        "--work-seconds", str(args.work_seconds), "--prefetch", str(int(args.prefetch)),
        "--item-timeout", str(args.item_timeout), "--retry-backoff", str(args.retry_backoff),
        "--results-max-bytes", str(int(args.results_max_bytes)),
        "--results-ttl", str(int(args.results_ttl)), "--max-attempts", str(int(args.max_attempts)),
    ]  # fmt: skip
    if args.handler:
        argv += ["--handler", args.handler]
    if args.handler_bytes:
        argv.append("--bytes")
    if args.results:
        argv.append("--results")
    return argv
