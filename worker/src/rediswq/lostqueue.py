"""Telling a lost queue from one not sealed yet: once a worker has seen the seal, a queue with no
seal (nothing pending, nothing leased), or leases that vanished with the seal, means Redis lost
the queue (it restarted without persistence, or the keys were deleted). Waiting for a seal that
came long ago would end, after the seal timeout, by blaming the seed.

And telling a queue filled by hand: the seed publishes its items and seals in one step, so a
worker that requires a seal and is handed items while there is none is draining a queue that
someone fills with RPUSH. It could never tell when that queue is finished, so it stops at once,
before working on anything, with a configuration error (exit 3: another pod would stop the same
way) that says to use --no-seal; waiting for a seal after doing the work would fail the run late.
"""

from __future__ import annotations

import time

from rediswq.connection import where
from rediswq.errors import ConfigError, QueueError
from rediswq.queue import State, Step, WorkQueue

# A worker that has not seen the seal yet asks at most this often (one round trip).
_ASK_EVERY = 1.0


class QueueLost(QueueError):
    """Redis no longer holds a queue this worker saw sealed."""


class HandFilled(ConfigError):
    """A worker that requires a seal was handed items from a queue that has none."""


class SealWatch:
    """Remembers whether the worker has seen its queue sealed; raises QueueLost when it is gone."""

    def __init__(self, queue: WorkQueue, *, sealed: bool = False) -> None:
        """`sealed`: the queue was sealed as the worker started (WorkQueue.checked)."""
        self._queue = queue
        self._seen = False
        self._next_ask = 0.0
        if sealed:
            self.saw_seal()

    def saw_seal(self) -> None:
        """The queue was sealed: at the worker's start, or by the seal it woke to ("sealed", which
        the seal publishes). Not a run's worker's proof: the seal may be another run's, and its
        own is told by what lease.lua hands it."""
        if self._queue.run_id is None:
            self._seen = True

    def check(self, step: Step) -> None:
        """Note what a step returned; raise QueueLost if it shows the queue gone, HandFilled
        (after putting back what the step leased) if it shows a queue filled by hand."""
        if self._seen:
            flags = step.completed
            # Every handed-in lease gone, with the seal, is a lost queue.
            if flags and not any(flags) and not self._queue.is_sealed():
                raise self._lost(
                    f"the seal and the {len(flags)} lease(s) this worker held are gone"
                )
            if step.state is State.UNSEALED:
                raise self._lost("the seal is gone and nothing is pending or leased")
        elif not self._unseen_ok(step.state) and step.state is not State.DRAINED:
            if step.leases:
                self._queue.release(*step.leases, failed=False)
            raise self._hand_filled(len(step.leases))

    def _unseen_ok(self, state: State) -> bool:
        """Before the seal was seen: False if the queue was just found unsealed though it has
        work (a run's worker is never handed any: lease.lua)."""
        # "other-run" is a seal too, but not ours; until ours is seen, only a look tells.
        if not self._queue.require_seal or state in (State.UNSEALED, State.OTHER_RUN):
            return True
        if self._queue.run_id is not None:  # lease.lua hands it work only under its run's seal
            self._seen = True
            return True
        now = time.monotonic()
        if now >= self._next_ask:
            self._next_ask = now + _ASK_EVERY
            self._seen = self._queue.is_sealed()
            return self._seen
        return True

    def _hand_filled(self, leased: int) -> HandFilled:
        name = self._queue.keys.name
        back = f"; the {leased} item(s) this worker leased are back in it" if leased else ""
        return HandFilled(
            f"queue {name!r} has items but no seal: it was filled by hand (RPUSH), and a worker "
            "that requires a seal could never tell when it is finished; start the workers with "
            f"--no-seal (REQUIRE_SEAL=false), or fill the queue with `rediswq seed`{back}"
        )

    def _lost(self, what: str) -> QueueLost:
        queue = self._queue
        return QueueLost(
            f"Redis at {where(queue.client)} lost queue {queue.keys.name!r}: {what}, though this "
            "worker saw it sealed (did Redis restart without persistence?); what was not done "
            "is gone: seed it again"
        )
