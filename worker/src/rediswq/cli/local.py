"""`rediswq local`: the whole system here: an embedded Redis, the seed and worker processes."""

from __future__ import annotations

import argparse
import sys

from rediswq.cli.options import Commands, add_settings, argument, at_least_one
from rediswq.handlers import HandlerSpec
from rediswq.local import run_local


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "local", help="run everything here: embedded Redis, seed, workers",
        description="Run the whole system on this machine: start a Redis-compatible server, "
        "seed the items, drain them with worker processes, and print a summary.",
    )  # fmt: skip
    parser.add_argument(
        "--items", default="seed/items.txt", help="items file (default %(default)s)"
    )
    parser.add_argument(
        "--workers", type=argument(at_least_one), default=2,
        help="worker processes (default %(default)s)",
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
        out=sys.stdout,
    )


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
