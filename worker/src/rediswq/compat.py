"""Drop-in for the tutorial's client library: `RedisWQ(name, **redis_kwargs)`.

Its worker program runs unchanged on top of our protocol. As in the tutorial, the queue needs no
seal: a queue with nothing pending and nothing leased is finished. Unlike the tutorial's library,
which never reclaimed an item, ours does once its lease expires; so, as our worker does, it renews
the leases a program holds in the background until the program completes them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from rediswq.leases import LeaseKeeper
from rediswq.queue import Lease, State, WorkQueue

_POLL = 0.1
_log = logging.getLogger(__name__)


def _warn(event: str, message: str, /, **fields: object) -> None:
    """The lease keeper's events, through the `logging` a tutorial program configures."""
    _log.warning(message)


class RedisWQ:
    def __init__(self, name: str, **redis_kwargs: Any) -> None:
        self._db = redis.Redis(**redis_kwargs)
        self._name = name
        self._queue = WorkQueue(self._db, name, require_seal=False)
        self._held: dict[bytes, list[tuple[Lease, LeaseKeeper]]] = {}
        self._keepers: dict[float, LeaseKeeper] = {}

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
                keeper = self._keeper(lease_secs)
                keeper.hold([lease])
                self._held.setdefault(lease.item, []).append((lease, keeper))
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
        lease, keeper = held.pop(0)
        if not held:
            del self._held[value]
        keeper.drop([lease])
        return self._queue.complete(lease)[0]

    def _keeper(self, lease_secs: float) -> LeaseKeeper:
        """The thread that renews leases of `lease_secs` (the tutorial always asks for one
        length) while the program works on them, started on first use; it ends with the program.
        """
        keeper = self._keepers.get(lease_secs)
        if keeper is None:
            queue = WorkQueue(
                self._db, self._name, session=self._queue.session, lease_seconds=lease_secs,
                require_seal=False,
            )  # fmt: skip
            keeper = self._keepers[lease_secs] = LeaseKeeper(queue, _warn).start()
        return keeper
