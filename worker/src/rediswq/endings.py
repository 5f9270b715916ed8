"""The end of an attempt that is not a plain success: its observers told, a failure settled
(retried, delayed or dead-lettered, deadletter.py), a result kept (results.py). A plain success,
with nothing to keep and nobody to tell, the worker's loop hands in without coming here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rediswq.attempts import Attempt, Observer
from rediswq.deadletter import DeadLetters, Settled
from rediswq.execution import Failure, Outcome
from rediswq.leases import LeaseKeeper, shown
from rediswq.logs import Log, enabled
from rediswq.queue import Lease, WorkQueue
from rediswq.retry import Backoff
from rediswq.summary import Summary

if TYPE_CHECKING:  # imported with --results only (results.py)
    from rediswq.results import ResultStore


class Endings:
    def __init__(
        self,
        queue: WorkQueue,
        summary: Summary,
        log: Log,
        *,
        backoff: Backoff,
        results: ResultStore | None,
        observers: tuple[Observer, ...],
    ) -> None:
        self.queue = queue
        self.summary = summary
        self.log = log
        self.backoff = backoff
        self.results = results
        self.observers = observers
        self.dead_letters = DeadLetters(queue)
        self.item_done_logged = enabled(log, "item-done")
        # Whether a success is only handed in: nothing logs it, nothing observes it. Then the
        # worker's loop hands in a success without a call here (worker.py).
        self.plain = not observers and not self.item_done_logged

    def ended(
        self, lease: Lease, item: str, outcome: Outcome, seconds: float, keeper: LeaseKeeper
    ) -> bool:
        """Tell of an attempt that ended, settle it if it failed, keep its result: whether it
        succeeded (then it is handed in)."""
        settled: Settled | None = None  # where a failed attempt's item went
        if outcome.failure is not None:
            keeper.drop([lease])
            settled = self._fail(lease, outcome.failure, seconds)
        for observer in self.observers:
            observer.attempted(Attempt(lease, outcome, seconds, settled))
        if settled is not None:
            return False
        if self.item_done_logged:
            self.log("item-done", f"Done {item} in {seconds:.3f}s", item=item,
                     attempt=lease.attempt, duration=round(seconds, 6))  # fmt: skip
        if outcome.result is not None and self.results is not None:
            self._keep(lease.item, outcome.result, self.results)
        return True

    def _keep(self, item: bytes, stored: bytes, results: ResultStore) -> None:
        from rediswq.results import NotKept  # noqa: PLC0415 - loaded already with a ResultStore

        if results.too_big(stored):
            why = f"{len(stored) - 1} bytes, more than {results.max_bytes}"
        else:
            try:
                results.keep(item, stored)
                return
            except NotKept as exc:
                # The item is done all the same: its lease is handed in. Ending the worker
                # instead would let the lease expire, the item run again (and fail to keep its
                # result again), until it is dead-lettered as expired: work redone, and the
                # queue stuck while Redis stays full. A result is worth less than the work.
                why = f"{exc}; the item is done all the same"
        self.summary.results_not_kept += 1
        self.log("result-not-kept", f"Result of {shown(item)} not kept: {why}", item=shown(item))

    def _fail(self, lease: Lease, failure: Failure, seconds: float) -> Settled:
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
        item = shown(lease.item)
        self.log(
            "failed", f"Failed on {item} (attempt {lease.attempt}; {where}): {failure.reason}",
            item=item, attempt=lease.attempt, duration=round(seconds, 6), error=failure.reason,
            settled=settled.name.lower(),
        )  # fmt: skip
        # Once per attempt, whole: the dead letter keeps only its end. Not for a Reject: the
        # handler meant it, and its reason says all (the dead letter still has where it came).
        if failure.traceback and not failure.permanent:
            self.log("traceback", failure.traceback, item=item, attempt=lease.attempt)
        if settled is Settled.DEAD_LETTERED:
            self.summary.dead_lettered += 1
        elif settled is Settled.NOT_HELD:  # expired and put back meanwhile, as at a completion
            self.summary.lost += 1
        return settled
