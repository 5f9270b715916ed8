"""Durable acknowledgements: a command that must not be undone by a failover (the seal of a run,
a supersede, a restore) returns only once replicas hold what it wrote.

Replication is asynchronous: a primary acknowledges a write before any replica has it, and a
replica promoted after the primary dies lacks what it had not received. For most writes that
costs a repeat (a completion lost is an item done again). For a seal it would cost the run: the
seed Job is Complete and no one seeds again. Redis's WAIT blocks until the replicas have
acknowledged every write the connection made, so the seed waits for it before exiting 0.
"""

from __future__ import annotations

import time

import redis

from rediswq.errors import QueueError

AUTO = -1  # REDIS_MIN_REPLICAS=auto: 1 if the primary has a replica, else 0
# One WAIT blocks the connection for at most this long: a longer one would outlast the client's
# socket timeout, which would read as a lost server.
_WAIT_SLICE = 1.0


def replica_count(text: str) -> int:
    """REDIS_MIN_REPLICAS: "auto", or a whole number of replicas, 0 for none."""
    if text.strip().lower() == "auto":
        return AUTO
    if not text.strip().isdigit():
        raise ValueError("expected auto or a whole number of replicas, 0 for none")
    return int(text)


def connected_replicas(client: redis.Redis) -> int:
    """How many replicas the primary has connected now (INFO replication)."""
    info = client.info("replication")
    return int(info.get("connected_slaves", 0))


def wanted(client: redis.Redis, setting: int) -> int:
    """The replicas to wait for under REDIS_MIN_REPLICAS `setting`."""
    return min(1, connected_replicas(client)) if setting == AUTO else setting


def acknowledged(client: redis.Redis, count: int, timeout: float = _WAIT_SLICE) -> int:
    """How many replicas hold every write `client` made, once `count` do or `timeout` passed."""
    return int(client.wait(count, max(1, round(min(timeout, _WAIT_SLICE) * 1000))))


def replicated(client: redis.Redis, setting: int, timeout: float) -> int:
    """Return once the replicas asked for by `setting` hold every write `client` made, waiting up
    to `timeout` seconds; how many did. Raises a QueueError if too few did by then: the caller
    must not report its writes as safe, and a retry of the command (the Job's) is harmless."""
    need = wanted(client, setting)
    if need == 0:
        return 0
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        got = acknowledged(client, need, left)
        if got >= need:
            return got
        if time.monotonic() >= deadline:
            raise QueueError(
                f"only {got} of the {need} replicas asked for (REDIS_MIN_REPLICAS) acknowledged "
                f"the write within {timeout:g}s (REDIS_OUTAGE_TIMEOUT); it may not survive a "
                "failover: run the command again once the replicas are back"
            )
