"""The tutorial client library's per-item Redis commands, rewritten by us: the benchmark baseline.

Per item: LLEN of the queue for empty() (the tutorial's `and` checks the processing list only once
the queue is empty), BRPOPLPUSH from the queue to a processing list, SETEX of a lease key; then
LREM from the processing list and DEL of the lease key to complete. Like the tutorial's worker, it
waits in BRPOPLPUSH up to 2 s when the queue is empty but another worker still holds an item.
Usage: python tutorial_baseline.py REDIS_URL QUEUE. It prints "ready" once connected, then waits
for a token on QUEUE:go, so the benchmark's clock leaves out interpreter start-up, as for ours.
"""

from __future__ import annotations

import hashlib
import sys
import uuid

import redis


def drain(url: str, queue: str) -> int:
    db = redis.Redis.from_url(url)
    processing = f"{queue}:processing"
    lease_prefix = f"{queue}:leased_by_session:"
    session = str(uuid.uuid4())
    db.ping()
    print("ready", flush=True)
    db.blpop([f"{queue}:go"])
    done = 0
    while db.llen(queue) != 0 or db.llen(processing) != 0:
        item = db.brpoplpush(queue, processing, timeout=2)
        if not isinstance(item, bytes):  # None: timed out
            continue
        key = lease_prefix + hashlib.sha224(item).hexdigest()
        db.set(key, session, ex=10)  # SETEX, as redis-py sends it today
        db.lrem(processing, 0, item)  # type: ignore[arg-type]  # bytes work; the stubs say str
        db.delete(key)
        done += 1
    return done


if __name__ == "__main__":
    print(drain(sys.argv[1], sys.argv[2]))
