"""Connecting to Redis: retries with backoff, a bounded wait at start, errors in plain words."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from rediswq.errors import ConfigError, QueueError

T = TypeVar("T")

# Long enough to ride out a Redis restart (a pod restart, an AOF reload) mid-run.
_RETRIES = 12
_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=2.0)


class TransientRetry(Retry):
    """redis-py's Retry, less AuthenticationError: it subclasses ConnectionError, so the stock
    Retry tries a wrong password again and again (nested, for minutes); it never heals."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def transient(error: Exception) -> bool:
            if isinstance(error, redis.AuthenticationError):
                return False
            return is_retryable is None or is_retryable(error)

        return super().call_with_retry(do, fail, transient, with_failure_count)


def connect(
    url: str,
    password: str | None = None,
    *,
    timeout: float = 10.0,
    retries: int = _RETRIES,
    pooled: bool = False,
) -> redis.Redis:
    """A client for `url` (redis:// or rediss://); `password` is used only if the URL has none.

    Unless `pooled`, it holds one connection, made at once (so Redis must answer by then).
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"malformed Redis URL {redacted(url)!r}: expected redis://HOST:PORT/DB or rediss://"
        )
    try:
        return redis.Redis.from_url(
            url,
            password=password or None,  # the URL's own password, if any, wins
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            # One connection, no pool: a worker talks to Redis from one thread at a time (the
            # lease keeper waits on the client's lock), and the pool's checkout and return
            # measured 10-15 us of CPU per command here, a third of redis-py's whole share.
            single_connection_client=not pooled,
            retry=TransientRetry(_BACKOFF, retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as exc:
        raise ConfigError(f"malformed Redis URL {redacted(url)!r}: {exc}") from None


def redacted(url: str) -> str:
    """The URL without its password, fit for an error message or a log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def wait_until_ready(url: str, password: str | None, timeout: float) -> None:
    """Wait up to `timeout` seconds for Redis to answer: pods start before the Redis pod and
    its DNS name are ready.

    redis-py retries a number of times, not for a time; an operator sets a time, so this loop
    is ours, on a probe client that does not retry by itself.
    """
    probe = connect(url, password, timeout=min(10.0, max(1.0, timeout)), retries=0, pooled=True)
    deadline = time.monotonic() + timeout
    delay = 0.05
    try:
        while True:
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if isinstance(exc, redis.AuthenticationError) or time.monotonic() >= deadline:
                    raise describe(exc, where(probe)) from None
            except redis.RedisError as exc:
                raise describe(exc, where(probe)) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    finally:
        probe.close()


def where(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def describe(exc: BaseException, at: str) -> QueueError:
    """One line that names the problem, for any error redis-py raises talking to `at`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return ConfigError(f"Redis at {at} rejected the credentials ({text}); check REDIS_PASSWORD")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return QueueError(f"cannot reach Redis at {at}: {text}")
    if "WRONGTYPE" in text:
        return ConfigError(f"a queue key in Redis at {at} holds the wrong type: {text}")
    return QueueError(f"Redis at {at} answered with an error: {text}")
