"""The queue a command works on, from its connection settings."""

from __future__ import annotations

import argparse

from rediswq.connection import Log, connect, wait_until_ready
from rediswq.queue import WorkQueue


def queue_of(
    args: argparse.Namespace,
    *,
    lease_seconds: float = 60.0,
    max_attempts: int = 5,
    require_seal: bool = True,
    run: str | None = None,
    log: Log | None = None,
) -> WorkQueue:
    """The command's queue, once Redis answers (within --redis-wait-timeout)."""
    password = args.redis_password or None
    wait_until_ready(args.redis_url, password, args.redis_wait_timeout)
    return WorkQueue(
        connect(args.redis_url, password, outage=args.redis_outage_timeout, log=log),
        args.queue_name,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        require_seal=require_seal,
        run=run,
    )
