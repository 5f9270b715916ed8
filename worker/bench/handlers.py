"""Handlers for the benchmarks: one INCR a item on the benchmark's Redis (BENCH_REDIS_URL), as a
handler that talks to Redis would; short items and a long tail (fleet.py)."""

from __future__ import annotations

import os
import time

import redis

_db = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], single_connection_client=True)


def incr(item: str) -> None:
    _db.incr("bench:body")


def short_or_long(item: str) -> None:
    """5 ms of work, or 40 s for an item named tail-*: the last items of a run (fleet.py)."""
    time.sleep(40 if item.startswith("tail-") else 0.005)
