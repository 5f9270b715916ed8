"""The queue a command works on, from its connection settings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rediswq.clusters import cluster_enabled
from rediswq.connection import connect, wait_until_ready
from rediswq.keys import QueueKeys
from rediswq.logs import Log
from rediswq.queue import WorkQueue
from rediswq.replicas import wanted
from rediswq.sentinels import Sentinels


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
    sentinels = sentinels_in(args)
    wait_until_ready(args.redis_url, password, args.redis_wait_timeout, log, sentinels)
    if outage is None:
        outage = args.redis_outage_timeout
    outage = min(outage, args.redis_outage_timeout)
    client = connect(args.redis_url, password, outage=outage, log=log, sentinels=sentinels)
    # A Redis Cluster: a client of the node that holds the queue's slot instead (clusters.py).
    cluster = sentinels is None and cluster_enabled(client)
    if cluster:
        client.close()
        slot = QueueKeys(args.queue_name, cluster=True).slot
        client = connect(args.redis_url, password, outage=outage, log=log, slot=slot)
    # Resolved once, not per hand-in: `auto` costs an INFO round trip.
    handins = getattr(args, "replicated_handins", False)
    replicas = wanted(client, args.redis_min_replicas) if handins else 0
    return WorkQueue(
        client,
        args.queue_name,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        require_seal=require_seal,
        run=run,
        session=session,
        handin_replicas=replicas,
        cluster=cluster,
    )


def said_on_stderr(*events: str) -> Log:
    """The log of a command that keeps none (seed, runs restore): the lines of `events` only, on
    stderr, so that a wait is explained while the output stays what the command did."""

    def log(event: str, message: str, /, **fields: Any) -> None:
        if event in events:
            print(f"rediswq: {message}", file=sys.stderr, flush=True)

    return log


def sentinels_in(args: argparse.Namespace) -> Sentinels | None:
    """The Sentinels the settings name, or None: then REDIS_URL names the server."""
    if not args.redis_sentinels:
        return None
    return Sentinels(
        args.redis_sentinels, args.redis_sentinel_master, args.redis_sentinel_password or None
    )
