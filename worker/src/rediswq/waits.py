"""Saying why a worker waits: at once when it starts waiting for a reason, then every so often,
so `kubectl logs` of a pod that does nothing tells what it waits for."""

from __future__ import annotations

import time
from collections.abc import Callable

from rediswq.logs import Log
from rediswq.queue import State, WorkQueue
from rediswq.runs import for_run, sealed_run

# How often a waiting worker says it still waits (and why): often enough for someone looking at
# a quiet pod, rarely enough not to bury the log of a worker that waits for hours.
REPORT_EVERY = 30.0


class Waiting:
    """Logs the "waiting" event for one reason at a time: `reason` is the field a log pipeline
    groups by (redis, seal, run, leases); `say(seconds)` the message after waiting that long."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._every = REPORT_EVERY  # read here, not at import: tests shorten it
        self._reason: str | None = None
        self._since = self._next = 0.0

    def waiting(self, reason: str, say: Callable[[float], str]) -> None:
        now = time.monotonic()
        if reason != self._reason:
            self._reason, self._since, self._next = reason, now, now + self._every
            self._log("waiting", say(0.0), reason=reason, duration=0.0)
        elif now >= self._next:
            self._next = now + self._every
            waited = now - self._since
            self._log("waiting", say(waited), reason=reason, duration=round(waited, 3))

    def over(self) -> None:
        """The wait ended: a new one is said at once."""
        self._reason = None


def say_why(waiting: Waiting, queue: WorkQueue, state: State, seal_timeout: float) -> None:
    """Log why a worker that got `state` from its step waits; end the wait if it does not."""
    name = queue.keys.name
    if state is State.UNSEALED and not queue.run_id:
        waiting.waiting("seal", lambda s: (
            f"Waiting for queue {name!r} to be sealed by the seed{_after(s)}; giving up after "
            f"{seal_timeout:g}s (--no-seal if it is filled by hand)"))  # fmt: skip
    elif state in (State.UNSEALED, State.OTHER_RUN):
        # The step saw another seal, or none; this read may see the worker's own, put there
        # since: then the next step leases, and there is no wait to tell of. Read once, so the
        # line says the seal the decision to wait was made on.
        sealed = sealed_run(queue)
        if sealed == queue.run_id:
            return
        waiting.waiting("run", lambda s: (
            f"Waiting for queue {name!r} to be sealed{for_run(queue, sealed)}{_after(s)}; "
            f"giving up after {seal_timeout:g}s"))  # fmt: skip
    elif state is State.WAIT:
        waiting.waiting("leases", lambda s: (
            f"Nothing pending in queue {name!r}{_after(s)}: waiting for items other workers hold "
            "or that wait for a retry, which may come back"))  # fmt: skip
    else:
        waiting.over()


def _after(seconds: float) -> str:
    return f" (for {seconds:.0f}s now)" if seconds else ""
