"""Drop-in for the tutorial's client library: `RedisWQ(name, **redis_kwargs)`.

Its worker program runs unchanged on top of our protocol. As in the tutorial, the queue needs no
seal: a queue with nothing pending and nothing leased is finished.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from rediswq.queue import Lease, State, WorkQueue

_POLL = 0.1


class RedisWQ:
    def __init__(self, name: str, **redis_kwargs: Any) -> None:
        self._db = redis.Redis(**redis_kwargs)
        self._queue = WorkQueue(self._db, name, require_seal=False)
        self._held: dict[bytes, list[Lease]] = {}

    def sessionID(self) -> str:
        return self._queue.session

    def empty(self) -> bool:
        return self._queue.is_empty()

    def lease(
        self, lease_secs: float = 60, block: bool = True, timeout: float | None = None
    ) -> bytes | None:
        """An item, or None if there is none (after `timeout` seconds when blocking)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = self._queue.step(1, lease_seconds=lease_secs)
            if step.leases:
                lease = step.leases[0]
                self._held.setdefault(lease.item, []).append(lease)
                return lease.item
            if not block or step.state is State.DRAINED:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(_POLL)

    def complete(self, value: bytes) -> bool:
        """Mark a leased item done; False if this session no longer held it."""
        held = self._held.get(value)
        if not held:
            return False
        lease = held.pop(0)
        if not held:
            del self._held[value]
        return self._queue.complete(lease)[0]
