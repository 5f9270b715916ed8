"""`rediswq seed`: queue items from a file (or stdin) and seal the queue for their run."""

from __future__ import annotations

import argparse

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.runs import checked, run_id
from rediswq.seeding import read_items, seed


def add_command(commands: Commands) -> None:
    parser = commands.add_parser("seed", help="queue items from a file (or stdin), seal the queue")
    parser.add_argument("file", nargs="?", default="-", help="one item per line; - for stdin")
    parser.add_argument(
        "--reset", action="store_true", help="drop the current run (items, counters), then seed"
    )
    add_settings(parser, "seed")
    parser.set_defaults(run=_seed)


def _seed(args: argparse.Namespace) -> int:
    items = read_items(args.file)
    run = checked(args.run_id, "run id (--run-id, RUN_ID)") if args.run_id else None
    run = run or run_id(items, args.run_label)
    queue = queue_of(args)
    queue.check_types()
    result = seed(queue, items, reset=args.reset, run=run)
    for line in result.report(args.queue_name):
        print(line)
    return 0
