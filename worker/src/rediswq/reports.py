"""The `failed` and `results` commands: what the dead letters and the results hold, as text or
JSON, and putting dead letters back."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any, NoReturn

from rediswq.deadletter import DeadLetter, DeadLetters
from rediswq.queue import WorkQueue
from rediswq.results import as_json, stored_results

AddConnection = Callable[[argparse.ArgumentParser], None]
QueueOf = Callable[[argparse.Namespace], WorkQueue]


def add_report_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_connection: AddConnection,
    queue_of: QueueOf,
) -> None:
    failed = commands.add_parser(
        "failed", help="list the dead letters, with why; requeue or purge them"
    )
    add_connection(failed)
    # One parser, not sub-commands: a sub-command's defaults would override the connection flags
    # given before it.
    failed.add_argument(
        "action", nargs="?", choices=["list", "requeue", "purge"], default="list",
        help="list (the default); requeue: put back with fresh attempts; purge: drop them all",
    )  # fmt: skip
    failed.add_argument("items", nargs="*", metavar="ITEM", help="the items to requeue")
    failed.add_argument("--all", action="store_true", help="requeue every dead letter")
    failed.add_argument("--json", action="store_true", help="list as JSON")
    failed.set_defaults(run=lambda args: _failed(args, queue_of, failed.error))

    results = commands.add_parser("results", help="export the handlers' results (--results)")
    add_connection(results)
    results.add_argument("--json", action="store_true", help="print JSON")
    results.set_defaults(run=lambda args: _results(args, queue_of(args)))


def _failed(args: argparse.Namespace, queue_of: QueueOf, usage: Callable[[str], NoReturn]) -> int:
    # The bytes the shell passed: an item that is not UTF-8 comes back as it was queued.
    items = [os.fsencode(item) for item in args.items]
    # Usage errors (exit 2), as argparse's own: no retry or setting fixes a command line.
    if args.action == "requeue" and args.all == bool(items):
        usage("failed requeue takes either items or --all")
    if args.action != "requeue" and (items or args.all):
        usage(f"failed {args.action} takes no items and no --all")
    queue = queue_of(args)
    letters = DeadLetters(queue)
    if args.action == "requeue":
        n = letters.requeue(items, every=args.all)
        print(f"Requeued {n} dead letter{'' if n == 1 else 's'} in {queue.keys.name!r}")
        return 0
    if args.action == "purge":
        n = letters.purge()
        print(f"Purged {n} dead letter{'' if n == 1 else 's'} from {queue.keys.name!r}")
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


def _results(args: argparse.Namespace, queue: WorkQueue) -> int:
    exported: list[dict[str, Any]] = [as_json(item, raw) for item, raw in stored_results(queue)]
    exported.sort(key=lambda entry: entry["item"])
    if args.json:
        print(json.dumps(exported, indent=2, ensure_ascii=False))
        return 0
    for entry in exported:
        value = entry.get("result", entry.get("result_base64"))
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        print(f"{entry['item']}\t{shown}")
    return 0
