"""The batched-Lua reference loop: the least a Redis-side lease can cost, for the benchmark to
compare the worker's prefetching with.

Per round trip, one script hands in the previous batch (ZREM from the deadlines) and leases the
next (LPOP K, then one ZADD of their deadlines). No owner records, no attempts, no reclaim, no
replay memory, no seal: what the worker's lease step adds on top of this is what makes a lease
survive a dead worker or a lost reply.
Usage: python reference.py REDIS_URL QUEUE PREFETCH. It prints "ready" once connected, then waits
for a token on QUEUE:go, as tutorial_baseline.py does, and exits when the list is empty.
"""

from __future__ import annotations

import sys

import redis

STEP = """
if #ARGV > 2 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 3))
end
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then
  return {}
end
local t = redis.call('TIME')
local deadline = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2])
local scored = {}
for i, item in ipairs(items) do
  scored[2 * i - 1] = deadline
  scored[2 * i] = item
end
redis.call('ZADD', KEYS[2], unpack(scored))
return items
"""


def drain(url: str, queue: str, prefetch: int) -> int:
    db = redis.Redis.from_url(url, single_connection_client=True)
    step = db.register_script(STEP)
    keys = [queue, f"{queue}:deadlines"]
    db.ping()
    print("ready", flush=True)
    db.blpop([f"{queue}:go"])
    done = 0
    held: list[bytes] = []
    while True:
        held = step(keys=keys, args=[prefetch, 60_000, *held])
        if not held:
            return done
        done += len(held)  # the no-op handler's work


if __name__ == "__main__":
    print(drain(sys.argv[1], sys.argv[2], int(sys.argv[3])))
