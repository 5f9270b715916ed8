"""Connecting to Redis: retries with backoff, a bounded wait at start, errors in plain words."""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import AbstractConnection
from redis.driver_info import DriverInfo
from redis.retry import Retry

from rediswq.clusters import slot_options
from rediswq.errors import ConfigError, QueueError
from rediswq.logs import Log
from rediswq.sentinels import Sentinels, found_through_sentinels, master_client
from rediswq.waits import REPORT_EVERY, Waiting

T = TypeVar("T")

_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=2.0)
# The longest pause between tries while waiting for Redis at start: every pod of a first deploy
# waits for Redis, and a pause of 1 s cost a median 0.44 s after Redis came up (docs/benchmarks.md);
# a refused connection or a PING is cheap for both sides.
_READY_POLL = 0.1


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
                self._report(event, f"Redis at {self.where} {state} ({_first_line(error)}); "
                             f"retrying for up to {self.budget:g}s")  # fmt: skip
            elif now >= self._next_report:
                self._next_report = now + REPORT_EVERY
                self._report(event, f"Redis at {self.where} still {state.removeprefix('is ')} "
                             f"after {now - self.since:.0f}s ({_first_line(error)})")  # fmt: skip
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
                f"{_first_line(error)} (unreachable for {now - self.since:.0f}s; "
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


def connect(
    url: str,
    password: str | None = None,
    *,
    timeout: float = 10.0,
    outage: float = 300.0,
    log: Log | None = None,
    pooled: bool = False,
    sentinels: Sentinels | None = None,
    slot: int | None = None,
) -> redis.Redis:
    """A client for `url` (redis:// or rediss://); `password` is used only if the URL has none.

    Calls that lose Redis retry for `outage` seconds, saying so through `log`. Unless `pooled`,
    it holds one connection, made at once (so Redis must answer by then). With `sentinels`, the
    server is the primary they name, asked again on every reconnection: the URL gives only the
    credentials, database and TLS options. With `slot`, the server is a Redis Cluster's node that
    holds that hash slot (clusters.py), the URL one of its nodes.
    """
    _check(url)
    clock = Outage(outage, log)
    try:
        options: dict[str, Any] = dict(
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry=OutageRetry(clock) if outage > 0 else Retry(NoBackoff(), 0),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            # What redis-py tells the server (CLIENT SETINFO) by default, but with the version it
            # was imported as: left to find it, it reads its installed metadata, 2-3 ms of the
            # worker's start here.
            driver_info=DriverInfo(lib_version=redis.__version__),
        )
        # One connection, no pool: a worker talks to Redis from one thread at a time (the
        # lease keeper waits on the client's lock), and the pool's checkout and return
        # measured 10-15 us of CPU per command here, a third of redis-py's whole share.
        if sentinels is not None:
            client = master_client(sentinels, url, password, single=not pooled, **options)
        else:
            if slot is not None:
                options.update(slot_options(url, password, slot, timeout))
            client = redis.Redis.from_url(
                url,
                password=password or None,  # the URL's own password, if any, wins
                single_connection_client=not pooled,
                **options,
            )
    except ValueError as exc:
        raise _malformed(url, str(exc)) from None
    clock.where = where(client)
    return client


def _check(url: str) -> None:
    """Raise a ConfigError unless redis-py will read `url` as it reads to a person."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise _malformed(url, str(exc)) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise _malformed(url, "expected redis://HOST:PORT/DB or rediss://")
    # `redis:/host:6379` (one slash) has no host, and its path is not a database either.
    if parts.scheme != "unix" and not parts.hostname:
        raise _malformed(url, "no host; expected redis://HOST:PORT/DB (two slashes)")
    # redis-py reads a database path that is not a number as database 0, without a word.
    if parts.scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
        raise _malformed(url, f"database {parts.path[1:]!r} is not a number")
    # A missing file would surface at the first connection as "No such file or directory",
    # reported as Redis being unreachable, and be retried: name it, once, as the setting it is.
    for option, values in parse_qs(parts.query).items():
        if option in _TLS_FILES and not Path(values[-1]).is_file():
            raise _malformed(url, f"{option}: no file {values[-1]} (a CA bundle not mounted?)")


# The URL options that name a file (redis-py passes them on to the ssl module).
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _malformed(url: str, reason: str) -> ConfigError:
    return ConfigError(f"malformed Redis URL {redacted(url)!r}: {reason}")


def redacted(url: str) -> str:
    """The URL without its password, fit for an error message or a log."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises, as `password` may, for a URL urlsplit cannot read
    except ValueError:  # then mask whatever stands between "user:" and "@"
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def wait_until_ready(
    url: str,
    password: str | None,
    timeout: float,
    log: Log | None = None,
    sentinels: Sentinels | None = None,
) -> None:
    """Wait up to `timeout` seconds for Redis to answer: pods start before the Redis pod and
    its DNS name are ready. With `log`, say so while waiting (at once, then every 30 s).

    redis-py retries a number of times, not for a time; an operator sets a time, so this loop
    is ours, on a probe client that does not retry by itself.
    """
    probe = connect(
        url,
        password,
        timeout=min(10.0, max(1.0, timeout)),
        outage=0,
        pooled=True,
        sentinels=sentinels,
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    waiting = Waiting(log) if log is not None else None
    in_url = credentials_in(url)
    try:
        while True:
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                error = describe(exc, where(probe), credentials=in_url)
                if isinstance(exc, redis.AuthenticationError):
                    raise error from None
                if time.monotonic() >= deadline:
                    raise type(error)(
                        f"{error} (gave up after {timeout:g}s: --redis-wait-timeout, "
                        "REDIS_WAIT_TIMEOUT)"
                    ) from None
                if waiting is not None:
                    waiting.waiting("redis", _waiting_for(where(probe), exc, timeout))
            except redis.RedisError as exc:
                raise describe(exc, where(probe), credentials=in_url) from None
            time.sleep(delay)
            delay = min(delay * 2, _READY_POLL)
    finally:
        probe.close()


def _waiting_for(at: str, error: Exception, timeout: float) -> Callable[[float], str]:
    def say(seconds: float) -> str:
        now = f" for {seconds:.0f}s now" if seconds else ""
        return (
            f"Waiting for Redis at {at} ({_first_line(error)}){now}; giving up after {timeout:g}s"
        )

    return say


def where(client: redis.Redis) -> str:
    if (through := found_through_sentinels(client)) is not None:
        return through
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def credentials_in(url: str) -> str:
    """Where the credentials used with `url` come from, as the user would fix them."""
    try:
        parts = urlsplit(url)
        in_url = parts.password is not None
    except ValueError:
        return "REDIS_PASSWORD"
    return "the user and password in the Redis URL" if in_url else "REDIS_PASSWORD"


def describe(exc: BaseException, at: str, *, credentials: str = "REDIS_PASSWORD") -> QueueError:
    """One line that names the problem, for any error redis-py raises talking to `at`."""
    text = _first_line(exc)
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return ConfigError(f"Redis at {at} rejected the credentials ({text}); check {credentials}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return QueueError(f"cannot reach Redis at {at}: {text}")
    if "WRONGTYPE" in text:
        return ConfigError(f"a queue key in Redis at {at} holds the wrong type: {text}")
    if "DB index is out of range" in text:  # SELECT, as the connection starts
        return ConfigError(f"Redis at {at} has no such database ({text}); check the Redis URL")
    return QueueError(f"Redis at {at} answered with an error: {text}")
