"""`rediswq status`: the queue's state as text or JSON, or watched until it is drained."""

from __future__ import annotations

import argparse
import json
import sys

from rediswq.cli.options import Commands, add_settings, argument, positive
from rediswq.cli.queues import queue_of
from rediswq.status import render, snapshot


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "status", help="pending, in flight, done, failed, sealed",
        description="Show the queue at one instant: pending, in flight (holder, attempt, time "
        "left), delayed, done, failed, the seal and its run, and earlier runs.",
    )  # fmt: skip
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON")
    shown.add_argument(
        "--watch",
        action="store_true",
        help="progress, rate and time left until the queue is drained (sealed or not); "
        "plain lines when not a terminal",
    )
    parser.add_argument(
        "--interval", type=argument(positive), default=1.0, metavar="SECONDS",
        help="seconds between two looks with --watch (default 1)",
    )  # fmt: skip
    shown.add_argument(
        "--prometheus", action="store_true", help="the queue's gauges in Prometheus' text format"
    )
    add_settings(parser, "status", run=_status)


def _said(event: str, message: str, /, **fields: object) -> None:
    """What --watch says while Redis is unreachable, apart from its progress lines."""
    print(f"rediswq: {message}", file=sys.stderr, flush=True)


def _status(args: argparse.Namespace) -> int:
    # A watch outlives a Redis restart (it retries for --redis-outage-timeout), but says so
    # at the first failed look and every 30 s, rather than stand still without a word.
    queue = queue_of(args, log=_said if args.watch else None)
    if args.watch:
        # Imported only here: rich's import took 30-50 ms, which every worker would pay.
        from rediswq.cli.watch import watch  # noqa: PLC0415

        watch(queue, sys.stdout, interval=args.interval)
    elif args.json:
        print(json.dumps(snapshot(queue).as_json(), indent=2))
    elif args.prometheus:
        # Imported only here: prometheus_client's import took 70-90 ms on this machine.
        from rediswq.metrics import queue_exposition  # noqa: PLC0415

        sys.stdout.write(queue_exposition(queue))
    else:
        print(render(snapshot(queue), queue.keys))
    return 0
