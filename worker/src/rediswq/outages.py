"""An outage of Redis as a client lives through it: its calls retried for a time (the operator's
budget, --redis-outage-timeout), said as it begins, every 30 s while it lasts, and as it ends."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from rediswq.errors import QueueError, first_line
from rediswq.logs import Log
from rediswq.waits import REPORT_EVERY

T = TypeVar("T")

_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=2.0)


class Unreachable(redis.ConnectionError):
    """Redis stayed unreachable for the whole outage budget."""


class NoReplicas(QueueError):
    """Redis refused writes for the whole outage budget: too few replicas in sync."""


def refused_for_replicas(error: Exception) -> bool:
    """Whether `error` is Redis refusing a write because too few replicas are in sync
    (`min-replicas-to-write`): it refuses before running the command, a script included (ours
    all say whether they write, in their #!lua line), so nothing was written and the same call
    may be sent again. redis-py has no class of its own for it; in a pipeline it wraps it."""
    return isinstance(error, redis.ResponseError) and (
        str(error).startswith("NOREPLICAS ") or " caused error: NOREPLICAS " in str(error)
    )


@dataclass
class Outage:
    """The clock of a client's current outage, shared by all its connections (the socket, the
    pub/sub one): the budget runs from the first failure until any call gets through again."""

    budget: float
    log: Log | None = None
    where: str = "?"
    since: float | None = None
    _next_report: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, error: Exception, backoff: float) -> float:
        """Seconds to wait before the next try; raises Unreachable (NoReplicas for a write
        refused for want of replicas) once the budget is spent."""
        refused = refused_for_replicas(error)
        event = "redis-no-replicas" if refused else "redis-unreachable"
        state = "refuses writes until its replicas are in sync" if refused else "is unreachable"
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since, self._next_report = now, now + REPORT_EVERY
                self._report(event, f"Redis at {self.where} {state} ({first_line(error)}); "
                             f"retrying for up to {self.budget:g}s")  # fmt: skip
            elif now >= self._next_report:
                self._next_report = now + REPORT_EVERY
                self._report(event, f"Redis at {self.where} still {state.removeprefix('is ')} "
                             f"after {now - self.since:.0f}s ({first_line(error)})")  # fmt: skip
            left = self.since + self.budget - now
        if left <= 0 and refused:
            raise NoReplicas(
                f"Redis at {self.where} refused writes for {now - self.since:.0f}s: too few of "
                "its replicas are in sync (NOREPLICAS; its min-replicas-to-write); nothing was "
                f"written (--redis-outage-timeout is {self.budget:g}s): run the command again "
                "once the replicas are back"
            ) from None
        if left <= 0:
            raise Unreachable(
                f"{first_line(error)} (unreachable for {now - self.since:.0f}s; "
                f"--redis-outage-timeout is {self.budget:g}s)"
            ) from error
        return min(backoff, left)

    def ended(self) -> None:
        with self._lock:
            if self.since is not None:
                self._report(
                    "redis-reconnected",
                    f"Reconnected to Redis at {self.where} after "
                    f"{time.monotonic() - self.since:.1f}s",
                )
                self.since = None

    def _report(self, event: str, line: str) -> None:
        if self.log is not None:
            self.log(event, line)


class OutageRetry(Retry):
    """redis-py's Retry for a time, not a number of tries: an operator knows how long a Redis
    restart (an AOF replay, a Pod rescheduled) may take, not how many tries that makes.

    Also never retries an AuthenticationError: it subclasses ConnectionError, and a wrong
    password never heals. And retries a write refused for want of replicas in sync (NOREPLICAS,
    `min-replicas-to-write`) as an outage: a primary whose replicas reconnect after a restart or
    a failover refuses writes for a few seconds, and nothing was written.

    It overrides `call_with_retry` and reads `_supported_errors`, which redis-py does not
    document: a redis-py that changed either is refused when the client is made, in one line
    (`unsupported_retry`), rather than misbehaving in the middle of an outage.
    """

    def __init__(self, outage: Outage) -> None:
        if (why := unsupported_retry()) is not None:
            raise QueueError(
                f"redis-py {redis.__version__} is not supported: {why} "
                "(the retry of --redis-outage-timeout builds on it)"
            )
        super().__init__(_BACKOFF, -1)
        self.outage = outage
        self._depth = 0  # a command's retry wraps the reconnect's: only the outer call ends it

    def exchange(self, connection: AbstractConnection, packed: bytes) -> Any:
        """The reply to the `packed` command sent on `connection`: call_with_retry of sending it
        and reading the reply, with a disconnect after a failure. scripts.py's direct path makes
        this call once a queue step, so its first try runs here, without the two closures and the
        frame a call_with_retry takes: they cost 3,000 of a no-op item's 109,000 worker
        instructions at prefetch 1 (callgrind). A first try that failed is call_with_retry's first
        try's failure, raised there again, so what is retried, and how, is decided in one place;
        a first try that got through ends an outage, as call_with_retry's outer call does.
        """
        if self._depth or self.outage.since is not None:  # within a retry, or in an outage
            return self._exchanged(connection, packed, None)
        self._depth = 1  # as in call_with_retry: a reconnect's retry must not end an outage
        try:
            connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
            reply = connection.read_response()
        except Exception as error:  # raised again in call_with_retry, by _exchanged
            failure = error
        else:
            # An outage may have begun within the try, in the retry of a reconnect or of the
            # health check that redis-py sends first on a connection idle for 30 s.
            if self.outage.since is not None:
                self.outage.ended()
            return reply
        finally:
            self._depth = 0
        return self._exchanged(connection, packed, failure)

    def _exchanged(
        self, connection: AbstractConnection, packed: bytes, failure: Exception | None
    ) -> Any:
        """exchange() by call_with_retry, whose first try raises `failure` if there is one."""

        def attempt() -> Any:
            nonlocal failure
            if failure is not None:
                error, failure = failure, None
                raise error
            connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
            return connection.read_response()

        return self.call_with_retry(attempt, lambda _: connection.disconnect())  # type: ignore[no-untyped-call]

    def __deepcopy__(self, memo: dict[int, Any]) -> OutageRetry:
        # redis-py gives each connection a deep copy; the copies must share one outage clock.
        clone = OutageRetry(self.outage)
        clone._supported_errors = self._supported_errors
        return clone

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = 0
        self._depth += 1
        try:
            while True:
                try:
                    result = do()
                except self._supported_errors as error:
                    if isinstance(error, redis.AuthenticationError | Unreachable) or (
                        is_retryable is not None and not is_retryable(error)
                    ):
                        raise
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    time.sleep(self.outage.failed(error, _BACKOFF.compute(failures)))
                except redis.ResponseError as error:
                    if not refused_for_replicas(error):
                        raise
                    failures += 1  # the connection is fine: kept, and no `fail`
                    time.sleep(self.outage.failed(error, _BACKOFF.compute(failures)))
                else:
                    if self._depth == 1 and self.outage.since is not None:
                        self.outage.ended()
                    return result
        finally:
            self._depth -= 1


@cache
def unsupported_retry() -> str | None:
    """Why OutageRetry can not stand in for this redis-py's Retry; None if it can."""
    ours = inspect.signature(OutageRetry.call_with_retry).parameters
    theirs = inspect.signature(Retry.call_with_retry).parameters
    if unknown := [name for name in theirs if name not in ours]:
        return f"its Retry.call_with_retry takes {', '.join(unknown)}"
    probe = Retry(NoBackoff(), 0)
    probe.update_supported_errors([Unreachable])
    errors = getattr(probe, "_supported_errors", None)
    if not isinstance(errors, tuple) or Unreachable not in errors:
        return "its Retry keeps the errors it retries on elsewhere than in _supported_errors"
    return None
