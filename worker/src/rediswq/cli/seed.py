"""`rediswq seed`: queue items from a file, stdin or a URL and seal the queue for their run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of, said_on_stderr
from rediswq.replicas import replicated
from rediswq.seeding import planned, seed


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "seed", help="queue items from a file, stdin or a URL, seal the queue",
        description="Queue the items of a file, stdin or a URL, one a line, and seal the queue "
        "for their run, so that workers know the list is complete. Seeding the same run again "
        "changes nothing; a new run ends or supersedes the one before.",
    )  # fmt: skip
    parser.add_argument(
        "file", nargs="?",
        help="one item per line, gzip or not; - for stdin (the default unless it is a "
        "terminal); or an http(s):// URL (needs ITEMS_SHA256)",
    )  # fmt: skip
    parser.add_argument(
        "--reset", action="store_true", help="drop the current run (items, counters), then seed"
    )
    add_settings(parser, "seed", run=lambda args: _seed(args, parser.error))


def _seed(args: argparse.Namespace, usage: Callable[[str], NoReturn]) -> int:
    if sys.stdin.isatty():
        if args.file is None:
            usage("no items file, and stdin is a terminal: give a FILE, pipe the items in, or - "
                  "to type them")  # fmt: skip
        if args.file == "-":
            print("rediswq: reading items from the terminal, one a line; end with Ctrl-D",
                  file=sys.stderr)  # fmt: skip
    items, run = planned(args.file or "-", args.items_sha256, args.run_id, args.run_label)
    queue = queue_of(args, log=said_on_stderr("redis-no-replicas"))
    queue.check_types()
    result = seed(queue, items, reset=args.reset, run=run)
    # Also when the queue was already sealed: this seed may be the retry of one whose seal a
    # replica never acknowledged, and exiting 0 ends the seed Job.
    replicated(queue.client, args.redis_min_replicas, args.redis_outage_timeout)
    for line in result.report(queue.keys):
        print(line)
    return 0
