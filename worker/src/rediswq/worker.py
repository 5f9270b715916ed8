"""The worker loop: lease, work, complete, until the sealed queue is drained."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from rediswq import stops
from rediswq.attempts import Observer
from rediswq.endings import Endings
from rediswq.errors import ConfigError, QueueError, Stopped, signal_exit
from rediswq.events import Heard, QueueEvents
from rediswq.execution import DONE, Executor, InProcess
from rediswq.handlers import Handler
from rediswq.leases import LeaseKeeper, shown
from rediswq.logs import Lines, Log
from rediswq.lostqueue import SealWatch
from rediswq.queue import Lease, State, WorkQueue
from rediswq.retry import Backoff
from rediswq.runs import check_run_ended, for_run
from rediswq.stops import Shutdown, stop_signals
from rediswq.summary import Summary
from rediswq.waits import Waiting, say_why

if TYPE_CHECKING:  # imported with --results only (results.py)
    from rediswq.results import ResultStore

NO_BACKOFF = Backoff(0, 0)

# How often a busy worker also reclaims expired leases; an idle one does on every poll.
_RECLAIM_EVERY = 0.5


class Worker:
    def __init__(
        self,
        queue: WorkQueue,
        handler: Handler,
        *,
        prefetch: int = 1,
        seal_timeout: float = 600.0,
        poll_interval: float = 0.25,
        backoff: Backoff = NO_BACKOFF,
        results: ResultStore | None = None,
        executor: Executor | None = None,
        log: Log | None = None,
        observers: tuple[Observer, ...] = (),
    ) -> None:
        """`executor` runs the handler (default: in this thread); `results` keeps its values;
        `observers` hear of each attempt (metrics.py)."""
        if prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, got {prefetch}")
        self.queue = queue
        if executor is None:
            executor = InProcess(handler, results.encode if results else None)
        self.executor = executor
        self.prefetch = prefetch
        self.seal_timeout = seal_timeout
        self.poll_interval = poll_interval
        self.log: Log = log if log is not None else Lines()
        self.summary = Summary()
        self._endings = Endings(
            queue, self.summary, self.log, backoff=backoff, results=results, observers=observers
        )
        self._interruptible = False  # in the handler or in a wait for work: a stop raises there
        self._keeper: LeaseKeeper | None = None
        # The line per item, printed the cheap way where its fields are not (logs.py).
        self._say_working = self.log.printer("working") if isinstance(self.log, Lines) else None

    def in_flight(self) -> int:
        """How many leases this worker holds (a gauge reads it when scraped)."""
        return 0 if self._keeper is None else self._keeper.holding()

    def run(self) -> Summary:
        """Work until the queue is drained (or a signal stops it); log the tutorial's lines."""
        started = time.monotonic()
        sealed = self._greet()
        try:
            # The signals outermost: the renewing thread's join and the subscription's close
            # come under the stop's deadline too.
            with (
                stop_signals(self._stopping),
                LeaseKeeper(self.queue, self.log) as keeper,
                QueueEvents(self.queue, self.log) as events,
            ):
                self._keeper = keeper
                self._loop(keeper, events, sealed)
                self.queue.end_session()
        except Stopped:
            self.log("redis-unreachable", f"Redis did not answer within {stops.STOP_SECONDS:g}s of "
                     "the stop; the items this worker holds come back when their leases "
                     "expire")  # fmt: skip
        self._keeper = None
        self.executor.close()
        return self._finish(started)

    def _loop(self, keeper: LeaseKeeper, events: QueueEvents, sealed: bool) -> None:
        """`sealed`: the queue was sealed as the worker started (_greet)."""
        queue = self.queue
        done: list[Lease] = []
        waiting_for_seal_since: float | None = None
        sealed_for_run = False  # a run's worker that saw its seal go is superseded, not early
        next_reclaim = 0.0
        watch = SealWatch(queue, sealed=sealed)
        waiting = Waiting(self.log)
        while self.summary.stopped_by is None:
            now = time.monotonic()
            keeper.drop(done)  # before they are handed in: a renewal would find them gone
            step = queue.step(self.prefetch, done, reclaim=now >= next_reclaim)
            state, leases, completed = step  # once: a field of a NamedTuple is a slow lookup
            if now >= next_reclaim:
                next_reclaim = now + _RECLAIM_EVERY
            self._count_completed(done, completed)
            watch.check(step)
            done = []
            if leases:
                waiting_for_seal_since = None
                sealed_for_run = True
                waiting.over()
                keeper.hold(leases)
                done = self._work(leases, keeper)
                continue
            if state is State.DRAINED:
                break
            if state is State.OTHER_RUN and sealed_for_run:
                check_run_ended(queue)  # raises Superseded if its items were moved aside
                break
            if state in (State.UNSEALED, State.OTHER_RUN):
                waiting_for_seal_since = waiting_for_seal_since or time.monotonic()
                if time.monotonic() - waiting_for_seal_since > self.seal_timeout:
                    raise QueueError(
                        f"queue {queue.keys.name!r} was not sealed{for_run(queue)} within "
                        f"{self.seal_timeout:g}s;"
                        " did the seed run? (use --no-seal to fill by hand)"
                    )
            else:
                waiting_for_seal_since = None
                sealed_for_run = True
            say_why(waiting, queue, state, self.seal_timeout)
            next_reclaim = 0.0
            if self._wait(events) is Heard.SEALED:
                watch.saw_seal()  # so the step it woke for need not ask (lostqueue.py)
        if done:  # finished before a signal arrived: hand them in
            keeper.drop(done)  # first, as in the loop: a renewal would find them gone
            self._count_completed(done, queue.complete(*done))

    def _wait(self, events: QueueEvents) -> Heard:
        """Wait for work as `events` has it; a stop (the loop's condition) ends the wait at once,
        not when the pause is over."""
        pause = events.pause(self.poll_interval)  # before the flag: it asks on the queue's
        # connection, which an exception must not leave halfway through a reply
        self._interruptible = True
        try:
            if self.summary.stopped_by is not None:  # a signal just before the flag
                return Heard.NOTHING
            return events.wait(pause)
        except Shutdown:
            return Heard.NOTHING
        finally:
            self._interruptible = False

    def _greet(self) -> bool:
        """Log the start; whether the queue is sealed."""
        queue = self.queue
        self.log("started", f"Worker with sessionID: {queue.session}")
        if queue.run_id:
            self.log("run", f"Worker of run {queue.run_id}")
        # The seal, read with the types: a worker that finds its queue sealed need not ask
        # again once it is handed items (lostqueue.py), one round trip before its first item.
        sealed, empty = queue.checked()
        self.log("queue-state", f"Initial queue state: empty={empty}", empty=empty)
        return sealed

    def _finish(self, started: float) -> Summary:
        summary = self.summary
        self.log(
            "summary", summary.line(), done=summary.done, failed=summary.failed_attempts,
            dead_lettered=summary.dead_lettered, lost=summary.lost,
            results_not_kept=summary.results_not_kept,
            duration=round(time.monotonic() - started, 3),
        )  # fmt: skip
        if summary.stopped_by is None:
            self.log("exiting", "Queue empty, exiting")
        else:
            name = signal.Signals(summary.stopped_by).name
            self.log("exiting", f"Stopped by {name}, exiting", signal=name)
        return summary

    def _work(self, leases: list[Lease], keeper: LeaseKeeper) -> list[Lease]:
        """Run the handler on each lease; return those that succeeded, to hand in next step."""
        succeeded = []
        summary = self.summary
        say_working = self._say_working
        plain = self._endings.plain
        run = self.executor.run
        clock = time.perf_counter  # looked up once a batch, not twice an item
        ended = self._endings.ended
        for index, lease in enumerate(leases):
            if summary.stopped_by is not None:
                self._release_unstarted(leases[index:], keeper)
                break
            raw = lease.item  # read once: a NamedTuple's field is looked up by its descriptor
            item = raw.decode("utf-8", "backslashreplace")  # shown(), without a call an item
            if say_working is None:
                self.log("working", f"Working on {item}", item=item, attempt=lease.attempt)
            else:
                say_working(f"Working on {item}")
            start = clock()
            # The handler's call, here in the loop rather than in a method of its own: a Python
            # call less an item (see InProcess.run).
            self._interruptible = True
            try:
                # A signal that came just before the flag was set would not interrupt the handler.
                if summary.stopped_by is not None:
                    raise Shutdown(summary.stopped_by)
                outcome = run(raw)
            except Shutdown:
                self._interruptible = False  # now, not in `finally`: a second signal must not
                # raise Shutdown into the release of what this worker holds
                self._release_unstarted(leases[index:], keeper)
                break
            finally:
                self._interruptible = False
            # A success with nothing to keep and nobody to tell (the default): handed in next step.
            if (outcome is DONE and plain) or ended(lease, item, outcome, clock() - start, keeper):
                succeeded.append(lease)
        return succeeded

    def _release_unstarted(self, leases: list[Lease], keeper: LeaseKeeper) -> None:
        keeper.drop(leases)
        self.queue.release(*leases, failed=False)
        names = ", ".join(shown(lease.item) for lease in leases)
        self.log("released", f"Released {len(leases)} item(s) back to the queue: {names}",
                 count=len(leases))  # fmt: skip

    def _count_completed(self, leases: list[Lease], completed: list[bool]) -> None:
        lost = completed.count(False)
        if lost or len(leases) != len(completed):  # nearly never: each flag says its lease
            for lease, ok in zip(leases, completed, strict=True):
                if not ok:
                    self.log(
                        "lease-expired",
                        f"Lease on {shown(lease.item)} had expired before completion; "
                        "another worker may have repeated it",
                        item=shown(lease.item), attempt=lease.attempt,
                    )  # fmt: skip
        summary = self.summary
        summary.done += len(completed) - lost
        summary.lost += lost
        if leases:
            for observer in self._endings.observers:  # who hears of attempts hears of hand-ins
                observer.handed_in(len(leases) - lost, lost)

    def _stopping(self, signum: int) -> bool:
        """A stop signal came (stops.py): stop leasing; raise Shutdown where the worker is now?"""
        self.summary.stopped_by = signum
        return self._interruptible


def exit_code(summary: Summary) -> int:
    return 0 if summary.stopped_by is None else signal_exit(summary.stopped_by)
