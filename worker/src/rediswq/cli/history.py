"""`rediswq history`: each attempt's end (item, attempt, outcome, worker, time), kept in Redis
after the worker's pod and its log are gone."""

from __future__ import annotations

import argparse
import json
import os
import time

from rediswq.cli.options import Commands, add_settings, argument, at_least_one
from rediswq.cli.queues import queue_of
from rediswq.history import Entry, entries
from rediswq.leases import shown


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "history", help="list the last attempts: item, outcome, worker, time",
        description="List the last attempts, oldest first: each item's attempt, how it ended "
        "(done, failed, dead-lettered, released on a shutdown, expired when its worker died) and "
        "the worker (in a pod, its name). Redis keeps about the last 10,000.",
    )  # fmt: skip
    parser.add_argument(
        "--count", type=argument(at_least_one), default=20, metavar="N",
        help="how many attempts to list (default 20)",
    )  # fmt: skip
    parser.add_argument("--item", help="only the attempts at this item")
    parser.add_argument("--worker", help="only the attempts of workers whose name starts so")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    add_settings(parser, "history", run=_history)


def _history(args: argparse.Namespace) -> int:
    queue = queue_of(args)
    # The bytes the shell passed: an item that is not UTF-8 is matched as it was queued.
    item = os.fsencode(args.item) if args.item is not None else None
    listed = entries(queue, int(args.count), item, args.worker)
    if args.json:
        print(json.dumps([entry.as_json() for entry in listed], indent=2, ensure_ascii=False))
    elif not listed:
        print(f"No attempts recorded in {queue.keys.name!r}")
    else:
        print("\n".join(_line(entry) for entry in listed))
    return 0


def _line(entry: Entry) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry.time))
    millis = int(entry.time * 1000) % 1000
    return (
        f"{stamp}.{millis:03d}Z  {shown(entry.item)}  attempt {entry.attempt}  "
        f"{entry.outcome}  {entry.worker}"
    )
