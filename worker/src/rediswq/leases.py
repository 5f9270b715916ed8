"""Keeping leases: a background thread renews the held ones while a handler works on them."""

from __future__ import annotations

import threading

import redis

from rediswq.errors import QueueError, Stopped
from rediswq.logs import Log
from rediswq.queue import Lease, WorkQueue

# How long a stopped worker waits for the renewing thread before it exits.
_STOPPED_WAIT = 1.0


def shown(item: bytes) -> str:
    return item.decode("utf-8", "backslashreplace")


class LeaseKeeper:
    """Renews the held leases in the background while a handler runs long.

    The worker's thread and the keeper's share the held leases without a lock: each touches the
    dict with one operation at a time (an item set or popped, the values copied), which the GIL,
    or a free-threaded build's lock per dict, makes whole. A lock taken on every step cost more
    than the dict's work did.
    """

    def __init__(self, queue: WorkQueue, log: Log) -> None:
        self._queue = queue
        self._log = log
        self._held: dict[int, Lease] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)

    def hold(self, leases: list[Lease]) -> None:
        held = self._held
        for lease in leases:  # a loop, not a generator: a frame less a step
            held[lease.id] = lease

    def holding(self) -> int:
        return len(self._held)

    def drop(self, leases: list[Lease]) -> None:
        held = self._held
        for lease in leases:
            held.pop(lease.id, None)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self, wait: float | None = None) -> None:
        self._stop.set()
        self._thread.join(wait)

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        # Stopped (stops.py): the thread may be in a renewal that waits on a hung Redis for a
        # socket timeout. It is a daemon, and gives up by itself: the exit need not wait.
        self.stop(_STOPPED_WAIT if kind is Stopped else None)

    def _renew(self) -> None:
        interval = self._queue.lease_ms / 3000
        while not self._stop.wait(interval):
            held = list(self._held.values())
            if not held:
                continue
            try:
                kept = self._queue.extend(*held)
            except (redis.RedisError, QueueError) as exc:
                self._log("renew-failed", f"Could not renew leases ({exc}); retrying")
                continue
            # Said once, as it leaves the held ones: renewing it again cannot bring it back. Not
            # said of a lease the worker handed in meanwhile, which is gone from them already.
            lost = [lease for lease, ok in zip(held, kept, strict=True)
                    if not ok and self._held.pop(lease.id, None) is not None]  # fmt: skip
            for lease in lost:
                item = shown(lease.item)
                self._log("lease-lost", f"Lease on {item} was lost; another worker may repeat it",
                          item=item, attempt=lease.attempt)  # fmt: skip
