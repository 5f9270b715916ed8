"""A real Redis over its `maxmemory` with `noeviction`: every write that needs memory is refused."""

from __future__ import annotations

import redis

# The cap: the least Redis takes. A cap at what the server uses now is a race: memory shrinks on
# its own (a client that leaves frees its buffers, tens of KB), and the freed room let a test's
# seed into a "full" Redis.
_CAP = 1


def filled(client: redis.Redis) -> None:
    """Cap the server's memory far below what it uses, then check that a write is refused."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", _CAP)
    try:
        client.set("filler", b"x")
    except redis.OutOfMemoryError:
        return
    raise AssertionError("over maxmemory with noeviction, Redis still accepts writes")
