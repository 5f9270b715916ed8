"""Seeds the benchmark's queue with a side's own rediswq, so each side reads the keys it wrote.

Usage: python seeder.py REDIS_URL QUEUE ITEMS. It connects and prints "ready", waits for a line on
stdin, then prints the monotonic clock (system-wide on Linux, so the benchmark can time from it),
seeds and seals ITEMS items, and prints "sealed". Both sides' APIs since 6dbef66 take this form.
"""

from __future__ import annotations

import os
import sys
import time

from rediswq.connection import connect
from rediswq.queue import WorkQueue
from rediswq.seeding import seed


def main(url: str, name: str, count: int) -> None:
    queue = WorkQueue(connect(url), name)
    # With TAIL=k, the last k items are named tail-* (handlers.short_or_long works on them long).
    tail = int(os.environ.get("TAIL", "0"))
    payload = [b"item-%d" % n for n in range(count)] + [b"tail-%d" % n for n in range(tail)]
    print("ready", flush=True)
    sys.stdin.readline()
    print(time.monotonic(), flush=True)
    seed(queue, payload)
    print("sealed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
