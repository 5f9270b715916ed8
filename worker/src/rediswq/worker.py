"""The worker loop: lease, work, complete, until the sealed queue is drained."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from rediswq.deadletter import DeadLetters, Settled
from rediswq.errors import ConfigError, QueueError, signal_exit
from rediswq.events import QueueEvents
from rediswq.execution import Executor, Failure, InProcess, Outcome
from rediswq.handlers import Handler
from rediswq.leases import LeaseKeeper, shown
from rediswq.lostqueue import SealWatch
from rediswq.queue import Lease, State, WorkQueue
from rediswq.results import ResultStore, encoded
from rediswq.retry import Backoff
from rediswq.runs import check_run_ended, for_run

Log = Callable[[str], None]

NO_BACKOFF = Backoff(0, 0)

# How often a busy worker also reclaims expired leases; an idle one does on every poll.
_RECLAIM_EVERY = 0.5


_STDOUT_LOCK = threading.Lock()


def log_line(line: str) -> None:
    """One whole line at a time, flushed: the lease keeper's thread logs too, and the e2e tests
    read these lines back."""
    with _STDOUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class Shutdown(BaseException):
    """Raised inside the handler on SIGTERM/SIGINT; a BaseException so `except Exception` in
    user code does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Summary:
    done: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    lost: int = 0
    stopped_by: int | None = None  # the signal, if one stopped the worker

    def line(self) -> str:
        return (
            f"Done {counted(self.done, 'item')}; "
            f"{counted(self.failed_attempts, 'failed attempt')}, "
            f"{counted(self.dead_lettered, 'item')} dead-lettered, "
            f"{counted(self.lost, 'lost lease')}"
        )


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
        log: Log = log_line,
    ) -> None:
        """`executor` runs the handler (default: in this thread); `results` keeps its values."""
        if prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, got {prefetch}")
        self.queue = queue
        self.executor = executor or InProcess(handler, encoded if results else None)
        self.backoff = backoff
        self.results = results
        self.dead_letters = DeadLetters(queue)
        self.prefetch = prefetch
        self.seal_timeout = seal_timeout
        self.poll_interval = poll_interval
        self.log = log
        self.summary = Summary()
        self._in_handler = False

    def run(self) -> Summary:
        """Work until the queue is drained (or a signal stops it); log the tutorial's lines."""
        queue = self.queue
        self.log(f"Worker with sessionID: {queue.session}")
        if queue.run_id:
            self.log(f"Worker of run {queue.run_id}")
        queue.check_types()
        self.log(f"Initial queue state: empty={queue.is_empty()}")
        done: list[Lease] = []
        waiting_for_seal_since: float | None = None
        sealed_for_run = False  # a run's worker that saw its seal go is superseded, not early
        next_reclaim = 0.0
        watch = SealWatch(queue)
        with (
            LeaseKeeper(queue, self.log) as keeper,
            QueueEvents(queue, self.log) as events,
            self._signals(),
        ):
            while self.summary.stopped_by is None:
                now = time.monotonic()
                keeper.drop(done)  # before they are handed in: a renewal would find them gone
                step = queue.step(self.prefetch, done, reclaim=now >= next_reclaim)
                if now >= next_reclaim:
                    next_reclaim = now + _RECLAIM_EVERY
                self._count_completed(done, step.completed)
                watch.check(step)
                done = []
                if step.leases:
                    waiting_for_seal_since = None
                    sealed_for_run = True
                    keeper.hold(step.leases)
                    done = self._work(step.leases, keeper)
                    continue
                if step.state is State.DRAINED:
                    break
                if step.state is State.OTHER_RUN and sealed_for_run:
                    check_run_ended(queue)  # raises Superseded if its items were moved aside
                    break
                if step.state in (State.UNSEALED, State.OTHER_RUN):
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
                next_reclaim = 0.0
                events.wait(self.poll_interval)
            if done:  # finished before a signal arrived: hand them in
                self._count_completed(done, queue.complete(*done))
        self.executor.close()
        self.log(self.summary.line())
        if self.summary.stopped_by is None:
            self.log("Queue empty, exiting")
        else:
            self.log(f"Stopped by {signal.Signals(self.summary.stopped_by).name}, exiting")
        return self.summary

    def _work(self, leases: list[Lease], keeper: LeaseKeeper) -> list[Lease]:
        """Run the handler on each lease; return those that succeeded, to hand in next step."""
        succeeded = []
        for index, lease in enumerate(leases):
            if self.summary.stopped_by is not None:
                self._release_unstarted(leases[index:], keeper)
                break
            self.log(f"Working on {shown(lease.item)}")
            try:
                outcome = self._attempt(lease.item)
            except Shutdown:
                self._release_unstarted(leases[index:], keeper)
                break
            if outcome.failure is not None:
                keeper.drop([lease])
                self._fail(lease, outcome.failure)
                continue
            if outcome.result is not None and self.results is not None:
                self._keep(lease.item, outcome.result, self.results)
            succeeded.append(lease)
        return succeeded

    def _attempt(self, item: bytes) -> Outcome:
        self._in_handler = True
        try:
            # A signal that came just before the flag was set would not interrupt the handler.
            if self.summary.stopped_by is not None:
                raise Shutdown(self.summary.stopped_by)
            return self.executor.run(item)
        finally:
            self._in_handler = False

    def _keep(self, item: bytes, stored: bytes, results: ResultStore) -> None:
        if results.too_big(stored):
            self.log(
                f"Result of {shown(item)} not kept: {len(stored) - 1} bytes, more than "
                f"{results.max_bytes}"
            )
        else:
            results.keep(item, stored)

    def _fail(self, lease: Lease, failure: Failure) -> None:
        self.summary.failed_attempts += 1
        delay = self.backoff.delay(lease.attempt)
        settled = self.dead_letters.settle(lease, failure, delay)
        where = {
            Settled.REQUEUED: "will be retried",
            Settled.DELAYED: f"retry in {delay:.1f}s",
            Settled.DEAD_LETTERED: f"moved to {self.queue.keys.failed}",
            Settled.NOT_HELD: "lease already lost",
        }[settled]
        if failure.permanent and settled is Settled.DEAD_LETTERED:
            where = f"rejected, {where}"
        self.log(
            f"Failed on {shown(lease.item)} (attempt {lease.attempt}; {where}): {failure.reason}"
        )
        if failure.traceback:  # once per attempt, whole: the dead letter keeps only its end
            self.log(failure.traceback)
        if settled is Settled.DEAD_LETTERED:
            self.summary.dead_lettered += 1
        elif settled is Settled.NOT_HELD:  # expired and put back meanwhile, as at a completion
            self.summary.lost += 1

    def _release_unstarted(self, leases: list[Lease], keeper: LeaseKeeper) -> None:
        keeper.drop(leases)
        self.queue.release(*leases, failed=False)
        names = ", ".join(shown(lease.item) for lease in leases)
        self.log(f"Released {len(leases)} item(s) back to the queue: {names}")

    def _count_completed(self, leases: list[Lease], completed: list[bool]) -> None:
        for lease, ok in zip(leases, completed, strict=True):
            if ok:
                self.summary.done += 1
            else:
                self.summary.lost += 1
                self.log(
                    f"Lease on {shown(lease.item)} had expired before completion; "
                    "another worker may have repeated it"
                )

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT: stop leasing; interrupt a running handler so its item goes back now."""

        # No logging here: a print interrupted by a print raises a reentrancy error.
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.summary.stopped_by = signum
            if self._in_handler:
                raise Shutdown(signum)

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def exit_code(summary: Summary) -> int:
    return 0 if summary.stopped_by is None else signal_exit(summary.stopped_by)
