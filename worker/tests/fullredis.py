"""A real Redis at its `maxmemory` with `noeviction`: every write that needs memory is refused."""

from __future__ import annotations

import redis

# Bytes a filler write adds; small next to what a test queues, large next to the few bytes that
# used_memory drifts by between two reads (client buffers grow and shrink on their own).
_FILLER = b"x" * 1000


def filled(client: redis.Redis) -> None:
    """Cap the server's memory at what it uses now, then write until a write is refused.

    Capping at INFO's used_memory alone is a race: under load, memory can shrink after the read
    and leave room for a write or two, so the test's "full" Redis would accept what it refuses.
    """
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"])
    for n in range(1000):
        try:
            client.set(f"filler-{n}", _FILLER)
        except redis.OutOfMemoryError:
            return
    raise AssertionError("1 MB past used_memory, Redis still accepts writes: maxmemory is not set")
