"""A task body for the benchmark: one INCR on the benchmark's Redis per item, as a handler that
talks to Redis would. BENCH_REDIS_URL names the server."""

from __future__ import annotations

import os

import redis

_db = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], single_connection_client=True)


def incr(item: str) -> None:
    _db.incr("bench:body")
