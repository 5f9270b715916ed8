"""Telling a lost queue from one not sealed yet: once a worker has seen the seal, a queue with no
seal (nothing pending, nothing leased), or leases that vanished with the seal, means Redis lost
the queue (it restarted without persistence, or the keys were deleted). Waiting for a seal that
came long ago would end, after the seal timeout, by blaming the seed.
"""

from __future__ import annotations

import time

from rediswq.connection import where
from rediswq.errors import QueueError
from rediswq.queue import State, Step, WorkQueue

# A worker that has not seen the seal yet asks at most this often (one round trip).
_ASK_EVERY = 1.0


class QueueLost(QueueError):
    """Redis no longer holds a queue this worker saw sealed."""


class SealWatch:
    """Remembers whether the worker has seen its queue sealed; raises QueueLost when it is gone."""

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue
        self._seen = False
        self._next_ask = 0.0

    def check(self, step: Step) -> None:
        """Note what a step returned; raise QueueLost if it shows the queue gone."""
        self._completed(step.completed)
        self._observe(step.state)

    def _observe(self, state: State) -> None:
        """'unsealed' after the seal was seen is a lost queue."""
        if self._seen:
            if state is State.UNSEALED:
                raise self._lost("the seal is gone and nothing is pending or leased")
            return
        # "other-run" is a seal too, but not ours; until ours is seen, only a look tells.
        if not self._queue.require_seal or state in (State.UNSEALED, State.OTHER_RUN):
            return
        now = time.monotonic()
        if now >= self._next_ask:
            self._next_ask = now + _ASK_EVERY
            self._seen = self._queue.is_sealed()

    def _completed(self, flags: list[bool]) -> None:
        """Every handed-in lease gone, with the seal, is a lost queue."""
        if self._seen and flags and not any(flags) and not self._queue.is_sealed():
            raise self._lost(f"the seal and the {len(flags)} lease(s) this worker held are gone")

    def _lost(self, what: str) -> QueueLost:
        queue = self._queue
        return QueueLost(
            f"Redis at {where(queue.client)} lost queue {queue.keys.name!r}: {what}, though this "
            "worker saw it sealed (did Redis restart without persistence?); what was not done "
            "is gone: seed it again"
        )
