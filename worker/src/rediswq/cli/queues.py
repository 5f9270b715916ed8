"""The queue a command works on, from its connection settings."""

from __future__ import annotations

import argparse

from rediswq.connection import connect, wait_until_ready
from rediswq.logs import Log
from rediswq.queue import WorkQueue


def queue_of(
    args: argparse.Namespace,
    *,
    lease_seconds: float = 60.0,
    max_attempts: int = 5,
    require_seal: bool = True,
    run: str | None = None,
    log: Log | None = None,
    session: str | None = None,
    outage: float | None = None,
) -> WorkQueue:
    """The command's queue, once Redis answers (within --redis-wait-timeout; with `log`, a
    waiting worker says so); `outage` caps --redis-outage-timeout."""
    password = args.redis_password or None
    wait_until_ready(args.redis_url, password, args.redis_wait_timeout, log)
    if outage is None:
        outage = args.redis_outage_timeout
    return WorkQueue(
        connect(args.redis_url, password, outage=min(outage, args.redis_outage_timeout), log=log),
        args.queue_name,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        require_seal=require_seal,
        run=run,
        session=session,
    )
