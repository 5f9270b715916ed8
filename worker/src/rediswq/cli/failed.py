"""`rediswq failed`: the dead letters, with why; requeue or purge them."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import NoReturn

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.deadletter import DeadLetter, DeadLetters


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "failed", help="list the dead letters, with why; requeue or purge them",
        description="List the dead letters (items whose attempts ran out, or rejected) with "
        "their last error, traceback, attempts, time and worker; requeue them with fresh "
        "attempts, or purge them.",
    )  # fmt: skip
    # One parser, not sub-commands: a sub-command's defaults would override the connection flags
    # given before it.
    parser.add_argument(
        "action", nargs="?", choices=["list", "requeue", "purge"], default="list",
        help="list (the default); requeue ITEM... or --all: put back with fresh attempts; "
        "purge ITEM... or --all: drop them (purge alone drops every one)",
    )  # fmt: skip
    parser.add_argument(
        "items", nargs="*", metavar="ITEM", help="the dead letters to requeue or purge"
    )
    parser.add_argument("--all", action="store_true", help="requeue or purge every dead letter")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    add_settings(parser, "failed", run=lambda args: _failed(args, parser.error))


def _failed(args: argparse.Namespace, usage: Callable[[str], NoReturn]) -> int:
    # The bytes the shell passed: an item that is not UTF-8 comes back as it was queued.
    items = [os.fsencode(item) for item in args.items]
    # Usage errors (exit 2), as argparse's own: no retry or setting fixes a command line.
    if args.action == "requeue" and args.all == bool(items):
        usage("failed requeue takes either items or --all")
    if args.action == "purge" and args.all and items:
        usage("failed purge takes either items or --all")
    if args.action == "list" and (items or args.all):
        usage("failed list takes no items and no --all")
    queue = queue_of(args)
    letters = DeadLetters(queue)
    if args.action in ("requeue", "purge"):
        if args.action == "requeue":
            n = letters.requeue(items, every=args.all)
            said = f"Requeued {n} dead letter{'' if n == 1 else 's'} in {queue.keys.name!r}"
        else:
            n = letters.purge(items)
            said = f"Purged {n} dead letter{'' if n == 1 else 's'} from {queue.keys.name!r}"
        # Its one request is answered: the session's replay memory goes now, not at the next
        # seal, which a queue requeued from by hand or by a cron job may never see (queue.py).
        # Except a purge of every dead letter: a late copy of it, run anew without its memory,
        # would drop letters that failed since, unseen; its one entry waits for the next seal.
        if not (args.action == "purge" and not items):
            queue.end_session()
        print(said)
        return 0
    listing = letters.listing()
    if args.json:
        print(json.dumps([letter.as_json() for letter in listing], indent=2))
    elif not listing:
        print(f"No dead letters in {queue.keys.name!r}")
    else:
        print("\n\n".join(_rendered(letter) for letter in listing))
    return 0


def _rendered(letter: DeadLetter) -> str:
    lines = [f"{letter.item!r}: {letter.error}"]
    if letter.attempts is not None and letter.time is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(letter.time))
        lines.append(f"  after {letter.attempts} attempt(s), {when}, on {letter.worker}")
    lines += [f"  | {line}" for line in letter.traceback.splitlines()]
    return "\n".join(lines)
