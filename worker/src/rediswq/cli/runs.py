"""`rediswq runs restore`: put back what a superseded run left undone."""

from __future__ import annotations

import argparse

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of, said_on_stderr
from rediswq.replicas import replicated
from rediswq.runs import restore


def add_command(commands: Commands) -> None:
    runs = commands.add_parser(
        "runs", help="what earlier runs left: put it back",
        description="Act on what earlier runs of the queue left behind.",
    )  # fmt: skip
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    restorer = runs_commands.add_parser(
        "restore", help="put back the items a superseded run left undone",
        description="Put the items a superseded run left undone back in the queue, behind "
        "what is pending now, each with its attempt count, for the current run's workers.",
    )  # fmt: skip
    restorer.add_argument("run_id", metavar="RUN", help="the run id, as seed and status show it")
    add_settings(restorer, "runs", run=_restore)


def _restore(args: argparse.Namespace) -> int:
    queue = queue_of(args, log=said_on_stderr("redis-no-replicas"))
    count = restore(queue, args.run_id)
    replicated(queue.client, args.redis_min_replicas, args.redis_outage_timeout)
    print(f"Restored {count} items of run {args.run_id} into {args.queue_name!r}")
    return 0
